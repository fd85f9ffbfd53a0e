"""An incremental index of one repository, for scrape-time metrics over large catalogs.

Manifests and result records never change once written (a manifest is the commit mark, a
record is hash-chained), so each is read once and kept until its key disappears. Folder
listings are incremental: on a filesystem a folder whose mtime has not changed is not listed
again; on S3 only the keys after the newest known ones are listed (ids and WAL names sort by
time), with a full listing every ``full_listing_seconds`` to see deletions, and whenever a
WAL gap appears (so a segment stored out of order by parallel pushes is never reported
missing). The WAL continuity is counted with binary searches over sorted segment numbers.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pgproof.backups import catalog, compression, walnames, walverify
from pgproof.backups.errors import BackupError, CatalogError, ObjectNotFound
from pgproof.backups.jobstatus import JobStatus
from pgproof.backups.kinds import KINDS
from pgproof.backups.layout import (
    backups_prefix,
    job_status_key,
    results_prefix,
    wal_prefix,
    wal_verified_key,
)
from pgproof.backups.storage.base import Repository
from pgproof.exporters.folders import Change, Folder
from pgproof.exporters.model import BackupInfo, RecordSummary, RepoSnapshot, TargetView, WalView
from pgproof.verifier import records

READ_THREADS = 8
_T = TypeVar("_T")  # names re-listed before the newest known (parallel pushes land unordered)


@dataclass
class _Wal:
    folder: Folder
    segment_size: int = walnames.DEFAULT_SEGMENT_SIZE
    segment_names: set[str] = field(default_factory=set)  # bare names (no .zst)
    by_timeline: dict[int, list[int]] = field(default_factory=dict)
    histories: dict[int, list[walnames.HistoryEntry]] = field(default_factory=dict)
    newest_mtime: tuple[str, float | None] | None = None
    counted: tuple[object, walnames.ContinuityCount] | None = None
    version: int = 0

    def rebuild(self, segment_size: int) -> None:
        self.segment_size = segment_size
        self.by_timeline = {}
        for name in self.segment_names:
            tli, segno = walnames.parse_segment_name(name, segment_size)
            self.by_timeline.setdefault(tli, []).append(segno)
        for values in self.by_timeline.values():
            values.sort()
        self.version += 1


@dataclass
class _TargetState:
    target: str
    backups_folder: Folder
    results_folder: Folder
    wal: _Wal
    pending: set[str] = field(default_factory=set)
    corrupt: dict[str, str] = field(default_factory=dict)
    records: dict[str, RecordSummary] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, tuple[tuple[int, float], JobStatus]] = field(default_factory=dict)
    wal_verified: tuple[tuple[int, float], dict[str, str]] | None = None
    infos: dict[str, BackupInfo] = field(default_factory=dict)  # complete backups
    changes: int = 0  # bumped whenever backups or records change
    backups_view: tuple[object, tuple[BackupInfo, ...], tuple[RecordSummary, ...]] | None = None


def _strip_zst(name: str) -> str:
    return name[: -len(compression.ZSTD_SUFFIX)] if name.endswith(compression.ZSTD_SUFFIX) else name


class RepoIndex:
    """Everything the metrics need from one repository, for the given targets."""

    def __init__(
        self,
        repo: Repository,
        targets: Sequence[str],
        full_listing_seconds: float = 300.0,
    ):
        self.repo = repo
        self.full_every = full_listing_seconds
        self._states = {
            t: _TargetState(
                t,
                Folder(backups_prefix(t), deep=True),
                Folder(results_prefix(t)),
                _Wal(Folder(wal_prefix(t))),
            )
            for t in targets
        }

    # -- refreshing ------------------------------------------------------------------------
    def refresh(self) -> RepoSnapshot:
        """A snapshot of the repository now; ``up`` False (and nothing else) when it fails."""
        began = time.monotonic()
        try:
            self.repo.probe()
            views = {
                name: self._refresh_target(state, began) for name, state in self._states.items()
            }
        except (BackupError, OSError) as exc:  # OSError: a backend failing below StorageError
            return RepoSnapshot(
                self.repo.name, False, time.time(), time.monotonic() - began, str(exc)
            )
        return RepoSnapshot(self.repo.name, True, time.time(), time.monotonic() - began, "", views)

    def _refresh_target(self, st: _TargetState, now: float) -> TargetView:
        self._refresh_backups(st, now)
        self._refresh_results(st, now)
        self._refresh_jobs(st)
        self._refresh_wal_verified(st)
        wal_error = ""
        try:
            wal = self._refresh_wal(st, now)
        except (ValueError, UnicodeDecodeError, CatalogError) as exc:
            wal, wal_error = None, f"cannot read the WAL archive: {exc}"
        key = (len(st.infos), st.changes)
        if st.backups_view is None or st.backups_view[0] != key:
            st.backups_view = (
                key,
                tuple(st.infos[i] for i in sorted(st.infos)),
                tuple(sorted(st.records.values(), key=lambda r: (r.finished, r.id))),
            )
        _, backups, records = st.backups_view
        return TargetView(
            st.target,
            backups,
            len(st.pending),
            tuple(sorted(st.corrupt)),
            records,
            tuple(sorted(st.invalid)),
            {kind: status for kind, (_, status) in st.jobs.items()},
            wal,
            wal_error,
            st.wal_verified[1] if st.wal_verified else {},
        )

    def _refresh_backups(self, st: _TargetState, now: float) -> None:
        change = st.backups_folder.update(self.repo, now, self.full_every)
        added, removed = change.added, change.removed
        if added or removed:
            st.changes += 1
        for name in removed:
            backup_id = name.rstrip("/")
            st.infos.pop(backup_id, None)
            st.pending.discard(backup_id)
            st.corrupt.pop(backup_id, None)
        st.pending.update(
            n.rstrip("/") for n in added if n.endswith("/") and n.rstrip("/") not in st.infos
        )
        todo = sorted(st.pending | set(st.corrupt))
        for backup_id, outcome in zip(todo, self._map(self._read_manifest(st), todo), strict=True):
            if outcome is None:
                continue  # no manifest yet (a job running, or leftovers)
            if isinstance(outcome, str):
                st.pending.discard(backup_id)
                st.corrupt[backup_id] = outcome
                continue
            st.pending.discard(backup_id)
            st.corrupt.pop(backup_id, None)
            st.infos[backup_id] = BackupInfo.of(outcome)
            st.changes += 1
        change.commit()

    def _map(self, fn: Callable[[str], _T], items: Sequence[str]) -> list[_T]:
        """``fn`` over ``items``, in parallel when there are many and each is a request
        (the first index of a large S3 repository reads thousands of small objects)."""
        if len(items) < 8 or self.repo.listing_is_cheap:
            return [fn(i) for i in items]
        with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
            return list(pool.map(fn, items))

    def _read_manifest(self, st: _TargetState) -> Callable[[str], catalog.Manifest | str | None]:
        def read(backup_id: str) -> catalog.Manifest | str | None:
            """The manifest; None when there is none (yet); the error when unreadable."""
            try:
                return catalog.read_manifest(self.repo, st.target, backup_id)
            except ObjectNotFound:
                return None  # not written yet, or removed since the listing
            except CatalogError as exc:
                return str(exc)

        return read

    def _refresh_results(self, st: _TargetState, now: float) -> None:
        change = st.results_folder.update(self.repo, now, self.full_every)
        added, removed = change.added, change.removed
        if added or removed:
            st.changes += 1
        for name in removed:
            st.records.pop(name, None)
            st.invalid.pop(name, None)
        todo = [n for n in added if n.endswith(".json") and n not in st.records]

        def read(name: str) -> RecordSummary | str | None:
            key = st.results_folder.prefix + name
            try:
                stored = records.parse_stored(key, self.repo.read_bytes(key))
            except ObjectNotFound:
                return None  # deleted since the listing
            if stored.record is None:
                return f"{key}: {stored.problem}"
            try:
                return RecordSummary.of(stored.record)
            except ValueError as exc:
                return f"{key}: {exc}"

        for name, outcome in zip(todo, self._map(read, todo), strict=True):
            if isinstance(outcome, RecordSummary):
                st.records[name] = outcome
            elif isinstance(outcome, str):
                st.invalid[name] = outcome
        change.commit()

    def _refresh_jobs(self, st: _TargetState) -> None:
        for kind in KINDS:
            key = job_status_key(st.target, kind)
            info = self.repo.head(key)
            if info is None:
                st.jobs.pop(kind, None)
                continue
            stamp = (info.size, info.mtime)
            if kind in st.jobs and st.jobs[kind][0] == stamp:
                continue
            try:
                st.jobs[kind] = (stamp, JobStatus.from_json(self.repo.read_bytes(key)))
            except ObjectNotFound:
                st.jobs.pop(kind, None)
            except (ValueError, KeyError, TypeError):
                st.jobs.pop(kind, None)

    def _refresh_wal_verified(self, st: _TargetState) -> None:
        """The bad copies `check` found, read again only when its document changed."""
        info = self.repo.head(wal_verified_key(st.target))
        if info is None:
            st.wal_verified = None
            return
        stamp = (info.size, info.mtime)
        if st.wal_verified is not None and st.wal_verified[0] == stamp:
            return
        state = walverify.read_state(self.repo, st.target)
        st.wal_verified = (stamp, dict(state.corrupt)) if state else None

    def _segment_size(self, st: _TargetState) -> int:
        for b in st.infos.values():
            if b.kind == "physical":
                return b.wal_segment_size
        return walnames.DEFAULT_SEGMENT_SIZE

    def _refresh_wal(self, st: _TargetState, now: float) -> WalView:
        w = st.wal
        self._apply_wal(st, w.folder.update(self.repo, now, self.full_every))
        count = self._count(st)
        if count.missing and not self.repo.listing_is_cheap and w.folder.listed_at != now:
            # confirm a gap with a full listing before reporting it
            self._apply_wal(st, w.folder.update(self.repo, now, self.full_every, force_full=True))
            count = self._count(st)
        newest_name: str | None = None
        timelines = [t for t, v in w.by_timeline.items() if v]
        if timelines:
            latest = max(timelines)
            newest_name = walnames.segment_name(latest, w.by_timeline[latest][-1], w.segment_size)
        mtime: float | None = None
        if newest_name is not None:
            if w.newest_mtime is not None and w.newest_mtime[0] == newest_name:
                mtime = w.newest_mtime[1]
            else:
                info = self.repo.head(w.folder.prefix + newest_name + compression.ZSTD_SUFFIX)
                info = info or self.repo.head(w.folder.prefix + newest_name)
                mtime = info.mtime if info else None
                w.newest_mtime = (newest_name, mtime)
        return WalView(
            segments=len(w.segment_names),
            newest=newest_name,
            newest_mtime=mtime,
            first=count.first,
            missing=count.missing + len(count.missing_history),
            first_missing=count.missing_history + count.first_missing,
            problems=count.problems,
        )

    def _apply_wal(self, st: _TargetState, change: Change) -> None:
        w = st.wal
        added, removed = change.added, change.removed
        size = self._segment_size(st)
        changed = False
        gone = {_strip_zst(n) for n in removed}
        for name in gone:
            if name in w.segment_names:
                w.segment_names.discard(name)
                changed = True
            elif name.endswith(".history"):
                w.histories.pop(walnames.timeline_of(name), None)
                w.version += 1
        if changed or size != w.segment_size:
            w.rebuild(size)
            changed = False
        for stored in added:
            name = _strip_zst(stored)
            try:
                kind = walnames.classify(name)
            except ValueError:
                continue
            if kind is walnames.WalKind.SEGMENT:
                if name not in w.segment_names:
                    w.segment_names.add(name)
                    tli, segno = walnames.parse_segment_name(name, w.segment_size)
                    values = w.by_timeline.setdefault(tli, [])
                    if not values or segno > values[-1]:
                        values.append(segno)
                    else:
                        bisect.insort(values, segno)
                    changed = True
            elif kind is walnames.WalKind.HISTORY:
                text = self.repo.read_bytes(w.folder.prefix + stored)
                if stored.endswith(compression.ZSTD_SUFFIX):
                    text = compression.zstd_decompress_bytes(text)
                w.histories[walnames.timeline_of(name)] = walnames.parse_history(text.decode())
                w.version += 1
        if changed:
            w.version += 1
        change.commit()

    def _count(self, st: _TargetState) -> walnames.ContinuityCount:
        w = st.wal
        physical = [b for b in st.infos.values() if b.kind == "physical" and b.start_wal]
        start = None
        if physical:
            oldest = min(physical, key=lambda b: (b.started, b.id))
            start = walnames.parse_segment_name(oldest.start_wal or "", w.segment_size)
        key = (w.version, start, w.segment_size)
        if w.counted is not None and w.counted[0] == key:
            return w.counted[1]
        count = walnames.count_continuity(w.by_timeline, w.histories, start, w.segment_size)
        w.counted = (key, count)
        return count
