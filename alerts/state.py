"""What has been announced, kept in a JSON file so a restart neither repeats nor forgets.

Written atomically (temp file, fsync, rename); a missing or unreadable file starts empty
(the worst case is one repeated email, never a lost alert).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from pgproof.alerts.conditions import Alert
from pgproof.alerts.errors import StateError

log = logging.getLogger("pgproof.alerts")
STATE_FORMAT = 1


@dataclass
class Tracked:
    alert: Alert
    since: float
    last_sent: float | None = None  # when a firing notice was delivered last
    resolved_at: float | None = None  # set when the condition cleared; notice pending


@dataclass
class AlertState:
    tracked: dict[str, Tracked] = field(default_factory=dict)
    failures: int = 0  # consecutive failed deliveries
    next_attempt: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "failures": self.failures,
                "next_attempt": self.next_attempt,
                "alerts": {k: asdict(v) for k, v in self.tracked.items()},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        raw: Any = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise ValueError("unknown state format")
        tracked = {}
        for key, item in raw.get("alerts", {}).items():
            tracked[key] = Tracked(
                alert=Alert(**item["alert"]),
                since=float(item["since"]),
                last_sent=item.get("last_sent"),
                resolved_at=item.get("resolved_at"),
            )
        return cls(tracked, int(raw.get("failures", 0)), float(raw.get("next_attempt", 0.0)))


def load(path: str) -> AlertState:
    try:
        with open(path) as handle:
            return AlertState.from_json(handle.read())
    except FileNotFoundError:
        return AlertState()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("alert state %s unreadable, starting afresh: %s", path, exc)
        return AlertState()


def save(path: str, state: AlertState) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".alerts-state.", dir=directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(state.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise StateError(f"cannot write alert state {path}: {exc.strerror or exc}") from None
