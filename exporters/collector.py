"""The Prometheus metrics (names and labels: DESIGN.md), computed when scraped."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgproof.exporters.exporter import Exporter
from pgproof.exporters.model import PHASES, RepoSnapshot
from pgproof.exporters.settings import AlertLimits
from pgproof.exporters.status import TargetStatus

P = "pgproof_"


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, labels=labels)


class PgproofCollector(Collector):
    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        ex = self.exporter
        now = ex.clock()
        snapshots = ex.snapshots()
        statuses = list(ex.statuses(snapshots))
        yield from _build_info(ex)
        yield from _repositories(ex, snapshots)
        yield from _sources(ex, statuses)
        yield from _backups(statuses, now)
        yield from _wal(statuses)
        yield from _restore_tests(statuses)
        yield from _limits(ex)
        yield from _errors(ex)


def _build_info(ex: Exporter) -> Iterator[Metric]:
    info = _gauge("build_info", "pgproof's version (always 1).", ["version"])
    info.add_metric([ex.version], 1)
    yield info


def _repositories(ex: Exporter, snapshots: Mapping[str, RepoSnapshot]) -> Iterator[Metric]:
    up = _gauge("repository_up", "1 when the repository answered its last refresh.", ["repository"])
    refreshed = _gauge(
        "repository_refresh_timestamp_seconds",
        "When the repository's values were last read successfully.",
        ["repository"],
    )
    duration = _gauge(
        "repository_refresh_duration_seconds",
        "How long the last refresh of the repository took.",
        ["repository"],
    )
    for name, snap in sorted(snapshots.items()):
        up.add_metric([name], 1 if snap.up else 0)
        duration.add_metric([name], snap.duration)
        good = ex.last_good_refresh(name)
        if good is not None:
            refreshed.add_metric([name], good)
    yield up
    yield refreshed
    yield duration


def _sources(ex: Exporter, statuses: Sequence[TargetStatus]) -> Iterator[Metric]:
    src_up = _gauge("source_up", "1 when the source database answered this scrape.", ["target"])
    ready = _gauge(
        "source_wal_ready_files",
        "WAL files waiting to be archived (.ready in pg_wal/archive_status).",
        ["target"],
    )
    failed = CounterMetricFamily(
        "pgproof_source_archiver_failed",
        "pg_stat_archiver.failed_count: failed archive_command attempts since the stats reset.",
        labels=["target"],
    )
    failed_old = _gauge(
        "source_archiver_failed_count",
        "Deprecated (removed in the next release): pgproof_source_archiver_failed_total.",
        ["target"],
    )
    last_archived = _gauge(
        "source_archiver_last_archived_timestamp_seconds",
        "pg_stat_archiver.last_archived_time.",
        ["target"],
    )
    last_failed = _gauge(
        "source_archiver_last_failed_timestamp_seconds",
        "pg_stat_archiver.last_failed_time.",
        ["target"],
    )
    exported = {t.name: t for t in ex.targets}
    for st in statuses:
        if exported[st.target].source is None:
            continue
        src_up.add_metric([st.target], 1 if st.source is not None else 0)
        if st.source is None:
            continue
        if st.source.ready_files is not None:
            ready.add_metric([st.target], st.source.ready_files)
        failed.add_metric([st.target], st.source.failed_count)
        failed_old.add_metric([st.target], st.source.failed_count)
        if st.source.last_archived is not None:
            last_archived.add_metric([st.target], st.source.last_archived)
        if st.source.last_failed is not None:
            last_failed.add_metric([st.target], st.source.last_failed)
    yield from (src_up, ready, failed, failed_old, last_archived, last_failed)


def _backups(statuses: Sequence[TargetStatus], now: float) -> Iterator[Metric]:
    tk = ["target", "kind"]
    last_success = _gauge(
        "backup_last_success_timestamp_seconds", "End of the newest complete backup.", tk
    )
    age = _gauge("backup_age_seconds", "Age of the newest complete backup (its end).", tk)
    size = _gauge("backup_size_bytes", "Stored size of the newest complete backup.", tk)
    took = _gauge("backup_duration_seconds", "How long the newest complete backup took.", tk)
    status = _gauge("backup_last_status", "Outcome of the last backup job: 1 ok, 0 failed.", tk)
    count = _gauge(
        "backups", "Complete backups in each repository.", ["target", "kind", "repository"]
    )
    incomplete = _gauge(
        "backups_incomplete",
        "Backup folders without a manifest (a job running, or leftovers).",
        ["target", "repository"],
    )
    corrupt = _gauge(
        "backups_corrupt", "Backups whose manifest is unreadable.", ["target", "repository"]
    )
    for st in statuses:
        for kind, ks in st.kinds.items():
            if ks.newest is not None:
                b = ks.newest
                last_success.add_metric([st.target, kind], b.finished)
                age.add_metric([st.target, kind], max(0.0, now - b.finished))
                size.add_metric([st.target, kind], b.size)
                took.add_metric([st.target, kind], max(0.0, b.finished - b.started))
            ok = ks.last_status_ok
            if ok is not None:
                status.add_metric([st.target, kind], 1 if ok else 0)
            for repo, n in sorted(ks.backups_by_repository.items()):
                count.add_metric([st.target, kind, repo], n)
        for repo, n in sorted(st.incomplete_by_repository.items()):
            incomplete.add_metric([st.target, repo], n)
        for repo, n in sorted(st.corrupt_by_repository.items()):
            corrupt.add_metric([st.target, repo], n)
    yield from (last_success, age, size, took, status, count, incomplete, corrupt)


def _wal(statuses: Sequence[TargetStatus]) -> Iterator[Metric]:
    wal_last = _gauge(
        "wal_archive_last_success_timestamp_seconds",
        "When the newest archived WAL segment was stored (in every reachable repository).",
        ["target"],
    )
    wal_missing = _gauge(
        "wal_archive_missing_segments",
        "WAL segments missing between the oldest physical backup and the newest segment "
        "(the worst repository).",
        ["target"],
    )
    wal_missing_repo = _gauge(
        "repository_wal_missing_segments",
        "WAL segments missing in this repository.",
        ["target", "repository"],
    )
    wal_segments = _gauge(
        "wal_archive_segments", "Archived WAL segments.", ["target", "repository"]
    )
    wal_corrupt = _gauge(
        "repository_wal_corrupt_segments",
        "Bad WAL copies in this repository (sha256 or page header) as the last "
        "`pgproof check` found them.",
        ["target", "repository"],
    )
    for st in statuses:
        if st.wal_newest_mtime is not None:
            wal_last.add_metric([st.target], st.wal_newest_mtime)
        if st.wal_missing is not None:
            wal_missing.add_metric([st.target], st.wal_missing)
        for repo, n in sorted(st.wal_missing_by_repository.items()):
            wal_missing_repo.add_metric([st.target, repo], n)
        for repo, n in sorted(st.wal_segments_by_repository.items()):
            wal_segments.add_metric([st.target, repo], n)
        for repo, n in sorted(st.wal_corrupt_by_repository.items()):
            wal_corrupt.add_metric([st.target, repo], n)
    yield from (wal_last, wal_missing, wal_missing_repo, wal_segments, wal_corrupt)


def _restore_tests(statuses: Sequence[TargetStatus]) -> Iterator[Metric]:
    tk = ["target", "kind"]
    rt_success = _gauge(
        "restore_test_last_success_timestamp_seconds",
        "End of the newest restore test that passed.",
        tk,
    )
    rt_status = _gauge(
        "restore_test_last_status", "Verdict of the newest restore test: 1 passed, 0 not.", tk
    )
    rt_duration = _gauge(
        "restore_test_duration_seconds",
        "Phases of the newest restore test (total = measured RTO).",
        ["target", "kind", "phase"],
    )
    rt_rpo = _gauge(
        "restore_test_rpo_seconds",
        "Measured RPO of the newest passed restore test (physical when there is one).",
        ["target"],
    )
    rt_checks = _gauge(
        "restore_test_checks_failed",
        "Checks that failed or could not run in the newest restore test.",
        tk,
    )
    rt_total = CounterMetricFamily(
        P + "restore_tests",
        "Restore-test result records in the repositories, by verdict.",
        labels=["target", "kind", "result"],
    )
    invalid = _gauge(
        "result_records_invalid",
        "Result records that could not be read (skipped).",
        ["target", "repository"],
    )
    for st in statuses:
        for kind, ks in st.kinds.items():
            if ks.last_passed_test is not None:
                rt_success.add_metric([st.target, kind], ks.last_passed_test.finished)
            last = ks.last_test
            if last is not None:
                rt_status.add_metric([st.target, kind], 1 if last.verdict == "passed" else 0)
                rt_checks.add_metric([st.target, kind], last.checks_failed)
                for phase in PHASES:
                    if phase in last.phases:
                        rt_duration.add_metric([st.target, kind, phase], last.phases[phase])
            for verdict, n in ks.tests_by_verdict.items():
                rt_total.add_metric([st.target, kind, verdict], n)
        if st.rpo_seconds is not None:
            rt_rpo.add_metric([st.target], st.rpo_seconds)
        for repo, n in sorted(st.invalid_records_by_repository.items()):
            invalid.add_metric([st.target, repo], n)
    yield from (rt_success, rt_status, rt_duration, rt_rpo, rt_checks, rt_total, invalid)


def _limits(ex: Exporter) -> Iterator[Metric]:
    """Each alert limit as a gauge of its own name (the Prometheus rules compare with it)."""
    for limit in dataclasses.fields(AlertLimits):
        family = _gauge(limit.name, limit.metadata["doc"], ["target"])
        for t in ex.targets:
            family.add_metric([t.name], getattr(t.limits, limit.name))
        yield family


def _errors(ex: Exporter) -> Iterator[Metric]:
    errors = CounterMetricFamily(
        P + "scrape_errors",
        "Errors met reading repositories, sources and result records.",
    )
    errors.add_metric([], ex.errors_total)
    yield errors


def registry(exporter: Exporter) -> CollectorRegistry:
    """A registry of its own (no process-wide default registry, no global state)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PgproofCollector(exporter))
    return reg
