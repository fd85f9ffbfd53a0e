"""The exporter: repository indexes refreshed in the background, read at scrape time.

Listing a repository of 10,000 backups and 100,000 WAL segments (S3 pages, or a folder of
200,000 entries) costs more than a scrape should, so each repository's index is refreshed by a
background thread every ``refresh_seconds`` (and at once after a job, ``poke()``). A scrape
reads the newest snapshots, queries the sources' archivers over kept connections, and computes
every time-relative value (ages) at that moment. Staleness is bounded and visible:

- a refresh that fails marks the repository down (``pgproof_repository_up 0``) and its values
  are not served until a refresh succeeds again;
- a snapshot older than ``max_staleness_seconds`` (a refresh hanging on a slow S3) counts as down;
- ``pgproof_repository_refresh_timestamp_seconds`` says when each snapshot was taken.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pgproof.backups.errors import BackupError
from pgproof.backups.kinds import KINDS
from pgproof.backups.settings import ForeignSettings, SourceSettings
from pgproof.backups.storage.base import Repository
from pgproof.exporters.foreignindex import ForeignIndex
from pgproof.exporters.index import RepoIndex
from pgproof.exporters.model import RepoSnapshot
from pgproof.exporters.settings import AlertLimits, ExporterSettings
from pgproof.exporters.source import SourceProbe
from pgproof.exporters.status import ArchiverStatus, TargetStatus, summarize

log = logging.getLogger("pgproof.exporter")


@dataclass(frozen=True)
class ExportedTarget:
    name: str
    repositories: tuple[str, ...]
    source: SourceSettings | None  # None: no archiver metrics (source_up absent)
    kinds: tuple[str, ...] = KINDS  # the kinds expected (scheduled); others appear once seen
    # alert thresholds, exported so that the Prometheus rules follow the config:
    # backup_max_age_seconds, restore_test_max_age_seconds, wal_stalled_after_seconds,
    # wal_backlog_max_files
    limits: AlertLimits = AlertLimits()  # published as gauges for the Prometheus rules
    # backups another tool makes: indexed through the tool (a repository of its own name)
    foreign: ForeignSettings | None = None


class _Index(Protocol):
    def refresh(self) -> RepoSnapshot: ...


class Exporter:
    def __init__(
        self,
        targets: Sequence[ExportedTarget],
        repositories: Sequence[Repository],
        settings: ExporterSettings | None = None,
        version: str = "",
        clock: Callable[[], float] = time.time,
    ):
        self.targets = tuple(targets)
        self.settings = settings = settings or ExporterSettings()
        self.version = version
        self.clock = clock
        by_name = {r.name: r for r in repositories}
        self._indexes: dict[str, _Index] = {
            name: RepoIndex(
                repo,
                [t.name for t in self.targets if name in t.repositories],
                settings.full_listing_seconds,
            )
            for name, repo in by_name.items()
            if any(name in t.repositories for t in self.targets)
        }
        # another tool's backups: one index per source setting, named as records name it
        # (``pgbackrest:main``; ``pgbackrest:main#2`` for a second stanza of the same name)
        self._foreign: dict[str, str] = {}  # target -> its index's name
        by_settings: dict[ForeignSettings, ForeignIndex] = {}
        for t in self.targets:
            if t.foreign is None:
                continue
            if t.foreign not in by_settings:
                index = ForeignIndex(t.foreign, clock)
                while index.name in self._indexes:
                    index.name = _next_name(index.name)
                by_settings[t.foreign] = self._indexes[index.name] = index
            by_settings[t.foreign].targets.append(t.name)
            self._foreign[t.name] = by_settings[t.foreign].name
        self._probes = {
            t.name: SourceProbe(t.source, settings.source_timeout_seconds)
            for t in self.targets
            if t.source is not None
        }
        self._snapshots: dict[str, RepoSnapshot] = {}
        self._last_good: dict[str, float] = {}
        self._errors = 0
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(8, len(self._indexes))), thread_name_prefix="pgproof-refresh"
        )
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(8, len(self._probes))), thread_name_prefix="pgproof-source"
        )

    # -- background refresh -------------------------------------------------------------
    def refresh(self) -> None:
        """Refresh every repository index (in parallel); one failing never blocks the rest."""
        with self._refresh_lock:
            futures = {
                name: self._pool.submit(index.refresh) for name, index in self._indexes.items()
            }
            for name, future in futures.items():
                try:
                    snapshot = future.result()
                except Exception as exc:  # noqa: BLE001 - a bug in one index must not stop the rest
                    log.exception("refreshing repository %s failed", name)
                    snapshot = RepoSnapshot(
                        name, False, self.clock(), 0.0, f"internal error: {exc}"
                    )
                self._store(snapshot)

    def _store(self, snapshot: RepoSnapshot) -> None:
        with self._lock:
            previous = self._snapshots.get(snapshot.repository)
            if not snapshot.up:
                self._errors += 1
                if previous is None or previous.up:
                    log.warning(
                        "repository %s unreachable: %s", snapshot.repository, snapshot.error
                    )
            else:
                self._last_good[snapshot.repository] = snapshot.taken_at
                new_invalid = _invalid_keys(snapshot) - (
                    _invalid_keys(previous) if previous is not None else set()
                )
                for key in sorted(new_invalid):
                    log.warning("result record skipped: %s", key)
                self._errors += len(new_invalid)
            self._snapshots[snapshot.repository] = snapshot

    def start(self) -> None:
        """First refresh now (so the first scrape has data), then in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="pgproof-exporter", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poke(self) -> None:
        """Refresh soon (after a backup or a restore test)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.refresh_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        for probe in self._probes.values():
            probe.close()

    # -- reading --------------------------------------------------------------------------
    def snapshots(self) -> dict[str, RepoSnapshot]:
        """The usable snapshot of each repository: a stale one counts as down."""
        now = self.clock()
        with self._lock:
            out = {}
            for name, snap in self._snapshots.items():
                if snap.up and now - snap.taken_at > self.settings.max_staleness_seconds:
                    snap = RepoSnapshot(
                        name,
                        False,
                        snap.taken_at,
                        snap.duration,
                        f"no refresh for {now - snap.taken_at:.0f} s (refresh hanging?)",
                    )
                out[name] = snap
            return out

    def last_good_refresh(self, repository: str) -> float | None:
        with self._lock:
            return self._last_good.get(repository)

    @property
    def errors_total(self) -> int:
        with self._lock:
            return self._errors

    def count_error(self) -> None:
        with self._lock:
            self._errors += 1

    def read_source(self, target: str) -> tuple[ArchiverStatus | None, str]:
        probe = self._probes.get(target)
        if probe is None:
            return None, ""
        try:
            return probe.read(), ""
        except BackupError as exc:
            self.count_error()
            return None, str(exc)

    def statuses(
        self, snapshots: Mapping[str, RepoSnapshot] | None = None
    ) -> Iterator[TargetStatus]:
        """Each target's status now (from ``snapshots``, so that one scrape reads one set)."""
        snapshots = self.snapshots() if snapshots is None else snapshots
        sources: dict[str, tuple[ArchiverStatus | None, str]] = {}
        if self._probes:
            futures = {t: self._probe_pool.submit(self.read_source, t) for t in self._probes}
            sources = {t: f.result() for t, f in futures.items()}
        for t in self.targets:
            source, source_error = sources.get(t.name, (None, ""))
            names = t.repositories
            if t.name in self._foreign:
                names = (*names, self._foreign[t.name])
            yield summarize(t.name, names, snapshots, t.kinds, source, source_error)


def _next_name(name: str) -> str:
    base, _, n = name.partition("#")
    return f"{base}#{int(n or 1) + 1}"


def _invalid_keys(snapshot: RepoSnapshot) -> set[str]:
    return {f"{t}/{k}" for t, v in snapshot.targets.items() for k in v.invalid_records}
