"""The bootstrap superuser of a data directory that is not running: read from the heap of
``pg_authid`` (``global/1260``), the way the server lays it out, without starting anything.

A restored physical backup keeps its roles; connecting to it needs the name of one of them,
and only the bootstrap superuser (OID 10) always exists. pgproof's own backups record it in
the manifest; a backup another tool made does not, so it is read here. Since PostgreSQL 12
``oid`` is the first column of ``pg_authid`` and ``rolname`` (a 64-byte ``name``) the second.
Pure functions over bytes; several names come back when the row was updated (old versions
stay in the heap until vacuumed), the newest version first when that can be told.
"""

from __future__ import annotations

import struct

BLOCK_SIZE = 8192
BOOTSTRAP_SUPERUSER_OID = 10
NAMEDATALEN = 64
_LP_NORMAL = 1
_HEAP_XMAX_INVALID = 0x0800  # t_infomask: the tuple was not deleted or updated
_TUPLE_HEADER = struct.Struct("<IIIIHHHB")  # xmin, xmax, cid, ctid(6), infomask2, infomask, hoff


def bootstrap_superusers(heap: bytes, block_size: int = BLOCK_SIZE) -> list[str]:
    """Names of the OID-10 rows in a ``pg_authid`` heap file: live versions (xmax unset)
    first, then the others, each name once."""
    live: list[str] = []
    dead: list[str] = []
    for start in range(0, len(heap) - block_size + 1, block_size):
        for name, is_live in _rows(heap[start : start + block_size]):
            (live if is_live else dead).append(name)
    return list(dict.fromkeys(live + dead))  # each name once, in that order


def _rows(page: bytes) -> list[tuple[str, bool]]:
    lower = struct.unpack_from("<H", page, 12)[0]
    if lower < 24 or lower > len(page):
        return []  # an empty or never-initialized page
    out = []
    for item in range(24, lower, 4):
        (word,) = struct.unpack_from("<I", page, item)
        offset, flags, length = word & 0x7FFF, (word >> 15) & 0x3, word >> 17
        if flags != _LP_NORMAL or offset + length > len(page) or length < 23:
            continue
        _xmin, xmax, _cid, _ctid_block, _ctid_pos, _mask2, mask, hoff = _TUPLE_HEADER.unpack_from(
            page, offset
        )
        data = offset + hoff
        if hoff < 23 or data + 4 + NAMEDATALEN > offset + length:
            continue
        (oid,) = struct.unpack_from("<I", page, data)
        if oid != BOOTSTRAP_SUPERUSER_OID:
            continue
        raw = page[data + 4 : data + 4 + NAMEDATALEN].split(b"\0", 1)[0]
        out.append((raw.decode("utf-8", "replace"), xmax == 0 or bool(mask & _HEAP_XMAX_INVALID)))
    return out
