"""Freshness limits under an hour read as minutes, not "0.0 h"."""

from __future__ import annotations

from pgproof.backups.health import span


def test_durations_read_in_their_own_unit() -> None:
    assert span(45) == "45 s"
    assert span(1800) == "30 min"
    assert span(3 * 3600 + 1800) == "3.5 h"
    assert span(3 * 86400) == "3.0 d"
