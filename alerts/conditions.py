"""The alert conditions, as pure functions of the targets' status (the same numbers the
metrics show; the Prometheus rules in ``alerts/prometheus`` express the same conditions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgproof.exporters.settings import AlertLimits
from pgproof.exporters.status import TargetStatus

RUNBOOK = "https://github.com/pgproof/pgproof/blob/main/README.md"


@dataclass(frozen=True)
class Alert:
    name: str  # PgproofBackupTooOld ... (the Prometheus rule of the same condition)
    target: str
    kind: str  # logical | physical | "" | a repository name for repository alerts
    severity: str  # critical | warning
    summary: str
    description: str
    runbook: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.target}/{self.kind}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def evaluate(
    statuses: Sequence[TargetStatus], now: float, limits: Mapping[str, AlertLimits]
) -> list[Alert]:
    """Every alert that holds now; ``limits`` per target (the defaults for one not named)."""
    alerts: list[Alert] = []
    for st in statuses:
        found = _Found(st.target)
        target_limits = limits.get(st.target, AlertLimits())
        _repository_alerts(st, found)
        if st.any_repository_up:  # else nothing more can be told honestly
            _backup_alerts(st, now, target_limits, found)
            _restore_test_alerts(st, now, target_limits, found)
            _wal_alerts(st, now, target_limits, found)
        alerts.extend(found.alerts)
    return sorted(alerts, key=lambda a: a.key)


class _Found:
    """The alerts of one target, as the steps below find them."""

    def __init__(self, target: str):
        self.target = target
        self.alerts: list[Alert] = []

    def add(
        self, name: str, kind: str, severity: str, summary: str, description: str, anchor: str
    ) -> None:
        self.alerts.append(
            Alert(name, self.target, kind, severity, summary, description, f"{RUNBOOK}#{anchor}")
        )


def _repository_alerts(st: TargetStatus, found: _Found) -> None:
    t = st.target
    for repo, up in sorted(st.repositories_up.items()):
        if not up:
            found.add(
                "PgproofRepositoryDown",
                repo,
                "critical",
                f"{t}: repository {repo} is unreachable",
                f"pgproof could not read repository {repo!r}; backups and WAL may not be "
                "reaching it, and its values are not reported until it answers.",
                "runbook-repository-down",
            )
    if st.source_error:
        found.add(
            "PgproofSourceDown",
            "",
            "critical",
            f"{t}: source database unreachable",
            st.source_error,
            "runbook-source-down",
        )


def _backup_alerts(st: TargetStatus, now: float, limits: AlertLimits, found: _Found) -> None:
    t, max_age = st.target, limits.backup_max_age_seconds
    for kind in st.expected_kinds:
        ks = st.kinds.get(kind)
        if ks is None or ks.newest is None:
            found.add(
                "PgproofBackupMissing",
                kind,
                "critical",
                f"{t}: no complete {kind} backup",
                f"No repository of {t} holds a complete {kind} backup.",
                "runbook-backup-too-old",
            )
        elif now - ks.newest.finished > max_age:
            found.add(
                "PgproofBackupTooOld",
                kind,
                "critical",
                f"{t}: newest {kind} backup is {_duration(now - ks.newest.finished)} old",
                f"Backup {ks.newest.id} finished {_duration(now - ks.newest.finished)} ago; "
                f"the limit is {_duration(max_age)}.",
                "runbook-backup-too-old",
            )
    for kind, ks in sorted(st.kinds.items()):
        if ks.last_status_ok is False and ks.job is not None:
            found.add(
                "PgproofBackupFailed",
                kind,
                "critical",
                f"{t}: the last {kind} backup "
                + ("failed" if ks.job.status == "failed" else "missed a repository"),
                f"{kind} backup started {ks.job.started_at} on {ks.job.host or 'unknown host'}: "
                f"{ks.job.error or ks.job.status}",
                "runbook-backup-failed",
            )


def _restore_test_alerts(st: TargetStatus, now: float, limits: AlertLimits, found: _Found) -> None:
    t, max_age = st.target, limits.restore_test_max_age_seconds
    for kind, ks in sorted(st.kinds.items()):
        last = ks.last_test
        if last is not None and last.verdict != "passed":
            found.add(
                "PgproofRestoreTestFailed",
                kind,
                "critical",
                f"{t}: {kind} restore test {last.verdict.upper()}",
                f"Restore test {last.id} of backup {last.backup_id}: {last.verdict}"
                + (f": {last.cause}" if last.cause else "")
                + (f" ({last.checks_failed} checks failed)" if last.checks_failed else ""),
                "runbook-restore-test-failed",
            )
        if ks.newest is None:
            continue
        passed = ks.last_passed_test
        age = now - passed.finished if passed else None
        if age is None or age > max_age:
            found.add(
                "PgproofRestoreTestStale",
                kind,
                "warning",
                f"{t}: no passed {kind} restore test "
                + (f"for {_duration(age)}" if age is not None else "yet"),
                f"The newest passed {kind} restore test is "
                + (f"{_duration(age)} old" if age is not None else "missing")
                + f"; the limit is {_duration(max_age)}. "
                "Backups nobody restored are hopes.",
                "runbook-restore-test-stale",
            )


def _wal_alerts(st: TargetStatus, now: float, limits: AlertLimits, found: _Found) -> None:
    t, src = st.target, st.source
    if src is not None and src.ready_files:
        waited = now - src.last_archived if src.last_archived is not None else None
        if waited is None or waited > limits.wal_stalled_after_seconds:
            failing = src.last_failed is not None and (
                src.last_archived is None or src.last_failed > src.last_archived
            )
            found.add(
                "PgproofWalArchivingStalled",
                "",
                "critical",
                f"{t}: WAL archiving stalled ({src.ready_files} segments waiting)",
                f"{src.ready_files} WAL files wait in pg_wal/archive_status; the last archival "
                + (f"was {_duration(waited)} ago" if waited is not None else "never happened")
                + (f"; archive_command has failed {src.failed_count} times" if failing else "")
                + ".",
                "runbook-wal-archiving",
            )
        if src.ready_files >= limits.wal_backlog_max_files:
            found.add(
                "PgproofWalBacklog",
                "",
                "warning",
                f"{t}: {src.ready_files} WAL segments waiting to be archived",
                f"The archive backlog is {src.ready_files} files (limit "
                f"{limits.wal_backlog_max_files}); pg_wal grows and the RPO with it.",
                "runbook-wal-archiving",
            )
    if st.wal_missing:
        names = ", ".join(st.wal_first_missing[:5])
        found.add(
            "PgproofWalGap",
            "",
            "critical",
            f"{t}: {st.wal_missing} WAL segments missing from the archive",
            f"Point-in-time recovery cannot cross the gap; first missing: {names}. "
            "Take a new physical backup now.",
            "runbook-wal-gap",
        )


def by_key(alerts: Sequence[Alert]) -> dict[str, Alert]:
    return {a.key: a for a in alerts}
