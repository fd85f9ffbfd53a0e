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

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future

from pgproof.backups.errors import WalError

READY_SUFFIX = ".ready"
LOCK_NAME = "worker.lock"


class Spool:
    """The spool of one target (plain strings and os calls: this is on the hot path)."""

    def __init__(self, root: str):
        self.root = root
        self.ok_dir = os.path.join(root, "ok")
        self.error_dir = os.path.join(root, "error")

    @classmethod
    def for_target(cls, spool_dir: str, target: str) -> Spool:
        return cls(os.path.join(spool_dir, target))

    def prepare(self) -> None:
        for directory in (self.root, self.ok_dir, self.error_dir):
            os.makedirs(directory, mode=0o750, exist_ok=True)

    def mark_ok(self, name: str) -> None:
        os.close(os.open(os.path.join(self.ok_dir, name), os.O_WRONLY | os.O_CREAT, 0o640))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.error_dir, name))

    def mark_error(self, name: str, message: str) -> None:
        tmp = os.path.join(self.error_dir, f".{name}.tmp")
        with open(tmp, "w") as fh:
            fh.write(message)
        os.replace(tmp, os.path.join(self.error_dir, name))

    def has_marker(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.ok_dir, name)) or os.path.exists(
            os.path.join(self.error_dir, name)
        )

    def take(self, name: str) -> tuple[bool, str] | None:
        """Consume the marker of ``name``: (True, "") ok, (False, why) error, None: none yet."""
        try:
            os.unlink(os.path.join(self.ok_dir, name))
            return True, ""
        except FileNotFoundError:
            pass
        path = os.path.join(self.error_dir, name)
        try:
            with open(path) as fh:
                message = fh.read()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return False, message

    def log_path(self) -> str:
        return os.path.join(self.root, "worker.log")

    def try_lock(self) -> int | None:
        """Take the worker lock; the fd (to hand to a new worker) or None if a worker has it."""
        fd = os.open(os.path.join(self.root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def worker_lock(self) -> Iterator[bool]:
        """Hold the worker lock; yields False (holding nothing) when a worker has it."""
        fd = self.try_lock()
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    def worker_running(self) -> bool:
        fd = self.try_lock()
        if fd is None:
            return True
        os.close(fd)
        return False


def ready_files(pg_wal: str) -> list[str]:
    """Names PostgreSQL has marked ready to archive, in archiving order (history first)."""
    try:
        names = [
            e.name[: -len(READY_SUFFIX)]
            for e in os.scandir(os.path.join(pg_wal, "archive_status"))
            if e.name.endswith(READY_SUFFIX)
        ]
    except FileNotFoundError:
        return []
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def wait_for(
    spool: Spool,
    name: str,
    timeout: float,
    spawn: Callable[[int], None],
    poll: float = 0.002,
) -> tuple[bool, str]:
    """The foreground: wait for the worker's verdict on ``name``.

    When no worker holds the lock, the foreground takes it and ``spawn(fd)`` starts a worker
    that inherits the locked fd: there is no moment without an owner, so two workers never
    start for one spool.
    """
    deadline = time.monotonic() + timeout
    next_probe = 0.0
    while True:
        verdict = spool.take(name)
        if verdict is not None:
            return verdict
        now = time.monotonic()
        if now >= next_probe:
            fd = spool.try_lock()
            if fd is not None:
                try:
                    spawn(fd)
                finally:
                    os.close(fd)
            next_probe = now + 0.5
        if now > deadline:
            return False, f"no verdict from the async WAL worker within {timeout:g} s"
        time.sleep(poll)
        poll = min(poll * 1.5, 0.02)


PushOne = Callable[[str], None]  # the path of a file to push; raises on failure


def run_worker(
    spool: Spool,
    pg_wal: str,
    push_one: PushOne,
    workers: int = 4,
    lookahead: int = 64,
    idle_exit: float = 10.0,
    scan_interval: float = 0.01,
    lock_fd: int | None = None,
) -> int:
    """Push ready files ahead until idle; returns how many were pushed (0 if another runs).

    ``lock_fd``: the worker lock, already taken by the foreground that started us.
    """
    spool.prepare()
    if lock_fd is not None:
        try:
            return _work(spool, pg_wal, push_one, workers, lookahead, idle_exit, scan_interval)
        finally:
            os.close(lock_fd)
    with spool.worker_lock() as mine:
        if not mine:
            return 0
        return _work(spool, pg_wal, push_one, workers, lookahead, idle_exit, scan_interval)


def _work(
    spool: Spool,
    pg_wal: str,
    push_one: PushOne,
    workers: int,
    lookahead: int,
    idle_exit: float,
    scan_interval: float,
) -> int:
    import concurrent.futures

    status = os.path.join(pg_wal, "archive_status")
    inflight: dict[str, Future[None]] = {}
    count = 0
    idle_since = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="walpush") as pool:
        while True:
            for name, future in list(inflight.items()):
                if not future.done():
                    continue
                del inflight[name]
                error = future.exception()
                if not os.path.exists(os.path.join(status, name + READY_SUFFIX)):
                    continue  # archived meanwhile (PostgreSQL marked it .done): no verdict owed
                if error is None:
                    spool.mark_ok(name)
                    count += 1
                else:
                    spool.mark_error(name, str(error) or type(error).__name__)
            ready = ready_files(pg_wal)
            _drop_orphan_markers(spool, set(ready))
            todo = [n for n in ready if n not in inflight and not spool.has_marker(n)]
            for name in todo[: max(0, lookahead - len(inflight))]:
                inflight[name] = pool.submit(push_one, os.path.join(pg_wal, name))
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


def _drop_orphan_markers(spool: Spool, ready: set[str]) -> None:
    """Markers of files no longer waiting (PostgreSQL archived them) are never read: drop."""
    for directory in (spool.ok_dir, spool.error_dir):
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            if name not in ready and not name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))


def check_ready_dir(path: str) -> str:
    """The pg_wal directory of a file PostgreSQL hands to archive_command."""
    pg_wal = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(os.path.join(pg_wal, "archive_status")):
        raise WalError(
            f"{path} is not in a pg_wal directory (no archive_status next to it); "
            "async archiving needs archive_command = 'pgproof wal-push %p'"
        )
    return pg_wal
