"""Rules for one stored WAL copy, and the memory of verified copies, without a server."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from pgproof.backups import compression, walnames, walverify
from pgproof.backups.storage.base import ObjectInfo
from pgproof.backups.storage.filesystem import FilesystemRepository

SEG = 16 * 1024 * 1024
SYSID = 7_300_000_000_000_000_001
NAME = "000000020000000100000003"


def segment(tli: int, address: int, sysid: int = SYSID, size: int = SEG) -> bytes:
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER), tli, pageaddr, rem_len, pad,
    # sysid, seg_size, blcksz
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, address, 0, sysid, size, 8192)
    return header + bytes(8192 - len(header))


ADDRESS = walnames.parse_segment_name(NAME, SEG)[1] * SEG


def problem(
    data: bytes, name: str = NAME + ".zst", meta: dict[str, str] | None = None
) -> str | None:
    stored = compression.zstd_compress_bytes(data) if name.endswith(".zst") else data
    meta = meta if meta is not None else {"sha256": hashlib.sha256(stored).hexdigest()}
    return walverify.copy_problem(name, stored, meta, SEG, frozenset({SYSID}))


def test_an_intact_copy_has_no_problem() -> None:
    assert problem(segment(2, ADDRESS)) is None
    assert problem(segment(2, ADDRESS), name=NAME) is None
    # the first segment of timeline 2 starts as timeline 1's copy
    assert problem(segment(1, ADDRESS)) is None


def test_each_kind_of_bad_copy_is_named() -> None:
    assert "another cluster" in (problem(segment(2, ADDRESS, sysid=42)) or "")
    assert "timeline 3" in (problem(segment(3, ADDRESS)) or "")
    assert "another name" in (problem(segment(2, ADDRESS + SEG)) or "")
    assert "segment size" in (problem(segment(2, ADDRESS, size=SEG * 4)) or "")
    assert "not a WAL segment" in (problem(b"\0" * 100, name=NAME) or "")
    assert "corrupted" in (problem(segment(2, ADDRESS), meta={"sha256": "0" * 64}) or "")
    garbage = walverify.copy_problem(NAME + ".zst", b"not zstd", {}, SEG, frozenset({SYSID}))
    assert garbage is not None and "decompress" in garbage


def test_verified_copies_are_remembered_until_they_change(tmp_path: Path) -> None:
    repo = FilesystemRepository("r", tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    data = compression.zstd_compress_bytes(segment(2, ADDRESS))
    key = f"t/wal/{NAME}.zst"
    repo.put_bytes(key, data, {"sha256": hashlib.sha256(data).hexdigest()})
    infos = {i.key: i for i in repo.listing("t/wal/")}
    first = walverify.verify_archive(repo, infos, SEG, frozenset({SYSID}), {})
    assert (first.verified, first.remembered, first.corrupt) == (1, 0, {})
    assert walverify.read_state(repo, "t") is None
    walverify.write_state(repo, "t", walverify.WalVerified("now", first.memory, {}))
    state = walverify.read_state(repo, "t")
    assert state is not None
    again = walverify.verify_archive(repo, infos, SEG, frozenset({SYSID}), state.copies)
    assert (again.verified, again.remembered) == (0, 1)
    changed = {key: ObjectInfo(key, infos[key].size, infos[key].mtime + 1)}
    third = walverify.verify_archive(repo, changed, SEG, frozenset({SYSID}), again.memory)
    assert third.verified == 1  # a changed copy is read again
    (tmp_path / "repo" / "t" / "jobs" / "wal-verified.json").write_text("{not json")
    assert walverify.read_state(repo, "t") is None  # unreadable: forgotten, never trusted
