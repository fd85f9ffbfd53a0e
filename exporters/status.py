"""What one target looks like across its repositories, as of ``now``: pure functions.

The collectors (metrics) and the alert conditions both read a ``TargetStatus``, so a number
on the dashboard and the email about it can never disagree. Only repositories that answered
their last refresh count; an unreachable one shows as down and contributes nothing (no stale
value is served as if fresh).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pgproof.backups.jobstatus import JobStatus
from pgproof.backups.kinds import KINDS
from pgproof.exporters.model import BackupInfo, RecordSummary, RepoSnapshot


@dataclass(frozen=True)
class ArchiverStatus:
    """The source's pg_stat_archiver and archive_status backlog, read at scrape time."""

    archive_mode: str
    archived_count: int
    failed_count: int
    last_archived: float | None  # unix seconds
    last_failed: float | None
    ready_files: int | None  # None: not allowed to list pg_wal/archive_status
    ready_error: str = ""


@dataclass(frozen=True)
class KindStatus:
    kind: str
    newest: BackupInfo | None
    backups_by_repository: Mapping[str, int]
    job: JobStatus | None  # the newest job status record seen
    last_test: RecordSummary | None
    last_passed_test: RecordSummary | None
    tests_by_verdict: Mapping[str, int]

    @property
    def last_status_ok(self) -> bool | None:
        """The last backup job's outcome: None when nothing is known."""
        if self.job is not None:
            return self.job.ok
        return True if self.newest is not None else None


@dataclass(frozen=True)
class TargetStatus:
    target: str
    repositories_up: Mapping[str, bool]
    kinds: Mapping[str, KindStatus]
    wal_newest_mtime: float | None
    wal_missing: int | None  # the worst reachable repository; None when none could tell
    wal_missing_by_repository: Mapping[str, int]
    wal_segments_by_repository: Mapping[str, int]
    wal_first_missing: tuple[str, ...]
    wal_errors: tuple[str, ...]
    rpo_seconds: float | None
    incomplete_by_repository: Mapping[str, int]
    corrupt_by_repository: Mapping[str, int]
    invalid_records_by_repository: Mapping[str, int]
    source: ArchiverStatus | None = None
    wal_corrupt_by_repository: Mapping[str, int] = field(default_factory=dict)
    source_error: str = ""
    expected_kinds: tuple[str, ...] = field(default=KINDS)

    @property
    def any_repository_up(self) -> bool:
        return any(self.repositories_up.values())


def summarize(
    target: str,
    repositories: Sequence[str],
    snapshots: Mapping[str, RepoSnapshot],
    expected_kinds: Sequence[str] = KINDS,
    source: ArchiverStatus | None = None,
    source_error: str = "",
) -> TargetStatus:
    up = {r: bool(snapshots.get(r) and snapshots[r].up) for r in repositories}
    views = {
        r: snapshots[r].targets[target]
        for r in repositories
        if up[r] and target in snapshots[r].targets
    }
    backups: dict[str, BackupInfo] = {}
    records: dict[str, RecordSummary] = {}
    jobs: dict[str, JobStatus] = {}
    for view in views.values():
        for b in view.backups:
            backups.setdefault(b.id, b)
        for rec in view.records:
            records.setdefault(rec.id, rec)
        for kind, job in view.jobs.items():
            if kind not in jobs or job.finished_at > jobs[kind].finished_at:
                jobs[kind] = job
    ordered_records = sorted(records.values(), key=lambda r: (r.finished, r.id))
    kinds: dict[str, KindStatus] = {}
    seen_kinds = {b.kind for b in backups.values()} | {r.kind for r in ordered_records}
    for kind in [k for k in KINDS if k in expected_kinds or k in seen_kinds]:
        of_kind = [b for b in backups.values() if b.kind == kind]
        tests = [r for r in ordered_records if r.kind == kind]
        passed = [r for r in tests if r.verdict == "passed"]
        verdicts = {
            v: sum(1 for r in tests if r.verdict == v) for v in ("passed", "failed", "error")
        }
        kinds[kind] = KindStatus(
            kind=kind,
            newest=max(of_kind, key=lambda b: (b.finished, b.id)) if of_kind else None,
            backups_by_repository={
                r: sum(1 for b in v.backups if b.kind == kind) for r, v in views.items()
            },
            job=jobs.get(kind),
            last_test=tests[-1] if tests else None,
            last_passed_test=passed[-1] if passed else None,
            tests_by_verdict=verdicts,
        )
    wal_views = {r: v.wal for r, v in views.items() if v.wal is not None}
    newest_each = [w.newest_mtime for w in wal_views.values() if w.newest_mtime is not None]
    worst = max(wal_views.items(), key=lambda kv: kv[1].missing, default=None)
    rpo = None
    for kind in ("physical", "logical"):  # PITR bounds data loss when there is one
        status = kinds.get(kind)
        if status and status.last_passed_test and status.last_passed_test.rpo_seconds is not None:
            rpo = status.last_passed_test.rpo_seconds
            break
    return TargetStatus(
        target=target,
        repositories_up=up,
        kinds=kinds,
        # stored in every repository: the oldest of each repository's newest segment
        wal_newest_mtime=min(newest_each) if newest_each else None,
        wal_missing=worst[1].missing if worst else None,
        wal_missing_by_repository={r: w.missing for r, w in wal_views.items()},
        wal_segments_by_repository={r: w.segments for r, w in wal_views.items()},
        wal_first_missing=worst[1].first_missing if worst else (),
        wal_errors=tuple(f"{r}: {v.wal_error}" for r, v in views.items() if v.wal_error),
        rpo_seconds=rpo,
        incomplete_by_repository={r: v.incomplete for r, v in views.items()},
        corrupt_by_repository={r: len(v.corrupt) for r, v in views.items()},
        invalid_records_by_repository={r: len(v.invalid_records) for r, v in views.items()},
        wal_corrupt_by_repository={r: len(v.wal_corrupt) for r, v in views.items()},
        source=source,
        source_error=source_error,
        expected_kinds=tuple(expected_kinds),
    )
