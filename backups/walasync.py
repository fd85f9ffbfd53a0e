"""Asynchronous WAL archiving: a worker pushes ahead, archive_command only waits for it.

PostgreSQL calls archive_command once per file, in order, and waits for each. With
``wal.async`` on, ``pgproof wal-push`` (the foreground) does not push: it makes sure a worker
runs for the target and waits until the worker reports the file. The worker (one per target,
held by an flock in the spool) reads ``pg_wal/archive_status/*.ready``, pushes up to
``lookahead`` files ahead with ``workers`` threads (boto3 started once, connections reused)
and leaves a marker per file in the spool:

    <spool>/ok/<name>      stored durably in every repository (written after the push)
    <spool>/error/<name>   the push failed; the text says why

The foreground consumes the marker: ``ok`` -> exit 0, ``error`` -> exit 1 with the message
(PostgreSQL retries; the worker retries once the marker is consumed). The rule of DESIGN.md
holds: 0 only when durably stored. The worker exits after ``idle_exit`` seconds without work.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backups.errors import WalError

READY_SUFFIX = ".ready"
LOCK_NAME = "worker.lock"


@dataclass(frozen=True)
class Spool:
    root: Path

    @classmethod
    def for_target(cls, spool_dir: str, target: str) -> Spool:
        return cls(Path(spool_dir) / target)

    @property
    def ok_dir(self) -> Path:
        return self.root / "ok"

    @property
    def error_dir(self) -> Path:
        return self.root / "error"

    def prepare(self) -> None:
        for directory in (self.root, self.ok_dir, self.error_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)

    def mark_ok(self, name: str) -> None:
        (self.ok_dir / name).touch()
        with contextlib.suppress(FileNotFoundError):
            (self.error_dir / name).unlink()

    def mark_error(self, name: str, message: str) -> None:
        tmp = self.error_dir / f".{name}.tmp"
        tmp.write_text(message)
        os.replace(tmp, self.error_dir / name)

    def has_marker(self, name: str) -> bool:
        return (self.ok_dir / name).exists() or (self.error_dir / name).exists()

    def take(self, name: str) -> tuple[bool, str] | None:
        """Consume the marker of ``name``: (True, "") ok, (False, why) error, None: none yet."""
        try:
            (self.ok_dir / name).unlink()
            return True, ""
        except FileNotFoundError:
            pass
        path = self.error_dir / name
        try:
            message = path.read_text()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False, message

    def worker_running(self) -> bool:
        """True when some process holds the worker lock."""
        try:
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases the probe's lock if it got it
        return False

    @contextlib.contextmanager
    def worker_lock(self) -> Iterator[bool]:
        """Hold the worker lock; yields False (and holds nothing) when another worker has it."""
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def ready_files(pg_wal: Path) -> list[str]:
    """Names PostgreSQL has marked ready to archive, in archiving order (history first)."""
    try:
        names = [
            e.name[: -len(READY_SUFFIX)]
            for e in os.scandir(pg_wal / "archive_status")
            if e.name.endswith(READY_SUFFIX)
        ]
    except FileNotFoundError:
        return []
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def wait_for(
    spool: Spool,
    name: str,
    timeout: float,
    ensure_worker: Callable[[], None],
    poll: float = 0.005,
) -> tuple[bool, str]:
    """The foreground: wait for the worker's verdict on ``name``."""
    deadline = time.monotonic() + timeout
    started_worker = False
    while True:
        verdict = spool.take(name)
        if verdict is not None:
            return verdict
        if not started_worker or not spool.worker_running():
            ensure_worker()
            started_worker = True
        if time.monotonic() > deadline:
            return False, f"no verdict from the async WAL worker within {timeout:g} s"
        time.sleep(poll)
        poll = min(poll * 1.5, 0.05)


PushOne = Callable[[Path], None]  # raises on failure


def run_worker(
    spool: Spool,
    pg_wal: Path,
    push_one: PushOne,
    workers: int = 4,
    lookahead: int = 64,
    idle_exit: float = 10.0,
    scan_interval: float = 0.02,
) -> int:
    """Push ready files ahead until idle; returns how many were pushed (0 if another runs)."""
    spool.prepare()
    with spool.worker_lock() as mine:
        if not mine:
            return 0
        return _work(spool, pg_wal, push_one, workers, lookahead, idle_exit, scan_interval)


def _work(
    spool: Spool,
    pg_wal: Path,
    push_one: PushOne,
    workers: int,
    lookahead: int,
    idle_exit: float,
    scan_interval: float,
) -> int:
    pushed: set[str] = set()  # never push a name twice in one life (PG may recycle it)
    inflight: dict[str, concurrent.futures.Future[None]] = {}
    count = 0
    idle_since = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="walpush") as pool:
        while True:
            for name, future in list(inflight.items()):
                if not future.done():
                    continue
                del inflight[name]
                error = future.exception()
                if error is None:
                    pushed.add(name)
                    spool.mark_ok(name)
                    count += 1
                else:
                    spool.mark_error(name, str(error) or type(error).__name__)
            todo = [
                n
                for n in ready_files(pg_wal)
                if n not in inflight and n not in pushed and not spool.has_marker(n)
            ]
            for name in todo[: max(0, lookahead - len(inflight))]:
                inflight[name] = pool.submit(push_one, pg_wal / name)
            if inflight or todo:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_exit:
                return count
            if inflight:
                concurrent.futures.wait(
                    inflight.values(),
                    timeout=scan_interval,
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
            else:
                time.sleep(scan_interval)


def check_ready_dir(path: str) -> Path:
    """The pg_wal directory of a file PostgreSQL hands to archive_command."""
    pg_wal = Path(os.path.abspath(path)).parent
    if not (pg_wal / "archive_status").is_dir():
        raise WalError(
            f"{path} is not in a pg_wal directory (no archive_status next to it); "
            "async archiving needs archive_command = 'pgproof wal-push %p'"
        )
    return pg_wal
