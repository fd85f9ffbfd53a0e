"""A restore test's verdict, and how the verdicts of its checks add up to it.

``passed`` only when every check ran and passed; ``failed`` (evidence of damage) beats
``error`` (something could not be judged); no check at all is an ``error``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeGuard

Verdict = Literal["passed", "failed", "error"]
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "error")


def is_verdict(value: object) -> TypeGuard[Verdict]:
    return value in VERDICTS


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    if not seen:
        return "error"
    if "failed" in seen:
        return "failed"
    if "error" in seen:
        return "error"
    return "passed"
