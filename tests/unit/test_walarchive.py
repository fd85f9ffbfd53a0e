from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgproof.backups import walarchive
from pgproof.backups.errors import StorageError, WalConflict
from pgproof.backups.storage.filesystem import FilesystemRepository

NAME = "000000010000000000000007"


def pushed(tmp_path: Path) -> tuple[list[FilesystemRepository], bytes]:
    for n in ("a", "b"):
        (tmp_path / n).mkdir()
    repos = [FilesystemRepository(n, tmp_path / n) for n in ("a", "b")]
    data = os.urandom(4096) * 256
    src = tmp_path / NAME
    src.write_bytes(data)
    assert walarchive.push("t", repos, src, 1).ok
    return repos, data


def test_fetch_skips_a_corrupt_copy_for_an_intact_one(tmp_path: Path) -> None:
    repos, data = pushed(tmp_path)
    stored = tmp_path / "a" / "t" / "wal" / f"{NAME}.zst"
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 1
    stored.write_bytes(bytes(raw))
    used, problems = walarchive.fetch("t", repos, NAME, tmp_path / "out")
    assert used == "b" and (tmp_path / "out").read_bytes() == data
    assert problems and problems[0].startswith("a: ") and "sha256" in problems[0]
    dest, head, skipped = walarchive.fetch_stored("t", repos, NAME, tmp_path)
    assert dest.name == f"{NAME}.zst" and head == data[:8192]
    assert skipped == problems  # the bad copy is reported, not dropped


def test_not_found_and_unreadable_are_different(tmp_path: Path) -> None:
    repos, _ = pushed(tmp_path)
    with pytest.raises(walarchive.WalNotFound):
        walarchive.fetch("t", repos, "000000010000000000000008", tmp_path / "out")
    for repo in repos:
        stored = repo.root / "t" / "wal" / f"{NAME}.zst"
        stored.write_bytes(b"garbage")
    with pytest.raises(StorageError):
        walarchive.fetch("t", repos, NAME, tmp_path / "out")


def test_push_is_idempotent_and_refuses_other_bytes(tmp_path: Path) -> None:
    repos, data = pushed(tmp_path)
    again = walarchive.push("t", repos, tmp_path / NAME, 1)
    assert again.ok and again.already == ("a", "b") and not again.stored
    (tmp_path / NAME).write_bytes(data[::-1])
    refused = walarchive.push("t", repos, tmp_path / NAME, 1)
    assert not refused.ok and set(refused.failed) == {"a", "b"}
    assert "refusing to overwrite" in refused.failed["a"]
    with pytest.raises(WalConflict):
        walarchive._push_one(repos[0], "t", walarchive.prepare("t", tmp_path / NAME, 1))
