"""``list`` and ``check``: what is in the repositories, and whether it is whole and fresh.

``check`` re-reads every file of every complete backup and compares size and sha256 with the
manifest, every stored WAL copy (sha256 and page header, remembered once intact; see
``walverify``), checks WAL continuity from the oldest physical backup's start to the newest
archived segment (across timeline switches), checks freshness against the maximum age, and
that every backup is in every repository. Problems name the repository, backup and file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pgproof.backups import catalog, keyusage, walarchive, walnames, walverify
from pgproof.backups.errors import BackupError, KeyUnavailable
from pgproof.backups.layout import results_prefix
from pgproof.backups.storage.base import Repository


@dataclass
class RepoReport:
    repository: str
    location: str
    reachable: bool = True
    backups: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    wal: dict[str, Any] = field(default_factory=dict)
    encryption: dict[str, Any] = field(default_factory=dict)  # objects per master key id
    problems: list[str] = field(default_factory=list)


@dataclass
class HealthReport:
    target: str
    repositories: list[RepoReport]
    problems: list[str]
    checked_at: str

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out


def describe_backup(m: catalog.Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "kind": m.kind,
        "state": "complete",
        "size_bytes": m.size,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "duration_seconds": round(m.duration_seconds, 3),
        "pg_version": m.pg_version,
        "compression": m.compression,
        "files": len(m.files),
    }
    if m.kind == "physical":
        out.update(start_lsn=m.start_lsn, stop_lsn=m.stop_lsn, timeline=m.timeline)
    else:
        out["databases"] = [d.name for d in m.databases]
    return out


def verify_file(repo: Repository, key: str, expected: catalog.BackupFile) -> str | None:
    """None when the stored object has the manifest's size and sha256, else the problem."""
    try:
        for _chunk in catalog.read_checked(repo, key, expected):
            pass
    except catalog.FileMismatch as exc:
        if exc.truncated:
            return (
                f"size {exc.found_size} bytes, manifest says {exc.expected_size} "
                "(truncated or replaced)"
            )
        return "sha256 does not match the manifest (corrupted)"
    except BackupError as exc:
        return str(exc)
    return None


def _check_repo(
    repo: Repository,
    target: str,
    verify_data: bool,
    on_file: Callable[[str], None] | None,
) -> tuple[RepoReport, list[catalog.Manifest]]:
    report = RepoReport(repo.name, repo.describe())
    manifests: list[catalog.Manifest] = []
    try:
        entries = catalog.scan(repo, target)
    except KeyUnavailable as exc:  # it answers; this host cannot read its manifests
        report.problems.append(str(exc))
        return report, manifests
    except BackupError as exc:
        report.reachable = False
        report.problems.append(f"repository {repo.name!r} unreachable: {exc}")
        return report, manifests
    for entry in entries:
        if entry.error:
            report.problems.append(f"{repo.name}: backup {entry.id}: {entry.error}")
            report.backups.append({"id": entry.id, "state": "corrupt", "error": entry.error})
            continue
        if entry.manifest is None:
            report.incomplete.append(entry.id)
            continue
        m = entry.manifest
        manifests.append(m)
        desc = describe_backup(m)
        bad = []
        prefix = catalog.backup_prefix(target, m.id)
        for f in m.files:
            if on_file:
                on_file(f"{repo.name}:{m.id}/{f.name}")
            key = prefix + f.name
            if verify_data:
                problem = verify_file(repo, key, f)
            elif key not in entry.keys:
                problem = "missing"
            else:
                problem = None
            if problem:
                bad.append(f.name)
                report.problems.append(f"{repo.name}: backup {m.id}: file {f.name}: {problem}")
        if bad:
            desc["state"] = "damaged"
            desc["damaged_files"] = bad
        report.backups.append(desc)
    return report, manifests


def _check_wal(
    repo: Repository,
    target: str,
    manifests: Sequence[catalog.Manifest],
    report: RepoReport,
    verify_data: bool,
    now: dt.datetime,
    on_file: Callable[[str], None] | None,
) -> None:
    physical = [m for m in manifests if m.kind == "physical" and m.start_wal]
    seg_size = physical[0].wal_segment_size if physical else walnames.DEFAULT_SEGMENT_SIZE
    try:
        listing = walarchive.list_archive(repo, target, seg_size)
        histories = {
            tli: walnames.parse_history(repo.read_bytes(key).decode())
            for tli, key in listing.histories.items()
        }
    except (BackupError, ValueError, UnicodeDecodeError) as exc:
        report.problems.append(f"{repo.name}: cannot read the WAL archive: {exc}")
        return
    start = None
    if physical:
        oldest = min(physical, key=lambda m: m.started_at)
        start = walnames.parse_segment_name(oldest.start_wal or "", seg_size)
    result = walnames.check_continuity(set(listing.segments), histories, start, seg_size)
    report.wal = {
        "segments": len(listing.segments),
        "timelines": list(result.timelines),
        "first": result.first,
        "last": result.last,
        "missing": list(result.missing),
        "missing_history": list(result.missing_history),
        "newest_archived_at": (
            catalog.utc_iso(dt.datetime.fromtimestamp(listing.newest_mtime, dt.UTC))
            if listing.newest_mtime
            else None
        ),
    }
    if physical and not listing.segments:
        report.problems.append(f"{repo.name}: no WAL archived, physical backups cannot be restored")
    for name in result.missing:
        report.problems.append(f"{repo.name}: WAL segment {name} is missing from the archive")
    for name in result.missing_history:
        report.problems.append(f"{repo.name}: timeline history file {name} is missing")
    for problem in result.problems:
        report.problems.append(f"{repo.name}: WAL: {problem}")
    if verify_data:
        _verify_copies(repo, target, manifests, listing, seg_size, report, now, on_file)
    last_segno = walnames.parse_segment_name(result.last, seg_size)[1] if result.last else -1
    for m in physical:
        if m.stop_wal and walnames.parse_segment_name(m.stop_wal, seg_size)[1] > last_segno:
            report.problems.append(
                f"{repo.name}: backup {m.id} needs WAL up to {m.stop_wal}, archive ends at "
                f"{result.last}"
            )


