"""The service's heartbeat supervisor reads the child's stderr as it comes: a child that
reports many failed beats never blocks on a full pipe, and its messages reach the log."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pgproof.scheduling import ChildRunner, Heartbeat

CHILD = """
import sys, pathlib
for i in range(3000):  # ~200 KB: three times a pipe's buffer
    print(f"heartbeat on main: source unreachable (attempt {i % 2})", file=sys.stderr, flush=True)
pathlib.Path(sys.argv[1]).write_text("done")
"""


class ScriptRunner(ChildRunner):
    def __init__(self, marker: Path):
        super().__init__("/dev/null", {})
        self.marker = marker

    def command(self, target: str, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", CHILD, str(self.marker)]


def test_stderr_is_drained_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "done"
    beat = Heartbeat("main", ScriptRunner(marker))
    caplog.set_level(logging.WARNING, logger="pgproof.jobs")
    try:
        beat.tend(time.monotonic())
        deadline = time.monotonic() + 30
        while not marker.exists():  # the child blocks forever if nobody reads its stderr
            assert time.monotonic() < deadline, "the heartbeat child is stuck on its stderr"
            time.sleep(0.05)
        assert beat.proc is not None
        beat.proc.wait(10)
        beat.tend(time.monotonic())  # notices the exit
    finally:
        beat.stop()
    failed = [r for r in caplog.records if r.getMessage() == "heartbeat failed"]
    # alternating messages are each new: logged every time; identical repeats would not be
    assert len(failed) == 3000
    exited = [r for r in caplog.records if r.getMessage() == "heartbeat exited"]
    assert exited and "source unreachable" in exited[0].__dict__["stderr"]
