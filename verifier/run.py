"""One restore test, start to finish: choose the backup, restore it into a sandbox, check it,
and store the result record (chained) in every repository of the target."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from backups import catalog, pgbin
from backups.errors import BackupError
from backups.progress import NullProgress, Progress
from backups.runner import Runner
from backups.settings import TargetSettings
from backups.storage.base import Repository
from verifier import checks, records
from verifier.containersettings import ContainerSettings
from verifier.errors import (
    EngineUnavailable,
    RestoreFailed,
    SandboxError,
    TargetError,
    VerifierError,
)
from verifier.isolation import sandbox_runner
from verifier.records import CheckResult, ResultRecord
from verifier.sandbox import ProcessSandbox, Sandbox, reap_leftovers
from verifier.settings import VerifierSettings


@dataclass(frozen=True)
class VerifyRequest:
    target: TargetSettings
    kind: catalog.Kind
    backup_id: str | None = None  # None: the newest complete backup of the kind
    pitr: str | None = None  # physical: "latest", "random", "immediate" or a timestamp
    custom_checks: tuple[tuple[str, str], ...] = ()
    settings: VerifierSettings = field(default_factory=VerifierSettings)  # verifier:, whole
    image: str | None = None  # the target's own image (container sandbox)

    @property
    def container(self) -> ContainerSettings | None:
        """None: the process sandbox."""
        return self.settings.container_for(self.image)


SandboxFactory = Callable[[int, Runner], Sandbox]  # (the backup's major, runner)


def process_sandbox(settings: VerifierSettings, pg_bin_dir: str | None = None) -> SandboxFactory:
    """This machine's binaries of the backup's major version."""
    return lambda major, runner: ProcessSandbox(
        pgbin.find(major, runner, pg_bin_dir),
        runner,
        settings.workdir,
        settings.memory_mb,
        settings.address_space_mb,
    )


def container_sandbox(settings: ContainerSettings, root: str | None) -> SandboxFactory:
    """A throwaway container of the image for the backup's major version."""
    from verifier.container import ContainerSandbox

    return lambda major, runner: ContainerSandbox(settings, major, runner, root)


def sandbox_factory_for(request: VerifyRequest) -> SandboxFactory:
    if request.container is not None:
        return container_sandbox(request.container, request.settings.workdir)
    return process_sandbox(request.settings, request.target.pg_bin_dir)


def reap(root: str | None, container: ContainerSettings | None) -> list[str]:
    """Remove what killed runs left behind: containers first (their servers may still be
    writing into their directories), then sandbox directories. EngineUnavailable when the
    container sandbox is configured and no engine answers."""
    removed: list[str] = []
    if container is not None:
        from verifier.container import reap as reap_containers

        removed += reap_containers(container)
    return removed + reap_leftovers(root)


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str) -> _Phase:
        return _Phase(self, name)


@dataclass(frozen=True)
class RestoreJob:
    """Everything one restore test works with (logical or physical)."""

    request: VerifyRequest
    repos: Sequence[Repository]  # every repository of the target (WAL may come from any)
    repo: Repository  # the one the backup is read from
    manifest: catalog.Manifest
    sandbox: Sandbox
    runner: Runner
    timer: Timer
    record: ResultRecord
    progress: Progress


