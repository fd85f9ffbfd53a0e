"""Email text from jinja2 templates (text and HTML, autoescaped), with a plain-text fallback.

A template that fails to render (a user's own template with a typo, an undefined name) never
drops the alert: the message is built from the same facts by plain Python and the error is
logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2

from pgproof.alerts.conditions import Alert

log = logging.getLogger("pgproof.alerts")
_PACKAGE_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@dataclass(frozen=True)
class Event:
    alert: Alert
    state: str  # firing | resolved
    since: float
    resolved_at: float | None = None
    repeat: bool = False


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None  # None when only the plain-text fallback could be made
    fallback: bool = False


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def subject_of(events: Sequence[Event]) -> str:
    firing = [e for e in events if e.state == "firing"]
    resolved = [e for e in events if e.state == "resolved"]
    head = []
    if firing:
        head.append(f"FIRING {len(firing)}")
    if resolved:
        head.append(f"RESOLVED {len(resolved)}")
    first = (firing or resolved)[0].alert.summary if events else "no change"
    more = f" (+{len(events) - 1} more)" if len(events) > 1 else ""
    return f"[pgproof] {', '.join(head)}: {first}{more}"


def plain_text(events: Sequence[Event], host: str) -> str:
    lines = [f"pgproof on {host}", ""]
    for title, state in (("Firing", "firing"), ("Resolved", "resolved")):
        group = [e for e in events if e.state == state]
        if not group:
            continue
        lines.append(f"{title}:")
        for e in group:
            a = e.alert
            lines.append(f"- [{a.severity}] {a.summary}")
            lines.append(f"  {a.description}")
            lines.append(
                f"  since {_when(e.since)}"
                + (f", resolved {_when(e.resolved_at)}" if e.resolved_at else "")
            )
            lines.append(f"  runbook: {a.runbook}")
        lines.append("")
    return "\n".join(lines)


class Renderer:
    def __init__(self, templates_dir: str | None = None):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir:
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(jinja2.FileSystemLoader(_PACKAGE_TEMPLATES))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(["html", "html.j2"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when

    def render(self, events: Sequence[Event], host: str) -> Rendered:
        context = {
            "events": list(events),
            "firing": [e for e in events if e.state == "firing"],
            "resolved": [e for e in events if e.state == "resolved"],
            "host": host,
        }
        try:
            subject = self.env.get_template("subject.txt.j2").render(context).strip()
            text = self.env.get_template("body.txt.j2").render(context)
            html = self.env.get_template("body.html.j2").render(context)
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
            log.error("alert template failed, sending plain text instead: %s", exc)
            return Rendered(subject_of(events), plain_text(events, host), None, fallback=True)
        return Rendered(" ".join(subject.split())[:250], text, html)
