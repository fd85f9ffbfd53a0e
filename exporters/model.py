"""What the exporter knows about one repository at one moment: plain frozen values.

A ``RepoSnapshot`` is built by ``exporters.index`` and read by the collectors and by the
alert conditions; nothing in it is time-relative (ages are computed when read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pgproof.backups import catalog, walnames
from pgproof.backups.errors import CatalogError
from pgproof.backups.jobstatus import JobStatus
from pgproof.verifier.records import ResultRecord

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
    def of(cls, record: ResultRecord) -> RecordSummary:
        """ValueError when the record's finished_at is not a timestamp."""
        try:
            finished = catalog.parse_utc(record.finished_at).timestamp()
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            id=record.id,
            backup_id=record.backup_id,
            kind=record.kind,
            verdict=record.verdict,
            finished=finished,
            phases=dict(record.phases),
            rpo_seconds=record.rpo_seconds,
            checks_failed=sum(1 for c in record.checks if c.verdict != "passed"),
            cause=record.cause[:500],
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
