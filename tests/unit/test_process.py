"""One process policy: liveness (zombies count as gone), SIGTERM then SIGKILL, waiting."""

from __future__ import annotations

import subprocess
import sys
import time

from pgproof.backups import process

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process.alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # exited but not reaped: a zombie
    assert not process.alive(proc.pid)
    assert proc.poll() == 0  # reaped now
    assert not process.alive(proc.pid)


def test_a_running_process_is_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process.alive(proc.pid)
    finally:
        process.stop_child(proc, grace=5)
    assert proc.returncode is not None


def test_stop_child_kills_what_ignores_sigterm_after_the_grace() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    began = time.monotonic()
    process.stop_child(proc, grace=0.5)
    assert proc.returncode == -9
    assert time.monotonic() - began >= 0.5
    proc.stdout.close()


def test_stop_pid_ends_a_process_we_did_not_start_here() -> None:
    # a grandchild: started by a shell that exits at once, so we cannot reap it
    out = subprocess.run(
        [
            "/bin/sh",
            "-c",
            f"{sys.executable} -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!",
        ],
        capture_output=True,
        check=True,
    )
    pid = int(out.stdout)
    assert process.alive(pid)
    assert process.stop_pid(pid, grace=5)
    assert not process.alive(pid)


def test_wait_until_polls_checks_and_times_out() -> None:
    calls = {"ready": 0, "check": 0, "wait": 0}

    def ready() -> bool:
        calls["ready"] += 1
        return calls["ready"] >= 3

    def check() -> None:
        calls["check"] += 1

    def on_wait() -> None:
        calls["wait"] += 1

    assert process.wait_until(ready, 5, 0.01, check, on_wait)
    assert calls == {"ready": 3, "check": 2, "wait": 2}
    assert not process.wait_until(lambda: False, 0.05, 0.01)
