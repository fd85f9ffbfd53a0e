"""When the service runs a target's jobs: the schedule grammar, parsed once (at config load)
into a ``Schedule`` that the scheduler turns into a ``schedule`` library job.

Grammar: ``daily HH:MM`` (UTC), ``hourly``, ``hourly at :MM``,
``every N seconds|minutes|hours|days`` (N >= 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

JOBS = ("logical", "physical", "verify", "retention", "check")
_DAILY = re.compile(r"^daily ((?:[01]\d|2[0-3]):[0-5]\d)$")
_HOURLY = re.compile(r"^hourly(?: at (:[0-5]\d))?$")
_EVERY = re.compile(r"^every (\d+) (second|minute|hour|day)s?$")
GRAMMAR = "'daily HH:MM', 'hourly', 'hourly at :MM' or 'every N seconds|minutes|hours|days'"

Unit = Literal["second", "minute", "hour", "day"]
_UNITS: dict[str, Unit] = {"second": "second", "minute": "minute", "hour": "hour", "day": "day"}


@dataclass(frozen=True)
class Schedule:
    text: str  # as written in the config (shown back in /healthz and logs)
    unit: Unit  # daily -> day, hourly -> hour
    every: int = 1
    at: str | None = None  # "HH:MM" (daily, UTC) or ":MM" (hourly)

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Schedule:
    """ValueError naming the grammar for anything else."""
    if m := _DAILY.match(text):
        return Schedule(text, "day", 1, m.group(1))
    if m := _HOURLY.match(text):
        return Schedule(text, "hour", 1, m.group(1))
    if (m := _EVERY.match(text)) and int(m.group(1)) >= 1:
        return Schedule(text, _UNITS[m.group(2)], int(m.group(1)))
    raise ValueError(f"{text!r} is not {GRAMMAR}")
