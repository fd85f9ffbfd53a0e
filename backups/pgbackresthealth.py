"""``pgproof check`` of a pgBackRest stanza, without restoring (pgBackRest run through
backups.pgbackrest; its verify output read by backups.pgbackrestverify)."""

from __future__ import annotations

import datetime as dt

from pgproof.backups import walnames
from pgproof.backups.catalog import utc_iso
from pgproof.backups.errors import SourceError
from pgproof.backups.health import HealthReport, RepoReport
from pgproof.backups.pgbackrest import PgBackRest, references, types, where
from pgproof.backups.pgbackrestverify import VerifyResult, located
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings


def health(
    settings: PgBackRestSettings,
    runner: Runner,
    target: str,
    max_backup_age_seconds: float,
    now: dt.datetime | None = None,
    verify: bool = True,
) -> HealthReport:
    """``pgproof check`` of a pgBackRest stanza, without restoring: its backups as pgBackRest
    lists them, the newest one's age, each backup's WAL within the archived range, and (with
    ``verify``) ``pgbackrest verify`` over every backup file and archived segment."""
    now = now or dt.datetime.now(dt.UTC)
    named = where(settings)
    report = RepoReport(named, settings.config or "pgBackRest's default config")
    problems: list[str] = []
    with PgBackRest(settings, runner) as tool:
        try:
            info = tool.info()
        except SourceError as exc:
            report.reachable = False
            return HealthReport(target, [report], [f"{named}: {exc}"], utc_iso(now))
        checked: VerifyResult | SourceError | None = None
        if verify:
            try:
                checked = tool.verify(timeout=24 * 3600)
            except SourceError as exc:
                checked = exc
    for b in info.backups:
        report.backups.append(
            {
                "id": b.label,
                "kind": "physical",
                "type": b.type,
                "state": "complete",
                "size_bytes": b.stored,
                "database_bytes": b.size,
                "started_at": utc_iso(b.started),
                "finished_at": utc_iso(b.finished),
                "start_wal": b.start_wal,
                "stop_wal": b.stop_wal,
            }
        )
        if b.error:
            problems.append(f"{named}: backup {b.label}: pgBackRest found page checksum errors")
    ranges = {a.db_id: a for a in info.archives}
    for b in info.backups:
        archived = ranges.get(b.db_id)
        last = archived.last if archived else None
        if b.stop_wal and not walnames.archive_reaches(last, b.stop_wal):
            problems.append(
                f"{named}: backup {b.label}: its WAL up to {b.stop_wal} is not archived "
                f"(the archive ends at {archived.last if archived else 'nothing'})"
            )
    if info.archives:
        report.wal = {"first": info.archives[0].first, "last": info.archives[-1].last}
    if not info.backups:
        problems.append(f"{named}: no backup")
    else:
        age = (now - info.backups[-1].finished).total_seconds()
        if age > max_backup_age_seconds:
            problems.append(
                f"{named}: the newest backup {info.backups[-1].label} is {age / 3600:.1f} h old "
                f"(limit {max_backup_age_seconds / 3600:.1f} h)"
            )
    if isinstance(checked, SourceError):
        problems.append(f"{named}: {checked}")
    elif checked is not None and not checked.ok:
        where_bad = located(checked, references(info), types(info))
        if where_bad:  # each bad file once, with the sets it holds back
            problems += [f"{named}: pgbackrest verify: {said}" for said in where_bad]
        else:
            problems.append(f"{named}: pgbackrest verify: {' '.join(checked.report.split())}")
    report.problems = problems
    return HealthReport(target, [report], problems, utc_iso(now))
