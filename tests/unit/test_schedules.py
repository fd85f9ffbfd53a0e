"""The schedule grammar, parsed once at config load."""

from __future__ import annotations

import pytest

from pgproof import schedules


@pytest.mark.parametrize(
    ("text", "unit", "every", "at"),
    [
        ("daily 02:30", "day", 1, "02:30"),
        ("hourly", "hour", 1, None),
        ("hourly at :15", "hour", 1, ":15"),
        ("every 1 minute", "minute", 1, None),
        ("every 10 minutes", "minute", 10, None),
        ("every 6 hours", "hour", 6, None),
        ("every 2 days", "day", 2, None),
        ("every 30 seconds", "second", 30, None),
    ],
)
def test_each_form_parses_to_one_schedule(text: str, unit: str, every: int, at: str | None) -> None:
    s = schedules.parse(text)
    assert (s.unit, s.every, s.at, str(s)) == (unit, every, at, text)


@pytest.mark.parametrize(
    "text",
    [
        "sometimes",
        "daily 24:00",
        "daily 2:30",
        "hourly at 15",
        "every 0 minutes",
        "every minute",
        "every 5 weeks",
        " daily 02:30",
        "",
    ],
)
def test_anything_else_is_refused_with_the_grammar(text: str) -> None:
    with pytest.raises(ValueError, match="daily HH:MM"):
        schedules.parse(text)
