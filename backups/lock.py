"""One job per target at a time: an flock'ed file per target, released even on SIGKILL."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pgproof.backups.errors import LockHeld

# set by `pgproof serve` in its children's environment (pgproof.lifeline); recorded in locks
SERVE_PID_ENV = "PGPROOF_SERVE_PID"


def default_lock_dir() -> str:
    if os.geteuid() == 0:
        return "/run/pgproof"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"pgproof-{os.getuid()}")


@contextlib.contextmanager
def target_lock(lock_dir: str, target: str, job: str) -> Iterator[None]:
    """The target's job lock: one backup, verify or retention at a time."""
    with _flock(Path(lock_dir) / f"{target}.lock", job) as got:
        if got is not None:
            raise LockHeld(
                f"another pgproof job holds the lock of target {target!r}{got}; try again "
                "when it has finished"
            )
        yield


@contextlib.contextmanager
def heartbeat_lock(lock_dir: str, target: str) -> Iterator[None]:
    """At most one heartbeat writer per target."""
    with _flock(Path(lock_dir) / f"{target}.heartbeat.lock", "heartbeat") as got:
        if got is not None:
            raise LockHeld(f"another heartbeat of target {target!r} is running{got}")
        yield


def lock_files(lock_dir: str, target: str) -> list[Path]:
    return [Path(lock_dir) / f"{target}.lock", Path(lock_dir) / f"{target}.heartbeat.lock"]


@contextlib.contextmanager
def _flock(path: Path, job: str) -> Iterator[str | None]:
    """Yields None when the lock is ours (released on leaving, and by the kernel on SIGKILL),
    else a description of its holder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _read_holder(fd)
            return
        os.ftruncate(fd, 0)
        holder: dict[str, object] = {"pid": os.getpid(), "job": job, "since": time.time()}
        serve = os.environ.get(SERVE_PID_ENV, "")
        if serve.isdigit():
            holder["serve"] = int(serve)  # a child of serve (pgproof.lifeline)
        os.write(fd, json.dumps(holder).encode())
        yield None
    finally:
        os.close(fd)  # closing releases the flock; the kernel does it on SIGKILL too


def holder_of(path: Path) -> dict[str, object] | None:
    """Who holds the lock at ``path`` (None when nobody does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
            return raw if isinstance(raw, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(raw["since"])))
        return f" ({raw['job']}, pid {raw['pid']}, since {since})"
    except (ValueError, KeyError, TypeError, OSError):
        return ""
