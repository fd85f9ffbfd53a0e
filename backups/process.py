"""Processes: start one in its own process group, is one alive, stop one (SIGTERM, a grace
period, then SIGKILL), wait until something is ready. One policy for every place pgproof
starts or stops a process: the command runner, the async WAL worker, the service's jobs and
heartbeats, leftovers of a killed serve, and the sandboxes' servers.

A zombie (exited, not yet reaped by its parent) counts as gone: it holds no lock, no port
and no file, and waiting for it to disappear would wait for a parent that may never look.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import IO

GRACE_SECONDS = 10.0  # SIGTERM -> SIGKILL, unless the caller's settings say otherwise
REAP_SECONDS = 30.0  # after SIGKILL: how long to wait for the kernel to finish a process


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    cwd: str | None = None,
    user: tuple[int, int] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell) as the leader of its own session and process group, so that
    it and whatever it starts can be stopped as one (``stop_child``) and a terminal's signals
    do not reach it. ``user``: (uid, gid) to run as, with no supplementary groups.
    OSError when it cannot be started."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # noqa: S603 - argv list, no shell
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        pass_fds=pass_fds,
        start_new_session=True,
        user=user[0] if user is not None else None,
        group=user[1] if user is not None else None,
        extra_groups=[] if user is not None else None,
    )
    return proc


def alive(pid: int) -> bool:
    """Running (or stopped), not a zombie. A process of another user counts when it exists."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def send(pid: int, sig: int, group: bool = False) -> bool:
    """Send ``sig`` to the process (or the process group it leads; to the process alone when
    it leads none); False when it is already gone."""
    if group:
        try:
            os.killpg(pid, sig)
            return True
        except ProcessLookupError:
            pass  # not a group leader (or gone): the process itself
        except PermissionError:
            return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_gone(pid: int, timeout: float, interval: float = 0.1) -> bool:
    """Wait until a process that is not our child has gone; True when it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def stop_pid(pid: int, grace: float = GRACE_SECONDS, group: bool = False) -> bool:
    """SIGTERM, up to ``grace`` seconds to exit, then SIGKILL (``grace`` 0: SIGKILL at once)
    for a process that is not our child (we cannot reap it). True when it is gone."""
    if grace > 0:
        send(pid, signal.SIGTERM, group)
        if wait_gone(pid, grace):
            return True
    send(pid, signal.SIGKILL, group)
    return wait_gone(pid, REAP_SECONDS if grace > 0 else 5.0)


def stop_child(
    proc: subprocess.Popen[bytes],
    grace: float = GRACE_SECONDS,
    group: bool = True,
    term_group: bool = True,
) -> None:
    """The same for our own child, reaped here: SIGTERM, up to ``grace`` seconds, SIGKILL.
    ``group``: the SIGKILL goes to its whole process group (which it leads when started with
    ``start_new_session``); ``term_group`` False: the SIGTERM to the child alone, so that a
    pgproof job unwinds its own tools in order before anything else is signalled."""
    if proc.poll() is None:
        send(proc.pid, signal.SIGTERM, group and term_group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        send(proc.pid, signal.SIGKILL, group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=REAP_SECONDS)
    if group:  # what it started and left behind in its group (never another process)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    interval: float,
    check: Callable[[], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> bool:
    """Poll ``ready`` every ``interval`` seconds until it is true (True) or ``timeout`` has
    passed (False). ``check`` runs after each miss and raises when waiting is pointless (the
    process died); ``on_wait`` runs between polls (progress)."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if check is not None:
            check()
        if time.monotonic() > deadline:
            return False
        if on_wait is not None:
            on_wait()
        time.sleep(interval)
