"""pg_basebackup's tar archives, read while it writes them (sources with tablespaces).

With tablespaces besides ``pg_default`` and ``pg_global``, pg_basebackup cannot write to
stdout: it writes one ``<oid>.tar`` per tablespace and ``base.tar`` into a directory, one
after the other (it closes an archive before it opens the next), then ``backup_manifest``.
:func:`follow_archives` reads each archive as it grows, in the order written, so compression
and upload run while the backup is taken, and gives the disk back behind itself (a hole is
punched into what was read and the file removed once done): the staging directory holds
about what pgproof has not read yet, not a second copy of the database. pg_basebackup can
write faster than pgproof compresses and uploads: when the unread part of an archive passes
``max_lag`` bytes, pg_basebackup is paused (SIGSTOP; the server just sees TCP back-pressure)
and resumed (SIGCONT) once pgproof has caught up to half of it, so the staging directory never
holds much more than ``max_lag``.

An archive is complete when its end-of-archive marker (two zero blocks) has been read; when
pg_basebackup exits first, the archive must end there or the backup fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pgproof.backups.tarscan import TarScanner

CHUNK = 1 << 20
MAX_LAG = 64 << 20


class Throttle:
    """Pauses the writer (by PID) while the reader lags too far behind; never leaves it
    paused (``release``)."""

    def __init__(self, pid: int | None, max_lag: int = MAX_LAG):
        self.pid = pid
        self.max_lag = max_lag
        self.paused = False
        self.pauses = 0

    def update(self, lag: int) -> None:
        if self.pid is None:
            return
        if not self.paused and lag > self.max_lag:
            self._signal(signal.SIGSTOP)
            self.paused = True
            self.pauses += 1
        elif self.paused and lag < self.max_lag // 2:
            self.release()

    def release(self) -> None:
        if self.paused and self.pid is not None:
            self._signal(signal.SIGCONT)
        self.paused = False

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid or 0, sig)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


class _HolePuncher:
    """Frees the blocks of a file's already-read part (Linux fallocate); a no-op where the
    file system cannot (the staging directory then grows to the archive's size)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None
        self.works = self._libc is not None and hasattr(self._libc, "fallocate")
        if self.works:
            assert self._libc is not None
            self._libc.fallocate.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int64,
                ctypes.c_int64,
            ]

    def punch(self, fd: int, offset: int, length: int) -> None:
        if not self.works or length <= 0:
            return
        assert self._libc is not None
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if self._libc.fallocate(fd, mode, offset, length) != 0:
            self.works = False  # EOPNOTSUPP, ENOSYS...: the file system cannot; do not retry


class Archive:
    """One archive being read; ``complete`` once its end-of-archive marker has passed."""

    def __init__(
        self,
        path: Path,
        running: Callable[[], bool],
        puncher: _HolePuncher,
        poll: float,
        throttle: Throttle,
    ):
        self.path = path
        self._throttle = throttle
        self.name = path.name
        self.complete = False
        self._running = running
        self._puncher = puncher
        self._poll = poll

    def chunks(self) -> Iterator[bytes]:
        """The archive's bytes as they are written; ends at the end-of-archive marker, or
        where pg_basebackup stopped (``complete`` stays False: its exit status says why)."""
        scanner = TarScanner(set())
        offset = 0
        try:  # punching holes needs a descriptor open for writing
            fd = os.open(self.path, os.O_RDWR)
        except PermissionError:
            fd = os.open(self.path, os.O_RDONLY)
        with open(fd, "rb", buffering=0) as fh:
            while True:
                exited = not self._running()  # sampled before the read: no race with exit
                data = fh.read(CHUNK)
                if data:
                    scanner.feed(data)
                    yield data
                    self._puncher.punch(fh.fileno(), offset, len(data))
                    offset += len(data)
                    self._throttle.update(os.fstat(fh.fileno()).st_size - offset)
                    continue
                self._throttle.release()  # caught up
                if scanner.finished or exited:
                    break
                time.sleep(self._poll)
        self.complete = scanner.finished
        self.path.unlink(missing_ok=True)


def follow_archives(
    directory: Path,
    running: Callable[[], bool],
    throttle: Throttle | None = None,
    poll: float = 0.05,
) -> Iterator[Archive]:
    """Each ``*.tar`` in ``directory``, oldest first, as pg_basebackup (``running`` while it
    does) writes them. Read each archive's chunks fully before taking the next. The writer is
    never left paused, whatever happens to the reader."""
    throttle = throttle or Throttle(None)
    try:
        yield from _follow(directory, running, throttle, poll)
    finally:
        throttle.release()


def _follow(
    directory: Path, running: Callable[[], bool], throttle: Throttle, poll: float
) -> Iterator[Archive]:
    done: set[str] = set()
    puncher = _HolePuncher()
    while True:
        exited = not running()  # sampled before listing: nothing new appears after exit
        pending = []
        try:
            for entry in os.scandir(directory):
                if entry.name.endswith(".tar") and entry.name not in done:
                    pending.append((entry.stat().st_mtime_ns, entry.name))
        except FileNotFoundError:
            pass  # not made yet (pg_basebackup makes it once connected) or never
        if not pending:
            if exited:
                return
            time.sleep(poll)
            continue
        name = min(pending)[1]
        done.add(name)
        yield Archive(directory / name, running, puncher, poll, throttle)
