from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pgproof.backups import walarchive, walasync
from pgproof.backups.errors import WalError
from pgproof.backups.storage.filesystem import FilesystemRepository


def pg_wal_with(tmp_path: Path, names: list[str]) -> Path:
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for i, name in enumerate(names):
        (pg_wal / name).write_bytes(bytes([i]) * 100_000)
        (pg_wal / "archive_status" / f"{name}.ready").touch()
    return pg_wal


NAMES = [f"0000000100000000000000{i:02X}" for i in range(1, 13)] + ["00000002.history"]


def test_worker_pushes_ahead_and_foreground_gets_each_verdict(tmp_path: Path) -> None:
    pg_wal = pg_wal_with(tmp_path, NAMES)
    (tmp_path / "repo").mkdir()
    repo = FilesystemRepository("local", tmp_path / "repo")
    spool = walasync.Spool(str(tmp_path / "spool"))
    spool.prepare()
    bad = NAMES[5]

    def push_one(path: str) -> None:
        if os.path.basename(path) == bad:
            raise WalError("simulated conflict")
        outcome = walarchive.push("t", [repo], path, 1)
        assert outcome.ok

    threads: list[threading.Thread] = []

    def spawn(lock_fd: int) -> None:
        # a thread instead of a process: it needs its own fd on the locked file description
        t = threading.Thread(
            target=walasync.run_worker,
            args=(spool, str(pg_wal), push_one),
            kwargs={"workers": 3, "lookahead": 8, "idle_exit": 2.0, "lock_fd": os.dup(lock_fd)},
        )
        threads.append(t)
        t.start()

    # history files go first, then segments in order, as PostgreSQL archives them
    assert walasync.ready_files(str(pg_wal))[0] == "00000002.history"
    verdicts = {}
    for name in walasync.ready_files(str(pg_wal)):
        verdicts[name] = walasync.wait_for(spool, name, 10, spawn)
        if verdicts[name][0]:  # what PostgreSQL does after exit 0
            (pg_wal / "archive_status" / f"{name}.ready").rename(
                pg_wal / "archive_status" / f"{name}.done"
            )
    assert verdicts[bad] == (False, "simulated conflict")
    assert all(ok for n, (ok, _) in verdicts.items() if n != bad)
    stored = {i.key.rsplit("/", 1)[-1] for i in repo.listing("t/wal/")}
    assert len(stored) == len(NAMES) - 1
    for t in threads:
        t.join(5)
    assert len(threads) == 1  # one worker served the whole run
    assert os.listdir(spool.ok_dir) == []


def test_second_worker_steps_aside(tmp_path: Path) -> None:
    spool = walasync.Spool(str(tmp_path / "spool"))
    spool.prepare()
    with spool.worker_lock() as mine:
        assert mine and spool.worker_running()
        assert walasync.run_worker(spool, str(tmp_path), lambda p: None, idle_exit=0) == 0
    assert not spool.worker_running()


def test_foreground_times_out_without_worker(tmp_path: Path) -> None:
    spool = walasync.Spool(str(tmp_path / "spool"))
    spool.prepare()
    spawned: list[int] = []
    ok, why = walasync.wait_for(spool, NAMES[0], 0.2, spawned.append)
    assert not ok and "no verdict" in why
    assert len(spawned) == 1  # it tried to start one worker, not one per poll


def test_async_needs_a_pg_wal_directory(tmp_path: Path) -> None:
    with pytest.raises(WalError, match="archive_status"):
        walasync.check_ready_dir(str(tmp_path / NAMES[0]))


def test_a_file_asked_for_again_is_pushed_again_at_once(tmp_path: Path) -> None:
    """After a crash PostgreSQL re-archives a file it had archived: no waiting."""
    pg_wal = pg_wal_with(tmp_path, NAMES[:1])
    spool = walasync.Spool(str(tmp_path / "spool"))
    spool.prepare()
    pushes: list[str] = []

    def push_one(path: str) -> None:
        pushes.append(os.path.basename(path))

    lock_fd = spool.try_lock()  # as the foreground does before it spawns a worker
    assert lock_fd is not None
    worker = threading.Thread(
        target=walasync.run_worker,
        args=(spool, str(pg_wal), push_one),
        kwargs={"idle_exit": 0.5, "lock_fd": lock_fd},
    )
    worker.start()
    for _ in range(2):
        assert walasync.wait_for(spool, NAMES[0], 5, lambda fd: None) == (True, "")
    (pg_wal / "archive_status" / f"{NAMES[0]}.ready").unlink()
    worker.join(5)
    assert pushes[:2] == [NAMES[0], NAMES[0]]


def test_orphan_markers_are_dropped(tmp_path: Path) -> None:
    pg_wal = pg_wal_with(tmp_path, NAMES[:2])
    spool = walasync.Spool(str(tmp_path / "spool"))
    spool.prepare()
    spool.mark_ok("000000010000000000000099")  # PostgreSQL archived it; never consumed
    walasync.run_worker(spool, str(pg_wal), lambda p: None, idle_exit=0.05)
    assert sorted(os.listdir(spool.ok_dir)) == NAMES[:2]
