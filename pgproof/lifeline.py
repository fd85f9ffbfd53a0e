"""Children of ``pgproof serve`` die with it, and a restarted serve stops what a crashed one
left behind.

A child started by serve gets ``PGPROOF_SERVE_PID`` in its environment. At start it asks the
kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and exits at once if serve is
already gone (the parent died before the request was made). The job and heartbeat locks it
takes record that serve's PID, so a serve that starts later can tell the leftovers of a dead
serve (their recorded serve is not running) from jobs someone started by hand (no serve
recorded), and stop only the former.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pgproof.backups.lock import SERVE_PID_ENV, holder_of

__all__ = ["SERVE_PID_ENV", "bind_to_serve", "child_env", "orphans", "stop_leftovers"]

_PR_SET_PDEATHSIG = 1


def serve_pid() -> int | None:
    """The serve this process was started by, if any."""
    raw = os.environ.get(SERVE_PID_ENV, "")
    return int(raw) if raw.isdigit() else None


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child of this serve."""
    return {**env, SERVE_PID_ENV: str(os.getpid())}


def bind_to_serve() -> None:
    """Called first thing by every pgproof command: a child of serve dies with serve."""
    parent = serve_pid()
    if parent is None:
        return  # not a child of serve: nothing imported (wal-push runs per WAL segment)
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # serve died before the request took effect
        sys.stderr.write("pgproof: the serve that started this job is gone; not starting\n")
        raise SystemExit(1)


def orphans(holders: list[tuple[str, dict[str, object]]]) -> list[tuple[str, int]]:
    """(lock, pid) of lock holders started by a serve that is no longer running."""
    from pgproof.backups import process  # not on every command's start

    found = []
    for lock, holder in holders:
        pid, serve = holder.get("pid"), holder.get("serve")
        if isinstance(pid, int) and isinstance(serve, int) and not process.alive(serve):
            found.append((lock, pid))
    return found


def stop_leftovers(lock_paths: list[str], grace: float = 10.0) -> list[str]:
    """SIGTERM (then SIGKILL after ``grace``) to every holder of these locks that a dead serve
    started: the jobs and heartbeats of a crashed serve. Returns what was stopped."""
    from pgproof.backups import process

    held: list[tuple[str, dict[str, object]]] = []
    for path in lock_paths:
        holder = holder_of(Path(path))
        if holder:
            held.append((path, holder))
    stopped = []
    for lock, pid in orphans(held):
        process.stop_pid(pid, grace)
        stopped.append(f"{lock}: PID {pid}")
    return stopped
