"""One job per target at a time: an flock'ed file per target, released even on SIGKILL."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from backups.errors import LockHeld


def default_lock_dir() -> str:
    if os.geteuid() == 0:
        return "/run/pgproof"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"pgproof-{os.getuid()}")


@contextlib.contextmanager
def target_lock(lock_dir: str, target: str, job: str) -> Iterator[None]:
    directory = Path(lock_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = directory / f"{target}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise LockHeld(
                f"another pgproof job holds the lock of target {target!r}"
                f"{holder}; try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "job": job, "since": time.time()}).encode())
        yield
    finally:
        os.close(fd)  # closing releases the flock; the kernel does it on SIGKILL too


def _read_holder(fd: int) -> str:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(raw["since"])))
        return f" ({raw['job']}, pid {raw['pid']}, since {since})"
    except (ValueError, KeyError, TypeError, OSError):
        return ""
