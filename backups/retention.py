"""Retention: which backups and WAL may go, decided by pure rules, then applied per repository.

Kept, per kind: the newest ``full_backups`` backups, minus those older than ``max_age_days``,
but never fewer than ``min_backups``, and always the newest backup that last passed a
restore test and every backup a restore test holds a lease on (backups.leases). WAL older
than the start of the oldest kept physical backup may go; timeline history files always
stay; with no physical backup kept, no WAL is removed. The files of a backup without a
manifest (an interrupted backup's leftovers) go, unless another repository of the target
holds that backup complete: then a manifest was lost here (deleted by a bucket writer?)
and the files are reported, not deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from pgproof.backups import catalog, leases, walarchive, walnames
from pgproof.backups.errors import BackupError
from pgproof.backups.settings import RetentionSettings
from pgproof.backups.storage.base import ObjectInfo, Repository


@dataclass(frozen=True)
class RetentionPlan:
    repository: str
    keep: tuple[str, ...]
    delete_backups: tuple[str, ...]
    delete_incomplete: tuple[str, ...]
    delete_wal: tuple[str, ...]
    wal_horizon: str | None  # oldest segment kept
    reasons: dict[str, str] = field(default_factory=dict)
    # what the policy lets go but Object Lock keeps for now: {backup id or WAL range: why}
    locked: dict[str, str] = field(default_factory=dict)
    # kept whatever the policy says while a restore test holds a lease: {backup id: by whom}
    leased: dict[str, str] = field(default_factory=dict)
    # files without a manifest here whose backup is complete elsewhere: {backup id: where}
    complete_elsewhere: dict[str, str] = field(default_factory=dict)


def choose_backups(
    manifests: Iterable[catalog.Manifest],
    settings: RetentionSettings,
    protected: Set[str],
    now: dt.datetime,
) -> tuple[list[catalog.Manifest], dict[str, str]]:
    """(kept manifests, {deleted id: reason}); pure."""
    kept: list[catalog.Manifest] = []
    reasons: dict[str, str] = {}
    by_kind: dict[str, list[catalog.Manifest]] = {}
    for m in manifests:
        by_kind.setdefault(m.kind, []).append(m)
    for group in by_kind.values():
        group.sort(key=lambda m: m.finished, reverse=True)  # newest first
        for index, m in enumerate(group):
            why = None
            if settings.full_backups is not None and index >= settings.full_backups:
                why = f"beyond the newest {settings.full_backups} {m.kind} backups"
            elif settings.max_age_days is not None:
                age = now - m.finished
                if age > dt.timedelta(days=settings.max_age_days):
                    why = f"older than {settings.max_age_days:g} days"
            if why and index < settings.min_backups:
                why = None
            if why and m.id in protected:
                why = None
            if why:
                reasons[m.id] = why
            else:
                kept.append(m)
    return kept, reasons


def wal_horizon(kept: Iterable[catalog.Manifest]) -> tuple[int, int] | None:
    """(timeline, segno) of the oldest kept physical backup's start, or None."""
    starts = [
        (walnames.parse_segment_name(m.start_wal, m.wal_segment_size)[1], m)
        for m in kept
        if m.kind == "physical" and m.start_wal
    ]
    if not starts:
        return None
    segno, oldest = min(starts, key=lambda s: s[0])
    return walnames.parse_segment_name(oldest.start_wal or "", oldest.wal_segment_size)[0], segno


@dataclass(frozen=True)
class Across:
    """What retention of one repository must know of the target's others."""

    leased: dict[str, str]  # {backup id: "holder until ..."} of every unexpired lease
    complete_in: dict[str, str]  # {backup id: a repository that holds it complete}
    unreadable: dict[str, str]  # {repository: why} of those that could not be read
    # {repository: its catalog as read here}: plan() reads each repository once
    entries: dict[str, list[catalog.CatalogEntry]] = field(default_factory=dict)

    def where(self, backup_id: str) -> str | None:
        """Why a backup's files without a manifest must stay, or None when they may go."""
        if backup_id in self.complete_in:
            return f"complete in repository {self.complete_in[backup_id]}"
        if self.unreadable:
            names = ", ".join(sorted(self.unreadable))
            return f"perhaps complete in repository {names}, which could not be read"
        return None


def across(
    repos: Iterable[Repository],
    target: str,
    now: dt.datetime | None = None,
    longest_lease: float | None = None,
) -> Across:
    """The leases of every repository of ``target`` (none running more than
    ``longest_lease`` seconds ahead) and where each backup is complete."""
    now = now or dt.datetime.now(dt.UTC)
    leased: dict[str, str] = {}
    complete_in: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    entries: dict[str, list[catalog.CatalogEntry]] = {}
    for repo in repos:
        try:
            for lease in leases.active(repo, target, now, longest_lease):
                leased[lease.backup_id] = (
                    f"under restore test by {lease.holder} (lease until {lease.expires_at})"
                )
            entries[repo.name] = catalog.scan(repo, target)
        except BackupError as exc:
            unreadable[repo.name] = str(exc)
            continue
        for m in catalog.complete_manifests(entries[repo.name]):
            complete_in.setdefault(m.id, repo.name)
    return Across(leased, complete_in, unreadable, entries)


