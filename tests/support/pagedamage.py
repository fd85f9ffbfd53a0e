"""Damage to PostgreSQL data files, byte by byte, for tests that must see it named: a heap
tuple header claiming more attributes than its table has (bits flipped in t_infomask2;
verify_heapam reports it, frozen or not), and a btree leaf item's key made larger than the
next one (bt_index_check's order invariant)."""

from __future__ import annotations

import struct
from pathlib import Path

PAGE = 8192
LP_NORMAL = 1


def _items(page: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each normal line pointer."""
    lower = struct.unpack_from("<H", page, 12)[0]
    found = []
    for at in range(24, lower, 4):
        word = struct.unpack_from("<I", page, at)[0]
        off, flags, length = word & 0x7FFF, (word >> 15) & 0x3, word >> 17
        if flags == LP_NORMAL and length:
            found.append((off, length))
    return found


def break_heap_tuple(path: Path, block: int = 0) -> None:
    """The first tuple of ``block`` claims 2,000 attributes (t_infomask2 is at byte 18 of a
    heap tuple header: xmin, xmax, cid, ctid come first)."""
    data = bytearray(path.read_bytes())
    page = block * PAGE
    off, _ = _items(bytes(data[page : page + PAGE]))[0]
    infomask2 = struct.unpack_from("<H", data, page + off + 18)[0]
    struct.pack_into("<H", data, page + off + 18, (infomask2 & ~0x07FF) | 2000)
    path.write_bytes(bytes(data))


def break_btree_order(path: Path, block: int = 1) -> None:
    """On a leaf page of an int4 btree, the second item's key becomes the largest int."""
    data = bytearray(path.read_bytes())
    page = block * PAGE
    items = _items(bytes(data[page : page + PAGE]))
    off, _ = items[1]
    struct.pack_into("<i", data, page + off + 8, 2**31 - 1)  # IndexTupleData is 8 bytes
    path.write_bytes(bytes(data))


def break_tuple_data(path: Path, block: int = 0, skip: int = 16, length: int = 32) -> None:
    """Bytes inside the first tuple's data (past its header and ``skip`` bytes) inverted:
    inside a compressed value, only decompressing it can tell."""
    data = bytearray(path.read_bytes())
    page = block * PAGE
    off, size = _items(bytes(data[page : page + PAGE]))[0]
    start = page + off + data[page + off + 22] + skip  # t_hoff: where the data begins
    for i in range(start, min(start + length, page + off + size)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