def _verify_copies(
    repo: Repository,
    target: str,
    manifests: Sequence[catalog.Manifest],
    listing: walarchive.ArchiveListing,
    seg_size: int,
    report: RepoReport,
    now: dt.datetime,
    on_file: Callable[[str], None] | None,
) -> None:
    """Every WAL copy in this repository: stored sha256 and page header; what was found is
    stored in the repository (copies found intact are not read again while unchanged)."""
    sysids = frozenset(int(m.system_identifier) for m in manifests if m.system_identifier)
    state = walverify.read_state(repo, target)
    memory = state.copies if state else {}
    try:
        found = walverify.verify_archive(repo, listing.objects, seg_size, sysids, memory, on_file)
    except BackupError as exc:
        report.problems.append(f"{repo.name}: cannot read the WAL archive's copies: {exc}")
        return
    report.wal.update(
        copies_read=found.verified,
        copies_remembered=found.remembered,
        corrupt=sorted(found.corrupt),
    )
    try:
        walverify.write_state(
            repo,
            target,
            walverify.WalVerified(catalog.utc_iso(now), found.memory, found.corrupt),
        )
    except BackupError as exc:  # costs a re-read next time, hides nothing
        report.wal["state_error"] = str(exc)
    for name, problem in sorted(found.corrupt.items()):
        report.problems.append(f"{repo.name}: WAL segment {name}: {problem}")


def _check_locks(
    repo: Repository, target: str, manifests: Sequence[catalog.Manifest], report: RepoReport
) -> None:
    """Object Lock in force on every backup file, manifest, archived segment and record of
    the target (one HEAD each); those without are named (unlocked, or their lock expired
    while they are still kept: object_lock's days shorter than what retention keeps)."""
    try:
        repo.require_locks()
    except BackupError as exc:
        report.problems.append(str(exc))
        return
    keys = []
    for m in manifests:
        prefix = catalog.backup_prefix(target, m.id)
        keys += [prefix + f.name for f in m.files] + [prefix + catalog.MANIFEST_NAME]
    seg = manifests[0].wal_segment_size if manifests else walnames.DEFAULT_SEGMENT_SIZE
    try:
        keys += sorted(walarchive.list_archive(repo, target, seg).segments.values())
        keys += [i.key for i in repo.listing(results_prefix(target))]
        unlocked = [k for k in keys if repo.locked_until(k) is None]
    except BackupError as exc:
        report.problems.append(f"{repo.name}: cannot read the objects' locks: {exc}")
        return
    if unlocked:
        report.problems.append(
            f"{repo.name}: {len(unlocked)} of {len(keys)} backup, WAL and record objects have "
            f"no Object Lock in force (unlocked, or locked for fewer days than they are kept), "
            f"first: {', '.join(unlocked[:3])}"
        )


def check(
    target: str,
    repos: Sequence[Repository],
    max_age_seconds: float,
    verify_data: bool = True,
    now: dt.datetime | None = None,
    on_file: Callable[[str], None] | None = None,
) -> HealthReport:
    now = now or dt.datetime.now(dt.UTC)
    reports: list[RepoReport] = []
    problems: list[str] = []
    all_ids: dict[str, set[str]] = {}
    newest: dict[str, catalog.Manifest] = {}
    for repo in repos:
        report, manifests = _check_repo(repo, target, verify_data, on_file)
        if report.reachable:
            _check_wal(repo, target, manifests, report, verify_data, now, on_file)
            if repo.locks and verify_data:
                _check_locks(repo, target, manifests, report)
            if repo.encrypted:
                read_all = not report.problems and "copies_read" in report.wal
                usage = keyusage.check_keys(repo, target, verify_data, read_all)
                report.encryption = usage.summary
                report.problems += usage.problems
            all_ids[repo.name] = {m.id for m in manifests}
        for m in manifests:
            if m.kind not in newest or m.finished > newest[m.kind].finished:
                newest[m.kind] = m
        reports.append(report)
        problems += report.problems
    union = set().union(*all_ids.values()) if all_ids else set()
    for name, ids in all_ids.items():
        for backup_id in sorted(union - ids):
            problems.append(f"{name}: backup {backup_id} is missing from this repository")
    if not newest:
        problems.append(f"target {target!r} has no complete backup")
    for kind, m in sorted(newest.items()):
        age = (now - m.finished).total_seconds()
        if age > max_age_seconds:
            problems.append(
                f"newest {kind} backup {m.id} is {span(age)} old (maximum {span(max_age_seconds)})"
            )
    return HealthReport(target, reports, problems, catalog.utc_iso(now))


def span(seconds: float) -> str:
    """A duration as people read it: 45 s, 12 min, 3.5 h, 2.1 d."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
