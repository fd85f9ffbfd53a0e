"""Audit reports: what was restored, when, how it was checked, and whether the record of it
can be trusted (the hash chain). One self-contained HTML file (inline CSS and SVG, no script,
autoescaped) and the same facts as JSON.

Per target: the chain verdict, the last verified backup, the recoverable window (oldest
physical backup's end to the newest archived WAL, with any gap), restore-test charts (phases
per test = measured RTO, RPO, verdicts), then every restore test, failures first, each check
with its evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from pgproof.backups import catalog, foreign, health
from pgproof.backups.runner import Runner
from pgproof.backups.settings import ForeignSettings, TargetSettings
from pgproof.backups.storage.base import Repository
from pgproof.verifier import chain, records, signing, svgcharts

REPORT_FORMAT = 1
HTML_LIMIT = 500  # restore tests listed per target in the HTML (the JSON has them all)
_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@dataclass(frozen=True)
class TargetInput:
    name: str
    repos: Sequence[Repository]
    max_backup_age_seconds: float = 26 * 3600
    foreign: ForeignSettings | None = None  # backups another tool makes (listed by it)


def inputs(targets: Sequence[TargetSettings], repos: Sequence[Repository]) -> list[TargetInput]:
    """Each target with its opened repositories (``repos``: every configured one)."""
    by_name = {r.name: r for r in repos}
    return [
        TargetInput(
            t.name,
            [by_name[r.name] for r in t.repositories],
            t.max_backup_age_seconds,
            t.foreign,
        )
        for t in targets
    ]


def _records(copies: chain.Copies, trust: signing.Trust | None) -> list[dict[str, Any]]:
    """Every record of the target (the first repository's copy wins), with its sha256, the
    repositories holding it and who signed it (when the config trusts keys)."""
    found: dict[str, dict[str, Any]] = {}
    for repo, stored in copies.items():
        for rec in stored:
            if rec.id in found:
                found[rec.id]["repositories"].append(repo)
                continue
            if rec.record is not None:
                data = rec.record.to_dict()
            else:
                data = _unreadable(rec)
            data["sha256"] = rec.sha256
            data["repositories"] = [repo]
            if trust is not None:
                found_sig = signing.check(rec.record, rec.payload, trust.keys)
                data["signed_by"] = {"state": found_sig.state, "detail": found_sig.detail}
            found[rec.id] = data
    return sorted(found.values(), key=lambda d: str(d.get("id")))


def _unreadable(rec: chain.ChainRecord) -> dict[str, Any]:
    """A record that does not read, shown as what it is (the chain check names it too):
    every field of the model, at its default or empty."""
    doc: dict[str, Any] = {}
    for f in dataclasses.fields(records.ResultRecord):
        if f.default is not dataclasses.MISSING:
            doc[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            doc[f.name] = f.default_factory()
        else:
            doc[f.name] = ""
    return {
        **doc,
        "pitr": {},
        "backup": {},
        "id": rec.id,
        "verdict": "error",
        "cause": f"unreadable record: {rec.problem}",
    }


def _window(target: TargetInput, now: dt.datetime) -> dict[str, Any]:
    if target.foreign is not None:  # the backups are where the tool keeps them
        report = foreign.health(
            target.foreign, Runner(), target.name, target.max_backup_age_seconds, now, False
        )
    else:
        report = health.check(target.name, target.repos, target.max_backup_age_seconds, False, now)
    out: dict[str, Any] = {"repositories": {}, "problems": report.problems}
    froms, tos = [], []
    for repo in report.repositories:
        physical = [
            b for b in repo.backups if b.get("kind") == "physical" and b.get("state") == "complete"
        ]
        logical = [
            b for b in repo.backups if b.get("kind") == "logical" and b.get("state") == "complete"
        ]
        wal = repo.wal or {}
        entry = {
            "reachable": repo.reachable,
            "physical_backups": len(physical),
            "logical_backups": len(logical),
            "oldest_physical_end": min((b["finished_at"] for b in physical), default=None),
            "newest_logical_end": max((b["finished_at"] for b in logical), default=None),
            "wal_first": wal.get("first"),
            "wal_last": wal.get("last"),
            "wal_newest_archived_at": wal.get("newest_archived_at"),
            "wal_missing": len(wal.get("missing", [])),
        }
        out["repositories"][repo.repository] = entry
        if target.foreign is not None and entry["oldest_physical_end"]:
            # the tool's listing has the backups' ends, not the archive's newest time: the
            # window reaches at least the newest backup's end
            froms.append(entry["oldest_physical_end"])
            tos.append(max(b["finished_at"] for b in physical))
        elif (
            entry["oldest_physical_end"]
            and entry["wal_newest_archived_at"]
            and not entry["wal_missing"]
        ):
            froms.append(entry["oldest_physical_end"])
            # the WAL up to the backup's end is archived before its manifest is written
            tos.append(max(entry["wal_newest_archived_at"], entry["oldest_physical_end"]))
    out["from"] = min(froms, default=None)  # point-in-time recovery possible from ...
    out["to"] = max(tos, default=None)  # ... to the newest archived WAL
    return out


def _sort_key_failures_first(rec: dict[str, Any]) -> tuple[int, str]:
    return (0 if rec.get("verdict") != "passed" else 1, _neg(str(rec.get("finished_at", ""))))


def _neg(text: str) -> str:
    """A key that sorts ISO timestamps newest first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def build_target(
    target: TargetInput, now: dt.datetime, trust: signing.Trust | None = None
) -> dict[str, Any]:
    copies, errors = chain.read_copies(target.repos, target.name)  # read once: chain + records
    recs = _records(copies, trust)
    problems = chain.verify_copies(
        copies, trust.keys if trust else None, trust.unsigned_before if trust else None
    )
    checked = len(recs)
    passed = [r for r in recs if r.get("verdict") == "passed"]
    last = max(passed, key=lambda r: str(r.get("finished_at", "")), default=None)
    verified = None
    if last is not None:
        pitr = last.get("pitr") or {}
        verified = {
            "backup_id": last.get("backup_id"),
            "kind": last.get("kind"),
            "result_id": last.get("id"),
            "finished_at": last.get("finished_at"),
            "reached_time": pitr.get("reached_time"),
            "reached_lsn": pitr.get("reached_lsn"),
            "rto_seconds": (last.get("phases") or {}).get("total"),
            "rpo_seconds": last.get("rpo_seconds"),
        }
    counts = {
        v: sum(1 for r in recs if r.get("verdict") == v) for v in ("passed", "failed", "error")
    }
    return {
        "target": target.name,
        "chain": {
            "records": checked,
            "intact": not problems and not errors,
            "problems": [str(p) for p in problems],
            "unreadable_repositories": errors,
        },
        "last_verified_backup": verified,
        "recoverable_window": _window(target, now),
        "summary": {"tests": len(recs), **counts},
        "unreadable_repositories": errors,
        "results": sorted(recs, key=_sort_key_failures_first),
        "history": [  # oldest first, for the charts
            {
                "id": r.get("id"),
                "kind": r.get("kind"),
                "verdict": r.get("verdict"),
                "finished_at": r.get("finished_at"),
                "phases": r.get("phases") or {},
                "rpo_seconds": r.get("rpo_seconds"),
            }
            for r in recs
        ],
    }


def build(
    targets: Sequence[TargetInput],
    version: str,
    now: dt.datetime | None = None,
    trust: signing.Trust | None = None,
) -> dict[str, Any]:
    """The report; ``trust``: the keys signatures are checked against (None: not checked)."""
    now = now or dt.datetime.now(dt.UTC)
    return {
        "format": REPORT_FORMAT,
        "generated_at": catalog.utc_iso(now),
        "pgproof_version": version,
        "signatures": "checked" if trust is not None else "not checked",
        "targets": [build_target(t, now, trust) for t in targets],
    }


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env


def _charts(target: dict[str, Any]) -> dict[str, str]:
    history = target["history"][-200:]
    label = [f"{h['finished_at']} {h['kind']} {h['id']}" for h in history]
    return {
        "phases": svgcharts.stacked_phases(
            "restore-test duration per phase (measured RTO)",
            [(lab, h["phases"]) for lab, h in zip(label, history, strict=True)],
        ),
        "rpo": svgcharts.line(
            "RPO per restore test",
            [
                (lab, float(h["rpo_seconds"]))
                for lab, h in zip(label, history, strict=True)
                if isinstance(h.get("rpo_seconds"), int | float)
            ],
        ),
        "verdicts": svgcharts.verdicts(
            "verdict history",
            [(lab, str(h["verdict"])) for lab, h in zip(label, history, strict=True)],
        ),
    }


def render_html(model: dict[str, Any], links: bool = False) -> str:
    """``links``: served over HTTP, where each result also has its own page and JSON."""
    charts = {t["target"]: _charts(t) for t in model["targets"]}
    return (
        _env()
        .get_template("report.html.j2")
        .render(report=model, charts=charts, limit=HTML_LIMIT, links=links)
    )


def render_result_html(target: str, record: dict[str, Any]) -> str:
    return _env().get_template("result.html.j2").render(target=target, r=record)


def to_json(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True, default=str) + "\n"
