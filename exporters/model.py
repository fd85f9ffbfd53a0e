"""What the exporter knows about one repository at one moment: plain frozen values.

A ``RepoSnapshot`` is built by ``exporters.index`` and read by the collectors and by the
alert conditions; nothing in it is time-relative (ages are computed when read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backups import catalog, walnames
from backups.errors import CatalogError
from backups.jobstatus import JobStatus

PHASES = ("fetch", "restore", "recovery", "checks", "total")


@dataclass(frozen=True)
class BackupInfo:
    """What the metrics need of a manifest (the index keeps this, not whole manifests)."""

    id: str
    kind: str
    started: float  # unix seconds
    finished: float
    size: int
    start_wal: str | None = None  # physical: where WAL continuity is checked from
    wal_segment_size: int = walnames.DEFAULT_SEGMENT_SIZE

    @classmethod
    def of(cls, m: catalog.Manifest) -> BackupInfo:
        return cls(
            m.id,
            m.kind,
            m.started.timestamp(),
            m.finished.timestamp(),
            m.size,
            m.start_wal,
            m.wal_segment_size,
        )


@dataclass(frozen=True)
class RecordSummary:
    """The parts of a restore-test result record the metrics and alerts use."""

    id: str
    backup_id: str
    kind: str
    verdict: str  # passed | failed | error
    finished: float
    phases: Mapping[str, float]
    rpo_seconds: float | None
    checks_failed: int
    cause: str

    @classmethod
    def parse(cls, raw: Any) -> RecordSummary:
        """ValueError unless ``raw`` is a result record with the fields named in DESIGN.md."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        verdict = raw.get("verdict")
        if verdict not in ("passed", "failed", "error"):
            raise ValueError(f"verdict {verdict!r} is not passed, failed or error")
        kind = raw.get("kind")
        if kind not in ("logical", "physical"):
            raise ValueError(f"kind {kind!r} is not logical or physical")
        for key in ("id", "backup_id", "finished_at"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ValueError(f"{key} is missing")
        phases_raw = raw.get("phases") or {}
        if not isinstance(phases_raw, dict):
            raise ValueError("phases is not an object")
        phases = {
            str(k): float(v)
            for k, v in phases_raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        checks = raw.get("checks") or []
        if not isinstance(checks, list):
            raise ValueError("checks is not a list")
        failed = sum(
            1 for c in checks if isinstance(c, dict) and c.get("verdict") in ("failed", "error")
        )
        rpo = raw.get("rpo_seconds")
        try:
            finished = catalog.parse_utc(raw["finished_at"]).timestamp()
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            id=raw["id"],
            backup_id=raw["backup_id"],
            kind=kind,
            verdict=verdict,
            finished=finished,
            phases=phases,
            rpo_seconds=float(rpo) if isinstance(rpo, int | float) else None,
            checks_failed=failed,
            cause=str(raw.get("cause") or "")[:500],
        )


@dataclass(frozen=True)
class WalView:
    segments: int
    newest: str | None  # name of the newest segment (highest timeline, then position)
    newest_mtime: float | None  # when it was stored
    first: str | None  # where continuity is checked from (the oldest physical backup's start)
    missing: int
    first_missing: tuple[str, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class TargetView:
    """One target as seen in one repository."""

    target: str
    backups: tuple[BackupInfo, ...]  # complete ones, oldest first
    incomplete: int  # folders without a manifest (a job running, or leftovers)
    corrupt: tuple[str, ...]  # backup ids whose manifest is unreadable
    records: tuple[RecordSummary, ...]  # oldest first
    invalid_records: tuple[str, ...]  # keys of records that could not be read
    jobs: Mapping[str, JobStatus]
    wal: WalView | None  # None when the archive could not be read
    wal_error: str = ""
    # bad WAL copies the last `check` found here (segment -> problem; backups.walverify)
    wal_corrupt: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RepoSnapshot:
    repository: str
    up: bool
    taken_at: float  # unix seconds when the refresh finished
    duration: float
    error: str = ""
    targets: Mapping[str, TargetView] = field(default_factory=dict)
