"""The bootstrap superuser read from a pg_authid heap page, without a server."""

from __future__ import annotations

import struct

from pgproof.verifier import authid


def tuple_bytes(oid: int, name: str, xmax: int = 0, infomask: int = 0) -> bytes:
    hoff = 24  # header (23 bytes) padded to MAXALIGN
    header = struct.pack("<IIIIHHHB", 100, xmax, 0, 0, 1, 33, infomask, hoff) + b"\0"
    return header + struct.pack("<I", oid) + name.encode().ljust(64, b"\0") + b"\0" * 40


def page(*tuples: bytes, unused_slots: int = 0) -> bytes:
    body = bytearray(authid.BLOCK_SIZE)
    upper = authid.BLOCK_SIZE
    items = []
    for t in tuples:
        upper -= len(t)
        body[upper : upper + len(t)] = t
        items.append(upper | (1 << 15) | (len(t) << 17))
    items += [0] * unused_slots  # LP_UNUSED
    lower = 24 + 4 * len(items)
    struct.pack_into("<QHHHHHHI", body, 0, 0, 0, 0, lower, upper, authid.BLOCK_SIZE, 0x2004, 0)
    for i, word in enumerate(items):
        struct.pack_into("<I", body, 24 + 4 * i, word)
    return bytes(body)


def test_the_oid_10_row_names_the_bootstrap_superuser() -> None:
    heap = page(tuple_bytes(3373, "pg_monitor"), tuple_bytes(10, "admin"), unused_slots=2)
    assert authid.bootstrap_superusers(heap) == ["admin"]


def test_a_renamed_superuser_lists_the_live_version_first() -> None:
    renamed = page(
        tuple_bytes(10, "postgres", xmax=731),  # the old version, updated by xid 731
        tuple_bytes(10, "dba"),
    )
    assert authid.bootstrap_superusers(renamed) == ["dba", "postgres"]
    # xmax set but marked invalid (the updating transaction aborted): still live
    aborted = page(tuple_bytes(10, "postgres", xmax=731, infomask=0x0800))
    assert authid.bootstrap_superusers(aborted) == ["postgres"]


def test_empty_short_or_garbage_pages_name_nobody() -> None:
    assert authid.bootstrap_superusers(b"") == []
    assert authid.bootstrap_superusers(bytes(authid.BLOCK_SIZE)) == []
    assert authid.bootstrap_superusers(b"\xff" * authid.BLOCK_SIZE) == []
    two = page(tuple_bytes(10, "a")) + page(tuple_bytes(10, "b"))
    assert authid.bootstrap_superusers(two) == ["a", "b"]
