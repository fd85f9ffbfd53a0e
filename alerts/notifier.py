"""Email notifications: what to send, when, and remembering it.

Each evaluation compares the firing alerts with the state: a new alert is announced, one
still firing is announced again after ``repeat_interval``, one that cleared after being
announced gets a resolved notice. Everything due goes in one email. A failed delivery is
retried in place (``attempts``, backoff), then at later evaluations with a growing delay (up
to the repeat interval); it is logged, and it never raises into the caller: backups and
restore tests run in other threads and never wait for mail.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from pgproof.alerts import smtp, state
from pgproof.alerts.conditions import Alert
from pgproof.alerts.errors import AlertError, DeliveryError
from pgproof.alerts.render import Event, Renderer
from pgproof.alerts.state import AlertState, Tracked

log = logging.getLogger("pgproof.alerts")


@dataclass(frozen=True)
class NotifierSettings:
    smtp: smtp.SmtpSettings
    state_file: str
    repeat_interval_seconds: float = 4 * 3600
    attempts: int = 3
    backoff_seconds: float = 2.0
    templates_dir: str | None = None


@dataclass(frozen=True)
class Outcome:
    sent: bool
    events: tuple[Event, ...]
    error: str = ""
    fallback: bool = False


class Notifier:
    def __init__(
        self,
        settings: NotifierSettings,
        send: Callable[[smtp.SmtpSettings, EmailMessage], None] = smtp.send,
        sleep: Callable[[float], None] = time.sleep,
        host: str | None = None,
    ):
        self.settings = settings
        self._send = send
        self._sleep = sleep
        self.host = host or socket.gethostname()
        self.renderer = Renderer(settings.templates_dir)
        self.state: AlertState = state.load(settings.state_file)

    def due(self, alerts: Sequence[Alert], now: float) -> list[Event]:
        """Update the tracked alerts; the events an email should carry now."""
        current = {a.key: a for a in alerts}
        tracked = self.state.tracked
        for key, alert in current.items():
            item = tracked.get(key)
            if item is None or item.resolved_at is not None:
                tracked[key] = Tracked(alert, now)
            else:
                item.alert = alert  # fresher wording (ages), same alert
        for key, item in list(tracked.items()):
            if key not in current and item.resolved_at is None:
                if item.last_sent is None:
                    del tracked[key]  # never announced: nothing to resolve
                else:
                    item.resolved_at = now
        events = []
        repeat = self.settings.repeat_interval_seconds
        for item in tracked.values():
            if item.resolved_at is not None:
                events.append(Event(item.alert, "resolved", item.since, item.resolved_at))
            elif item.last_sent is None:
                events.append(Event(item.alert, "firing", item.since))
            elif now - item.last_sent >= repeat:
                events.append(Event(item.alert, "firing", item.since, repeat=True))
        events.sort(
            key=lambda e: (e.state != "firing", e.alert.severity != "critical", e.alert.key)
        )
        return events

    def process(self, alerts: Sequence[Alert], now: float | None = None) -> Outcome:
        """Evaluate and deliver; never raises (failures are logged and retried later)."""
        now = time.time() if now is None else now
        events = self.due(alerts, now)
        if not events:
            self._save()
            return Outcome(False, ())
        if now < self.state.next_attempt:
            self._save()
            return Outcome(False, tuple(events), "waiting before the next delivery attempt")
        rendered = self.renderer.render(events, self.host)
        message = smtp.build_message(self.settings.smtp, rendered)
        error = ""
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self._send(self.settings.smtp, message)
                error = ""
                break
            except DeliveryError as exc:
                error = str(exc)
                log.warning(
                    "alert email attempt %d/%d failed: %s", attempt, self.settings.attempts, exc
                )
                if attempt < self.settings.attempts:
                    self._sleep(self.settings.backoff_seconds * 2 ** (attempt - 1))
            except Exception as exc:  # noqa: BLE001 - mail must never take the service down
                error = f"{type(exc).__name__}: {exc}"
                log.exception("alert email failed unexpectedly")
                break
        if error:
            self.state.failures += 1
            delay = min(
                self.settings.repeat_interval_seconds, 60.0 * 2 ** min(self.state.failures - 1, 10)
            )
            self.state.next_attempt = now + delay
            log.error("alert email not delivered (next try in %.0f s): %s", delay, error)
            self._save()
            return Outcome(False, tuple(events), error, rendered.fallback)
        self.state.failures = 0
        self.state.next_attempt = 0.0
        for event in events:
            item = self.state.tracked.get(event.alert.key)
            if item is None:
                continue
            if event.state == "resolved":
                del self.state.tracked[event.alert.key]
            else:
                item.last_sent = now
        self._save()
        return Outcome(True, tuple(events), "", rendered.fallback)

    def _save(self) -> None:
        try:
            state.save(self.settings.state_file, self.state)
        except AlertError as exc:
            log.error("%s", exc)