class _Phase:
    def __init__(self, timer: Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        self.timer.phases[self.name] = round(self.timer.phases.get(self.name, 0) + elapsed, 3)


def choose_backup(
    repos: Sequence[Repository], target: str, kind: str, backup_id: str | None
) -> tuple[Repository, catalog.Manifest]:
    """The backup to test and the repository to read it from (local ones first)."""
    ordered = sorted(repos, key=lambda r: r.kind != "filesystem")
    found: list[tuple[Repository, catalog.Manifest]] = []
    problems = []
    for repo in ordered:
        try:
            manifests = catalog.complete_manifests(catalog.scan(repo, target))
        except BackupError as exc:
            problems.append(str(exc))
            continue
        for m in manifests:
            if m.kind == kind and (backup_id is None or m.id == backup_id):
                found.append((repo, m))
    if not found:
        what = f"backup {backup_id}" if backup_id else f"complete {kind} backup"
        where = f" ({'; '.join(problems)})" if problems else ""
        raise TargetError(f"no {what} of target {target!r} in any repository{where}")
    newest = max(m.finished_at for _, m in found)
    return next((r, m) for r, m in found if m.finished_at == newest)


def verify(
    request: VerifyRequest,
    repos: Sequence[Repository],
    runner: Runner,
    version: str,
    progress: Progress | None = None,
    sandbox_factory: SandboxFactory | None = None,
) -> ResultRecord:
    """Run one restore test and store its record; the record is returned either way."""
    progress = progress or NullProgress()
    factory = sandbox_factory or sandbox_factory_for(request)
    started = dt.datetime.now(dt.UTC)
    repo, manifest = choose_backup(repos, request.target.name, request.kind, request.backup_id)
    if manifest.kind == "physical" and (request.pitr or "latest") != "random":
        from verifier import pitr

        pitr.choose(request.pitr or "latest", manifest.finished, None)  # TargetError: usage
    record = ResultRecord(
        id=records.new_result_id(request.target.name, started),
        target=request.target.name,
        backup_id=manifest.id,
        kind=manifest.kind,
        started_at=catalog.utc_iso(started),
        pg_version=manifest.pg_version,
        pgproof_version=version,
        backup={
            "repository": repo.name,
            "size_bytes": manifest.size,
            "finished_at": manifest.finished_at,
            "compression": manifest.compression,
        },
        prev_sha256=records.chain_head(repos, request.target.name),
    )
    timer = Timer()
    total_started = time.monotonic()
    try:
        reap(request.settings.workdir, request.container)
    except EngineUnavailable:
        reap_leftovers(request.settings.workdir)  # the restore test itself will report the engine
    major = manifest.pg_version_num // 10000
    record.sandbox = "process" if request.container is None else "container"
    if request.container is not None:
        record.sandbox_image = request.container.image_for(major)
    try:
        # a container cannot reach this machine's clusters: only its files are chowned
        runner = sandbox_runner(
            runner,
            request.settings.sandbox_user,
            request.settings.share_sandbox_user or request.container is not None,
        )
        sandbox = factory(major, runner)
        record.sandbox = sandbox.kind  # a factory given by the caller may differ
        with sandbox.session():
            job = RestoreJob(
                request, repos, repo, manifest, sandbox, runner, timer, record, progress
            )
            if manifest.kind == "logical":
                _logical(job)
            else:
                from verifier.physical import run_physical

                run_physical(job)
        record.verdict = record.decide()
    except RestoreFailed as exc:
        record.verdict, record.cause = "failed", str(exc)
    except (SandboxError, VerifierError, BackupError) as exc:
        record.verdict, record.cause = "error", str(exc)
    except psycopg.Error as exc:
        record.verdict, record.cause = "error", f"sandbox query failed: {str(exc).strip()[:500]}"
    except OSError as exc:  # the sandbox's disk filling up, permissions...
        record.verdict, record.cause = (
            "error",
            f"sandbox: {exc.strerror or exc}: {exc.filename or ''}",
        )
    timer.phases["total"] = round(time.monotonic() - total_started, 3)
    record.phases = timer.phases
    record.finished_at = catalog.utc_iso(dt.datetime.now(dt.UTC))
    if not record.cause and record.verdict != "passed":
        bad = [c for c in record.checks if c.verdict != "passed"]
        record.cause = "; ".join(f"{c.name}: {c.detail}" for c in bad[:3])
    failed = records.store(repos, record)
    if failed and len(failed) == len(repos):
        raise VerifierError(f"the result record could not be stored anywhere: {failed}")
    return record


def _logical(job: RestoreJob) -> None:
    from verifier import logical

    request, repo, manifest, sandbox = job.request, job.repo, job.manifest, job.sandbox
    runner, timer, record, progress = job.runner, job.timer, job.record, job.progress
    with timer.measure("fetch"):
        files, fetched = logical.fetch(repo, manifest, sandbox, runner, progress)
    record.bytes_restored = fetched
    with timer.measure("restore"):
        sandbox.initdb(superuser=manifest.superuser)
        sandbox.configure(fast=True)
        sandbox.start(timeout=120)
        restored = logical.restore(
            sandbox,
            manifest,
            files,
            runner,
            request.settings.jobs,
            request.settings.timeout_seconds,
        )
    record.rpo_seconds = round((record_started(record) - manifest.started).total_seconds(), 3)
    dbs = restored.databases
    conn_db = _conninfo_db(request.target) if _conninfo_db(request.target) in dbs else "postgres"
    with timer.measure("checks"):
        results: list[CheckResult] = [checks.restore_errors(restored.errors, restored.ignored)]
        if restored.missing:
            # the sandbox lacks what production has: nothing restored can be judged
            record.checks = results
            raise SandboxError(
                f"the sandbox lacks {', '.join(restored.missing)} (PostgreSQL {sandbox.major}); "
                f"install it where the sandbox runs: {len(restored.errors)} restore errors "
                f"follow from it, first: {restored.errors[0][:300]}"
            )
        for name, body in (
            ("row_counts", functools.partial(checks.row_counts, sandbox, manifest)),
            (
                "database_properties",
                functools.partial(checks.database_properties, sandbox, manifest),
            ),
            ("roles", functools.partial(checks.roles, sandbox, manifest)),
        ):
            results.append(checks.guarded(name, body))
        results.append(amcheck_check(request, sandbox, dbs))
        # No "readable" here: row_counts just read every table in full (sequential scans of
        # freshly loaded tables), so a pg_dump of what pg_restore wrote would prove nothing more.
        results += custom_checks(request, sandbox, conn_db)
    record.checks = results


def amcheck_check(
    request: VerifyRequest, sandbox: Sandbox, restored: Sequence[str] | None = None
) -> CheckResult:
    """pg_amcheck as the request configures it (``restored``: see checks.amcheck)."""
    return checks.guarded(
        "amcheck",
        functools.partial(
            checks.amcheck,
            sandbox,
            request.settings.heapallindexed,
            request.settings.jobs,
            request.settings.timeout_seconds,
            restored,
        ),
    )


def custom_checks(request: VerifyRequest, sandbox: Sandbox, dbname: str) -> list[CheckResult]:
    return [
        checks.guarded(
            f"custom:{name}", functools.partial(checks.custom, sandbox, name, query, dbname)
        )
        for name, query in request.custom_checks
    ]


def record_started(record: ResultRecord) -> dt.datetime:
    return catalog.parse_utc(record.started_at)


def _conninfo_db(target: TargetSettings) -> str:
    from psycopg import conninfo

    try:
        return str(conninfo.conninfo_to_dict(target.source.conninfo).get("dbname") or "postgres")
    except Exception:  # noqa: BLE001 - validated at config load; fall back quietly
        return "postgres"
