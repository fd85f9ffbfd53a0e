"""The service's children die with it: a SIGKILLed serve leaves no heartbeat or job behind,
a restarted serve stops what a dead one left, and one heartbeat writer per target at most."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pgproof import lifeline
from pgproof.backups import process
from tests.support.fixtures import PGPROOF, Setup
from tests.support.serve import serve, wait_for

pytestmark = pytest.mark.integration


def pgproof_children(parent: int) -> list[int]:
    """pgproof processes (heartbeats, jobs) whose environment names ``parent`` as serve."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{lifeline.SERVE_PID_ENV}={parent}".encode() in environ and process.alive(
            int(entry.name)
        ):
            found.append(int(entry.name))
    return found


def test_sigkill_of_serve_leaves_no_child_behind(fs_only15: Setup) -> None:
    s = fs_only15
    with serve(s.config_path) as srv:
        wait_for(lambda: pgproof_children(srv.proc.pid))  # the heartbeat runs
        children = pgproof_children(srv.proc.pid)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        # the heartbeat beats every second: it must be gone within that and its shutdown
        wait_for(lambda: not any(process.alive(p) for p in children), timeout=5, every=0.1)


def test_one_heartbeat_writer_per_target(fs_only15: Setup) -> None:
    s = fs_only15
    first = subprocess.Popen(
        [PGPROOF, "--config", str(s.config_path), "heartbeat"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: s.cluster.sql("select to_regclass('pgproof.heartbeat')")[0][0])
        second = s.pgproof("heartbeat", timeout=30)
        assert second.returncode == 1
        assert "another heartbeat of target 'main' is running" in second.stderr
        assert f"pid {first.pid}" in second.stderr
    finally:
        first.terminate()
        first.wait(10)


def test_a_restarted_serve_stops_what_a_dead_one_left(fs_only15: Setup, tmp_path: Path) -> None:
    """A heartbeat whose serve died without taking it along (started before the kernel could
    be asked to): the next serve finds it by its lock and stops it."""
    s = fs_only15
    lock_dir = yaml.safe_load(s.config_path.read_text())["lock_dir"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, backups.lock as l\n"
            f"with l.heartbeat_lock({lock_dir!r}, 'main'):\n    time.sleep(120)\n",
        ],
        env=dict(os.environ, **{lifeline.SERVE_PID_ENV: str(dead.pid)}),
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        lock = Path(lock_dir, "main.heartbeat.lock")
        wait_for(lambda: lock.exists() and lock.stat().st_size > 0)
        time.sleep(0.5)
        with serve(s.config_path) as srv:
            wait_for(lambda: holder.poll() is not None, timeout=20)
            wait_for(lambda: "stopped jobs and heartbeats left by a killed serve" in srv.log())
            wait_for(lambda: pgproof_children(srv.proc.pid))  # its own heartbeat took over
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)


def test_orphans_are_holders_whose_serve_is_gone() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holders: list[tuple[str, dict[str, object]]] = [
        ("a.lock", {"pid": 11, "serve": dead.pid}),  # its serve is gone
        ("b.lock", {"pid": 12, "serve": os.getpid()}),  # its serve runs
        ("c.lock", {"pid": 13}),  # started by hand: never ours to stop
    ]
    assert lifeline.orphans(holders) == [("a.lock", 11)]
