from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgproof.backups.errors import ObjectNotFound, StorageError
from pgproof.backups.storage.filesystem import META_SUFFIX, TEMP_PREFIX, FilesystemRepository


def test_put_is_atomic_and_hashes(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    stored = repo.put("t/backups/b1/data", [b"abc", b"def"], {"k": "v"})
    assert stored.size == 6
    assert stored.sha256 == "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"
    info = repo.head("t/backups/b1/data")
    assert info is not None and info.size == 6 and info.metadata == {"k": "v"}
    assert repo.read_bytes("t/backups/b1/data") == b"abcdef"
    assert [i.key for i in repo.listing("t/")] == ["t/backups/b1/data"]
    assert repo.head("t/backups/b1/absent") is None
    with pytest.raises(ObjectNotFound):
        list(repo.read("t/absent"))


def failing_stream() -> Iterator[bytes]:
    yield b"x" * 1000
    raise OSError("the disk went away")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    with pytest.raises(OSError):
        repo.put("t/backups/b1/data", failing_stream())
    leftovers = [p.name for p in (tmp_path / "t/backups/b1").iterdir()]
    assert leftovers == []
    assert list(repo.listing("t/")) == []


def test_listing_hides_temp_and_meta_and_cleanup_removes_them(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    repo.put_bytes("t/wal/a", b"1", {"sha256": "x"})
    (tmp_path / "t/wal" / f"{TEMP_PREFIX}123.ab.b").write_bytes(b"partial")
    (tmp_path / "t/wal" / f"orphan{META_SUFFIX}").write_text("{}")
    assert [i.key for i in repo.listing("t/wal/")] == ["t/wal/a"]
    assert repo.cleanup_incomplete("t/", 3600) == []  # too young
    removed = repo.cleanup_incomplete("t/", 0)
    assert sorted(removed) == sorted([f"t/wal/{TEMP_PREFIX}123.ab.b", f"t/wal/orphan{META_SUFFIX}"])
    assert (tmp_path / "t/wal/a").exists() and (tmp_path / f"t/wal/a{META_SUFFIX}").exists()


def test_delete_prunes_empty_dirs_and_refuses_traversal(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    repo.put_bytes("t/backups/b1/x", b"1")
    repo.delete(["t/backups/b1/x", "t/backups/b1/never"])
    assert not (tmp_path / "t").exists()
    for bad in ("../x", "/etc/passwd", "t//x", ""):
        with pytest.raises(StorageError):
            repo.put_bytes(bad, b"1")


def test_unwritable_repository_is_a_storage_error(tmp_path: Path) -> None:
    target = tmp_path / "file-not-dir"
    target.write_text("")
    repo = FilesystemRepository("local", target)
    with pytest.raises(StorageError, match="local"):
        repo.put_bytes("t/x", b"1")
    assert os.path.isfile(target)


def test_a_missing_root_is_refused_never_recreated(tmp_path: Path) -> None:
    """An unmounted volume must not silently receive backups on the wrong disk."""
    root = tmp_path / "mnt" / "backups"
    repo = FilesystemRepository("local", root)
    with pytest.raises(StorageError, match="does not exist"):
        repo.put_bytes("main/wal/000000010000000000000001.zst", b"x")
    assert not root.exists()
