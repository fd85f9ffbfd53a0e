"""The heartbeat's error reports: a new message at once, the same one at most once a minute."""

from __future__ import annotations

from pgproof.backups.errors import SourceError
from pgproof.backups.heartbeat import throttled


def test_same_error_reported_once_a_minute_with_the_count_new_errors_at_once() -> None:
    now = [0.0]
    lines: list[str] = []
    hook = throttled(lines.append, every=60, clock=lambda: now[0])
    for second in range(0, 130, 1):
        now[0] = float(second)
        hook(SourceError("source down"))
    now[0] = 130.0
    hook(SourceError("read-only"))
    assert lines == [
        "source down",
        "source down (and 59 more times since the last report)",
        "source down (and 59 more times since the last report)",
        "read-only",
    ]
