"""The exporter's incremental repository index over a real filesystem repository: what it
sees after additions, completions, deletions, gaps and broken records."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgproof.backups import walnames, walverify
from pgproof.backups.errors import StorageError
from pgproof.backups.layout import backup_prefix, wal_prefix
from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.exporters.index import RepoIndex
from pgproof.exporters.model import TargetView
from pgproof.exporters.status import summarize
from tests.support import synthetic
from tests.support.synthetic import Writer

_AGED = [1_000_000]


@pytest.fixture
def repo() -> Iterator[FilesystemRepository]:
    with tempfile.TemporaryDirectory(prefix="pgproof-index-") as d:
        yield FilesystemRepository("local", d)


def _view(index: RepoIndex, age_dirs: FilesystemRepository | None = None) -> TargetView:
    if age_dirs is not None:
        # folders changed in the last 2 s get no token (a coarse clock could repeat their
        # mtime): move the changed ones back in time, each to a moment never used before
        _AGED[0] += 10
        for root, dirs, _ in os.walk(age_dirs.root):
            for d in dirs:
                path = Path(root) / d
                if time.time() - path.stat().st_mtime < 2:
                    os.utime(path, (_AGED[0], _AGED[0]))
    snap = index.refresh()
    assert snap.up, snap.error
    return snap.targets["main"]


def test_sees_additions_completions_and_deletions(repo: FilesystemRepository) -> None:
    w = Writer(repo)
    made = synthetic.fill(w, "main", backups=6, wal_segments=20, records_every=2)
    index = RepoIndex(repo, ["main"])
    view = _view(index, repo)
    assert [b.id for b in view.backups] == sorted(m.id for m in made)
    assert view.wal is not None and view.wal.segments == 20 and view.wal.missing == 0
    assert len(view.records) == 3 and view.invalid_records == ()

    # a backup being written (no manifest yet) is incomplete, then complete once committed
    late = synthetic.manifest("main", 100, "physical", start_segno=20)
    w.put(backup_prefix("main", late.id) + "base.tar.zst", b"x")
    view = _view(index, repo)
    assert view.incomplete == 1 and late.id not in {b.id for b in view.backups}
    w.put(backup_prefix("main", late.id) + "manifest.json", late.to_json())
    view = _view(index)  # the backups folder itself did not change: pending ids are re-checked
    assert view.incomplete == 0 and late.id in {b.id for b in view.backups}

    # retention deletes the oldest backups and WAL: gone from the index
    repo.delete(k.key for k in repo.listing(backup_prefix("main", made[0].id)))
    repo.delete(f"{wal_prefix('main')}{walnames.segment_name(1, n)}.zst" for n in (1, 2))
    view = _view(index, repo)
    assert made[0].id not in {b.id for b in view.backups}
    assert view.wal is not None and view.wal.segments == 18


def test_counts_a_gap_from_the_oldest_physical_backup(repo: FilesystemRepository) -> None:
    w = Writer(repo)
    w.manifest(synthetic.manifest("main", 1, "physical", start_segno=5))
    w.wal("main", [5, 6, 9, 10, 12])
    index = RepoIndex(repo, ["main"])
    view = _view(index, repo)
    assert view.wal is not None
    assert view.wal.missing == 3
    assert view.wal.first_missing == tuple(walnames.segment_name(1, n) for n in (7, 8, 11))
    w.wal("main", [7, 8, 11])
    view = _view(index, repo)
    assert view.wal is not None and view.wal.missing == 0 and view.wal.newest is not None


def test_malformed_and_foreign_records_are_skipped_and_named(repo: FilesystemRepository) -> None:
    w = Writer(repo)
    m = synthetic.manifest("main", 1, "logical")
    w.manifest(m)
    w.record("main", synthetic.record("main", 1, m))
    w.put("main/results/20260101T000000Z-bad.json", b'{"verdict": ')
    w.put("main/results/20260101T000001Z-odd.json", b'{"verdict": "maybe"}')
    w.put(backup_prefix("main", "20260101T000000Z-logical-dead") + "manifest.json", b"{nope")
    view = _view(RepoIndex(repo, ["main"]), repo)
    assert len(view.records) == 1
    assert len(view.invalid_records) == 2
    assert view.corrupt == ("20260101T000000Z-logical-dead",)


def test_job_status_and_summary(repo: FilesystemRepository) -> None:
    w = Writer(repo)
    m = synthetic.manifest("main", 1, "logical")
    w.manifest(m)
    w.job("main", "logical", "failed", "cannot connect")
    index = RepoIndex(repo, ["main"])
    snap = index.refresh()
    status = summarize("main", ["local", "offsite"], {"local": snap}, ("logical", "physical"))
    assert status.repositories_up == {"local": True, "offsite": False}
    assert status.kinds["logical"].last_status_ok is False
    assert status.kinds["physical"].newest is None
    w.job("main", "logical", "ok")
    snap = index.refresh()
    status = summarize("main", ["local"], {"local": snap})
    assert status.kinds["logical"].last_status_ok is True


def test_a_missing_root_is_down_not_empty(repo: FilesystemRepository) -> None:
    synthetic.fill(Writer(repo), "main", backups=2, wal_segments=3)
    index = RepoIndex(repo, ["main"])
    assert index.refresh().up
    moved = Path(str(repo.root) + ".gone")
    os.rename(repo.root, moved)
    try:
        snap = index.refresh()
        assert not snap.up and "not a directory" in snap.error
    finally:
        os.rename(moved, repo.root)
    assert index.refresh().up


def test_a_refresh_failing_half_way_loses_nothing(repo: FilesystemRepository) -> None:
    """Names listed but not processed (a record's read failed) are seen again next time."""
    w = Writer(repo)
    m = synthetic.manifest("main", 1, "logical")
    w.manifest(m)
    index = RepoIndex(repo, ["main"])
    assert _view(index, repo).records == ()
    w.record("main", synthetic.record("main", 1, m))
    real_read = repo.read_bytes

    def failing_read(key: str) -> bytes:
        raise StorageError("local", "injected read failure")

    repo.read_bytes = failing_read  # type: ignore[method-assign]
    _AGED[0] += 10
    os.utime(repo.root / "main" / "results", (_AGED[0], _AGED[0]))
    assert not index.refresh().up
    repo.read_bytes = real_read  # type: ignore[method-assign]
    view = index.refresh().targets["main"]  # the folder's token is unchanged since the failure
    assert len(view.records) == 1


def test_bad_wal_copies_that_check_found_are_counted_per_repository(
    repo: FilesystemRepository,
) -> None:
    index = RepoIndex(repo, ["main"])
    assert _view(index).wal_corrupt == {}
    found = {"000000010000000000000003": "stored bytes do not match their sha256 (corrupted)"}
    walverify.write_state(repo, "main", walverify.WalVerified("now", {}, found))
    view = _view(index)
    assert view.wal_corrupt == found
    snap = index.refresh()
    status = summarize("main", ["local"], {"local": snap})
    assert status.wal_corrupt_by_repository == {"local": 1}
    walverify.write_state(repo, "main", walverify.WalVerified("later", {}, {}))
    time.sleep(0.01)  # a new modification time: the document is read again
    assert _view(index).wal_corrupt == {}
