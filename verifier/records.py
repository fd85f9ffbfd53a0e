"""Restore-test result records: one JSON document per run, hash-chained per target.

Each record carries ``prev_sha256``: the sha256 of the previous record of the same target
(the exact bytes stored), so editing, removing or inserting a record breaks the chain
(``pgproof report --verify-chain``). Records are written to every repository of the target
under ``<target>/results/<result-id>.json``; a restore test never writes anything else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from backups.errors import BackupError
from backups.layout import results_prefix
from backups.storage.base import Repository

Verdict = Literal["passed", "failed", "error"]
RECORD_FORMAT = 1


@dataclass
class CheckResult:
    name: str
    verdict: Verdict
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResultRecord:
    id: str
    target: str
    backup_id: str
    kind: str
    started_at: str
    finished_at: str = ""
    verdict: Verdict = "error"
    cause: str = ""
    pitr: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    rpo_seconds: float | None = None
    bytes_restored: int = 0
    pg_version: str = ""
    sandbox: str = ""
    sandbox_image: str = ""  # the container sandbox's image
    pgproof_version: str = ""
    backup: dict[str, Any] = field(default_factory=dict)
    prev_sha256: str | None = None
    format: int = RECORD_FORMAT

    def decide(self) -> Verdict:
        """passed only when every check ran and passed; failed beats error."""
        if self.cause and self.verdict in ("failed", "error"):
            return self.verdict
        verdicts = {c.verdict for c in self.checks}
        if not self.checks:
            return "error"
        if "failed" in verdicts:
            return "failed"
        if "error" in verdicts:
            return "error"
        return "passed"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"


def new_result_id(target: str, now: dt.datetime | None = None) -> str:
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{moment:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class StoredRecord:
    key: str
    sha256: str
    data: dict[str, Any]


def with_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored record with every field the current format has: a record written by an older
    pgproof lacks the newer ones (e.g. ``sandbox_image``), which then read as their default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ResultRecord):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    out.update(doc)
    return out


def load_records(repo: Repository, target: str) -> list[StoredRecord]:
    """Every readable record of ``target`` in ``repo``, in id (= time) order."""
    out = []
    for info in sorted(repo.listing(results_prefix(target)), key=lambda i: i.key):
        if not info.key.endswith(".json"):
            continue
        raw = repo.read_bytes(info.key)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"unreadable": True}
        out.append(StoredRecord(info.key, hashlib.sha256(raw).hexdigest(), doc))
    return out


def chain_head(repos: Sequence[Repository], target: str) -> str | None:
    """sha256 of the newest record of the target (from the first readable repository)."""
    for repo in repos:
        try:
            records = load_records(repo, target)
        except BackupError:
            continue
        return records[-1].sha256 if records else None
    return None


def store(repos: Sequence[Repository], record: ResultRecord) -> dict[str, str]:
    """Write the record to every repository; returns {repository: error} for failures."""
    data = record.to_json()
    key = f"{results_prefix(record.target)}{record.id}.json"
    failed: dict[str, str] = {}
    for repo in repos:
        try:
            repo.put_bytes(key, data, {"sha256": hashlib.sha256(data).hexdigest()})
        except BackupError as exc:
            failed[repo.name] = str(exc)
    return failed
