from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from pgproof.backups.errors import BackupFailed, StorageError
from pgproof.backups.fanout import fan_out
from pgproof.backups.storage.base import StoredObject
from pgproof.backups.storage.filesystem import FilesystemRepository


class BreaksAfter(FilesystemRepository):
    """A real filesystem repository whose disk 'fails' after N bytes."""

    def __init__(self, name: str, root: Path, limit: int):
        super().__init__(name, root)
        self.limit = limit

    def put(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        def guarded() -> Iterator[bytes]:
            seen = 0
            for chunk in chunks:
                seen += len(chunk)
                if seen > self.limit:
                    raise StorageError(self.name, "No space left on device")
                yield chunk

        return super().put(key, guarded(), metadata)


def stream(n: int = 50) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i % 256]) * 65536


def test_one_failing_repository_leaves_the_other_complete(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = FilesystemRepository("good", tmp_path / "good")
    bad = BreaksAfter("bad", tmp_path / "bad", 200_000)
    result = fan_out([bad, good], "t/x", stream())
    assert list(result.stored) == ["good"]
    assert "No space left" in str(result.failed["bad"])
    assert good.read_bytes("t/x") == b"".join(stream())
    assert result.size == 50 * 65536
    assert list(bad.listing("t/")) == []
    assert [p.name for p in (tmp_path / "bad" / "t").iterdir()] == []  # temp file removed


def test_producer_failure_aborts_every_write(tmp_path: Path) -> None:
    for n in ("a", "b"):
        (tmp_path / n).mkdir()
    repos = [FilesystemRepository(n, tmp_path / n) for n in ("a", "b")]

    def broken() -> Iterator[bytes]:
        yield from stream(5)
        raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        fan_out(repos, "t/x", broken())
    for repo in repos:
        assert list(repo.listing("t/")) == []


def test_all_failing_stops_reading(tmp_path: Path) -> None:
    pulled = 0

    def counting() -> Iterator[bytes]:
        nonlocal pulled
        for chunk in stream(1000):
            pulled += 1
            yield chunk

    with pytest.raises(BackupFailed, match="every repository failed writing t/x: .*No space"):
        fan_out([BreaksAfter("bad", tmp_path, 100_000)], "t/x", counting())
    assert pulled < 100
