"""Reading a backup file: a repository that does not answer is an error, not damage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgproof.backups import catalog
from pgproof.backups.errors import StorageError
from pgproof.backups.progress import NullProgress
from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.verifier.errors import RepositoryUnavailable, RestoreFailed
from pgproof.verifier.fetch import verified_chunks
from tests.unit.test_retention import manifest

DATA = b"base backup bytes"
ENTRY = catalog.BackupFile("base.tar", len(DATA), hashlib.sha256(DATA).hexdigest(), "base")


class Unreachable(FilesystemRepository):
    def read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        raise StorageError(self.name, "connection refused")


def read_all(repo: FilesystemRepository) -> bytes:
    return b"".join(verified_chunks(repo, manifest(1), ENTRY, NullProgress()))


def test_intact_missing_damaged_and_unreachable(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    m = manifest(1)
    key = catalog.backup_prefix(m.target, m.id) + ENTRY.name
    with pytest.raises(RestoreFailed, match="base.tar is missing"):
        read_all(repo)
    repo.put_bytes(key, DATA, {})
    assert read_all(repo) == DATA
    repo.put_bytes(key, DATA.upper(), {})
    with pytest.raises(RestoreFailed, match="does not match its sha256"):
        read_all(repo)
    with pytest.raises(RepositoryUnavailable, match="connection refused"):
        read_all(Unreachable("local", tmp_path))
