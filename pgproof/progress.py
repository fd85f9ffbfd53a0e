"""A progress line on a terminal (stderr), throttled; nothing when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class TerminalProgress:
    def __init__(self, stream: TextIO | None = None, interval: float = 0.2):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.label = ""
        self.total: int | None = None
        self.done_bytes = 0
        self.started = 0.0
        self.last_draw = 0.0

    def start(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done_bytes = label, total, 0
        self.started = self.last_draw = time.monotonic()
        self._draw()

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        now = time.monotonic()
        if now - self.last_draw >= self.interval:
            self.last_draw = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = human_bytes(self.done_bytes / elapsed) + "/s"
        if self.total:
            share = min(self.done_bytes / self.total, 1.0)
            bar = "#" * int(share * 24)
            text = (
                f"{self.label:<22} [{bar:<24}] {share:4.0%} {human_bytes(self.done_bytes)} {rate}"
            )
        else:
            text = f"{self.label:<22} {human_bytes(self.done_bytes)} {rate}"
        self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        self.stream.flush()

    def done(self) -> None:
        self._draw(final=True)