def plan(
    repo: Repository,
    target: str,
    settings: RetentionSettings,
    protected: Set[str] = frozenset(),
    now: dt.datetime | None = None,
    others: Across | None = None,
) -> RetentionPlan:
    """What to delete in ``repo``; ``protected``: backup ids kept whatever the policy says
    (the caller's: pgproof keeps the newest backup of each kind that passed a restore test);
    ``others``: the leases of the target's repositories (their backups are kept too) and
    where backups are complete (their leftovers here are reported, not deleted)."""
    leased = others.leased if others is not None else {}
    now = now or dt.datetime.now(dt.UTC)
    known = others.entries.get(repo.name) if others is not None else None
    entries = known if known is not None else catalog.scan(repo, target)
    manifests = catalog.complete_manifests(entries)
    kept, reasons = choose_backups(manifests, settings, protected, now)
    held = {i: leased[i] for i in reasons if i in leased}  # kept by the lease alone
    kept += [m for m in manifests if m.id in held]
    reasons = {i: why for i, why in reasons.items() if i not in held}
    leftovers = [e.id for e in entries if not e.complete and e.error is None]
    elsewhere = {i: w for i in leftovers if others is not None and (w := others.where(i))}
    incomplete = tuple(i for i in leftovers if i not in elsewhere)
    horizon = wal_horizon(kept)
    delete_wal: list[str] = []
    horizon_name = None
    if horizon is not None:
        seg_size = next(m.wal_segment_size for m in kept if m.kind == "physical")
        horizon_name = walnames.segment_name(horizon[0], horizon[1], seg_size)
        listing = walarchive.list_archive(repo, target, seg_size)
        delete_wal = [key for (_, segno), key in listing.segments.items() if segno < horizon[1]]
        for key in listing.others:  # .backup / .partial files wholly before the horizon
            name = key.rsplit("/", 1)[-1]
            try:
                segno = walnames.parse_segment_name(name[:24], seg_size)[1]
            except ValueError:
                continue
            if segno < horizon[1]:
                delete_wal.append(key)
    return RetentionPlan(
        repo.name,
        tuple(m.id for m in kept),
        tuple(sorted(reasons)),
        incomplete,
        tuple(sorted(delete_wal)),
        horizon_name,
        reasons,
        leased=held,
        complete_elsewhere=elsewhere,
    )


def hold_locked(repo: Repository, target: str, p: RetentionPlan) -> RetentionPlan:
    """The plan without what Object Lock still protects, each said with its date. A backup
    is held while its manifest is locked (written last, it is locked longest); WAL
    segments were written in name order, so the first locked one is found by bisection and
    every later one is held with it."""
    if not repo.locks:
        return p
    locked: dict[str, str] = {}
    backups = []
    for backup_id in p.delete_backups:
        until = repo.locked_until(catalog.backup_prefix(target, backup_id) + catalog.MANIFEST_NAME)
        if until is not None:
            locked[backup_id] = f"locked until {catalog.utc_iso(until)} (Object Lock)"
        else:
            backups.append(backup_id)
    incomplete = []
    for backup_id in p.delete_incomplete:  # no manifest: its newest file is locked longest
        files = sorted(repo.listing(catalog.backup_prefix(target, backup_id)), key=_mtime)
        until = repo.locked_until(files[-1].key) if files else None
        if until is not None:
            locked[backup_id] = f"incomplete, locked until {catalog.utc_iso(until)} (Object Lock)"
        else:
            incomplete.append(backup_id)
    wal = sorted(p.delete_wal, key=lambda k: k.rsplit("/", 1)[-1])
    lo, hi = 0, len(wal)  # the first locked segment is at hi, locked until ``until``
    until = None
    while lo < hi:
        mid = (lo + hi) // 2
        mid_until = repo.locked_until(wal[mid])
        if mid_until is None:
            lo = mid + 1
        else:
            hi, until = mid, mid_until
    if hi < len(wal):
        when = catalog.utc_iso(until) if until else "now"
        first, last = wal[hi].rsplit("/", 1)[-1], wal[-1].rsplit("/", 1)[-1]
        locked[f"WAL {first[:24]}..{last[:24]} ({len(wal) - hi} files)"] = (
            f"locked until {when} or later (Object Lock)"
        )
    return dataclasses.replace(
        p,
        delete_backups=tuple(backups),
        delete_incomplete=tuple(incomplete),
        delete_wal=tuple(wal[:hi]),
        locked=locked,
    )


def _mtime(info: ObjectInfo) -> float:
    return info.mtime


def apply(repo: Repository, target: str, p: RetentionPlan) -> None:
    """Delete what the plan says: manifests first (a half-deleted backup is never 'complete')."""
    for backup_id in p.delete_backups + p.delete_incomplete:
        prefix = catalog.backup_prefix(target, backup_id)
        manifest_key = prefix + catalog.MANIFEST_NAME
        repo.delete([manifest_key])
        repo.delete([i.key for i in repo.listing(prefix)])
    repo.delete(p.delete_wal)
