"""One restore test, start to finish: choose the backup, restore it into a sandbox (the
logical or the physical restore test), and store the result record (chained) in every
repository of the target."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pgproof.backups import catalog, ids, leases, pgbin
from pgproof.backups.errors import BackupError, KeyUnavailable
from pgproof.backups.kinds import Kind
from pgproof.backups.progress import NullProgress, Progress
from pgproof.backups.runner import Runner
from pgproof.backups.storage.base import Repository
from pgproof.verifier import exhaustion, records, signing
from pgproof.verifier.containersettings import ContainerSettings
from pgproof.verifier.errors import (
    DamagedBackup,
    EngineUnavailable,
    NoBackup,
    RepositoryUnavailable,
    RestoreFailed,
    SandboxError,
    SandboxExhausted,
    VerifierError,
)
from pgproof.verifier.isolation import sandbox_runner
from pgproof.verifier.job import Findings, Origin, RestoreJob, Timer, VerifyRequest
from pgproof.verifier.logical import run_logical
from pgproof.verifier.physical import run_physical
from pgproof.verifier.processsandbox import ProcessSandbox
from pgproof.verifier.records import BackupRef, ResultRecord
from pgproof.verifier.sandbox import Sandbox, reap_leftovers
from pgproof.verifier.settings import VerifierSettings
from pgproof.verifier.verdicts import Verdict

SandboxFactory = Callable[[int, Runner], Sandbox]  # (the backup's major, runner)
RestoreTest = Callable[[RestoreJob], None]  # restores into job.sandbox, adds to job.findings
RESTORE_TESTS: Mapping[Kind, RestoreTest] = {"logical": run_logical, "physical": run_physical}


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
    from pgproof.verifier.container import ContainerSandbox

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
        from pgproof.verifier.engine import reap as reap_containers

        removed += reap_containers(container)
    return removed + reap_leftovers(root)


def choose_backup(
    repos: Sequence[Repository], target: str, kind: str, backup_id: str | None
) -> tuple[Repository, catalog.Manifest]:
    """The backup to test and the repository to read it from (local ones first).

    A manifest that exists and cannot be read (unparsable, another backup's, does not
    authenticate) in every repository holding the backup is damage, never "no backup":
    DamagedBackup when it is the named backup or newer than every intact one of its kind
    (else "latest" would quietly test an older backup)."""
    ordered = sorted(repos, key=lambda r: r.kind != "filesystem")
    found: list[tuple[Repository, catalog.Manifest]] = []
    damaged: list[tuple[Repository, catalog.CatalogEntry]] = []
    problems, keyless = [], []
    for repo in ordered:
        try:
            entries = catalog.scan(repo, target)
        except KeyUnavailable as exc:
            keyless.append(str(exc))
            continue
        except BackupError as exc:
            problems.append(str(exc))
            continue
        for m in catalog.complete_manifests(entries):
            if m.kind == kind and (backup_id is None or m.id == backup_id):
                found.append((repo, m))
        damaged += [
            (repo, e)
            for e in entries
            if e.damaged
            and ids.kind_of_backup_id(e.id) == kind
            and (backup_id is None or e.id == backup_id)
        ]
    intact = {m.id for _, m in found}
    newest_intact = max((m.id for _, m in found), default="")
    unreadable = [(r, e) for r, e in damaged if e.id not in intact and e.id > newest_intact]
    if unreadable:
        repo, entry = max(unreadable, key=lambda d: d[1].id)
        raise DamagedBackup(
            f"backup {entry.id}: its manifest cannot be read: {entry.error}"
            + ("" if backup_id else f" (the newest {kind} backup; older ones were not tested)"),
            kind,
            entry.id,
            repo.name,
        )
    if not found and keyless:  # backups may be there: this host cannot read them
        raise RepositoryUnavailable("; ".join(keyless + problems))
    if not found:
        what = f"backup {backup_id}" if backup_id else f"complete {kind} backup"
        where = f" ({'; '.join(problems)})" if problems else ""
        raise NoBackup(f"no {what} of target {target!r} in any repository{where}", kind, backup_id)
    newest = max(m.finished_at for _, m in found)
    return next((r, m) for r, m in found if m.finished_at == newest)


def origin_for(request: VerifyRequest, runner: Runner) -> Origin | None:
    """Where the target's backups come from when another tool makes them."""
    if request.target.foreign is None:
        return None
    from pgproof.verifier import foreign
    from pgproof.verifier.sandbox import default_root

    scratch = request.settings.workdir or default_root()
    return foreign.origin_for(request.target.foreign, runner, scratch)


def judge(
    restore: Callable[[], None],
    findings: Findings,
    limits: VerifierSettings | None = None,
    data_bytes: int | None = None,
) -> tuple[Verdict, str]:
    """Run the restore test; its verdict and cause. What stopped it decides (damage found:
    failed; anything that kept it from judging: error); else its checks do. A sandbox that
    ran out of disk, memory or file descriptors is an error naming what and where, however
    the lack showed (an exception, a server log, a check that could not finish)."""
    exhausted: exhaustion.Exhaustion | None = None
    verdict: Verdict
    try:
        restore()
    except SandboxExhausted as exc:
        assert isinstance(exc.exhausted, exhaustion.Exhaustion)
        exhausted, verdict, cause = exc.exhausted, "error", str(exc)
    except RestoreFailed as exc:
        verdict, cause = "failed", str(exc) or type(exc).__name__
    except (SandboxError, VerifierError, BackupError) as exc:
        verdict, cause = "error", str(exc) or type(exc).__name__
    except psycopg.Error as exc:
        verdict, cause = "error", f"sandbox query failed: {str(exc).strip()[:500]}"
    except OSError as exc:  # the sandbox's disk filling up, permissions...
        exhausted = exhaustion.from_os_error(exc)
        verdict, cause = "error", f"sandbox: {exc.strerror or exc}: {exc.filename or ''}"
    else:
        verdict = records.decide(findings.checks)
        cause = "" if verdict == "passed" else records.cause_of(findings.checks)
        lacking = {
            i: e
            for i, c in enumerate(findings.checks)
            if c.verdict != "passed" and (e := exhaustion.find(c.detail)) is not None
        }
        if lacking:  # a check that could not finish for lack of room: not damage
            exhausted = next(iter(lacking.values()))
            findings.checks = [
                dataclasses.replace(c, verdict="error") if i in lacking else c
                for i, c in enumerate(findings.checks)
            ]
    if verdict != "passed":
        exhausted = exhausted or exhaustion.find(cause)
    if exhausted is None:
        return verdict, cause
    settings = limits or VerifierSettings()
    described = exhaustion.describe(
        exhausted,
        findings.space,
        data_bytes,
        settings.memory_mb,
        settings.address_space_mb,
    )
    return "error", f"{described} ({cause[:500]})"


def verify(
    request: VerifyRequest,
    repos: Sequence[Repository],
    runner: Runner,
    version: str,
    progress: Progress | None = None,
    sandbox_factory: SandboxFactory | None = None,
    restore_tests: Mapping[Kind, RestoreTest] = RESTORE_TESTS,
    warn: Callable[[str], None] | None = None,
) -> ResultRecord:
    """Run one restore test and store its record; the record is returned either way.
    ``sandbox_factory`` and ``restore_tests`` replace the real ones (unit tests of the
    verdict use a fake sandbox and scripted restore tests); ``warn`` hears of repositories
    left out of the test."""
    origin = origin_for(request, runner)
    try:
        readable = usable(repos, request.target.name, warn or (lambda _: None))
        return _verify(
            request, readable, runner, version, progress, sandbox_factory, restore_tests, origin
        )
    finally:
        if origin is not None:
            origin.close()


def usable(
    repos: Sequence[Repository], target: str, warn: Callable[[str], None]
) -> Sequence[Repository]:
    """The repositories a restore test may read: one whose key registry names a master key
    this host lacks, or is not a registry at all (a bucket writer's garbage), is left out,
    named to ``warn`` (``check`` names it too), and the others are still tested; when none
    is left, the first refusal is raised."""
    kept: list[Repository] = []
    refusals: list[BackupError] = []
    for repo in repos:
        try:
            repo.require_keys(target)
        except BackupError as exc:
            refusals.append(exc)
            warn(f"verify {target}: repository {repo.name} left out of the restore test: {exc}")
        else:
            kept.append(repo)
    if not kept and refusals:
        raise refusals[0]
    return kept


def _verify(
    request: VerifyRequest,
    repos: Sequence[Repository],
    runner: Runner,
    version: str,
    progress: Progress | None,
    sandbox_factory: SandboxFactory | None,
    restore_tests: Mapping[Kind, RestoreTest],
    origin: Origin | None,
) -> ResultRecord:
    started = dt.datetime.now(dt.UTC)
    key_file = request.settings.signing_key_file
    signer = signing.load_private(key_file) if key_file else None  # before anything runs
    newest = records.newest(repos, request.target.name)  # the chain continues from it
    if origin is None:
        try:
            repo, manifest = choose_backup(
                repos, request.target.name, request.kind, request.backup_id
            )
        except DamagedBackup as exc:
            return _store(repos, _damaged(request, started, version, exc, newest), signer)
        backup = BackupRef(repo.name, manifest.size, manifest.finished_at, manifest.compression)
    else:  # another tool's backup; the repositories hold only the records
        repo = repos[0]
        try:
            manifest = origin.choose(request.target.name, request.kind, request.backup_id)
        except BackupError as exc:  # the tool, its repository or credentials: an error
            unlisted = _unlisted(request, origin.where, started, version, exc, newest)
            return _store(repos, unlisted, signer)
        stored = int(manifest.extra.get("stored_bytes", 0))
        backup = BackupRef(
            origin.where,
            stored,
            manifest.finished_at,
            manifest.compression,
            str(manifest.extra.get("time_from", "")),
            tuple(str(f) for f in manifest.extra.get("files", ())),
        )
    if manifest.kind == "physical" and (request.pitr or "latest") != "random":
        from pgproof.verifier import pitr

        pitr.choose(request.pitr or "latest", manifest.finished, None)  # TargetError: usage
    try:
        reap(request.settings.workdir, request.container)
    except EngineUnavailable:
        reap_leftovers(request.settings.workdir)  # the restore test itself will report the engine
    major = manifest.pg_version_num // 10000
    image = request.container.image_for(major) if request.container is not None else ""
    timer, findings = Timer(), Findings()
    total_started = time.monotonic()
    sandbox_kind = "process" if request.container is None else "container"

    def restore() -> None:
        nonlocal sandbox_kind
        # a container cannot reach this machine's clusters: only its files are chowned
        sandboxed = sandbox_runner(
            runner,
            request.settings.sandbox_user,
            request.settings.share_sandbox_user or request.container is not None,
        )
        sandbox = (sandbox_factory or sandbox_factory_for(request))(major, sandboxed)
        sandbox_kind = sandbox.kind  # a factory given by the caller may differ
        with sandbox.session():
            job = RestoreJob(
                request,
                repos,
                repo,
                manifest,
                sandbox,
                sandboxed,
                timer,
                findings,
                progress or NullProgress(),
                started,
                origin,
            )
            try:
                restore_tests[manifest.kind](job)
            except BaseException:
                findings.space = sandbox.space()  # before the sandbox is removed
                raise
            if any(c.verdict != "passed" for c in findings.checks):
                findings.space = sandbox.space()

    if origin is None:  # retention on another host keeps what is under test (backups.leases)
        with leases.held(
            repos, request.target.name, manifest.id, manifest.kind, request.settings.lease_seconds
        ):
            verdict, cause = judge(restore, findings, request.settings, manifest.data_bytes)
        if verdict != "passed":
            verdict, cause = _removed(repo, request.target.name, manifest.id, verdict, cause)
    else:
        verdict, cause = judge(restore, findings, request.settings, manifest.data_bytes)
    timer.phases["total"] = round(time.monotonic() - total_started, 3)
    record = ResultRecord(
        id=ids.new_result_id(started, after=newest[0] if newest else None),
        target=request.target.name,
        backup_id=manifest.id,
        kind=manifest.kind,
        started_at=catalog.utc_iso(started),
        finished_at=catalog.utc_iso(dt.datetime.now(dt.UTC)),
        verdict=verdict,
        cause=cause,
        pitr=findings.pitr,
        checks=tuple(findings.checks),
        phases=timer.phases,
        rpo_seconds=findings.rpo_seconds,
        bytes_restored=findings.bytes_restored,
        pg_version=manifest.pg_version,
        sandbox=sandbox_kind,
        sandbox_image=image,
        pgproof_version=version,
        backup=backup,
        prev_sha256=newest[1] if newest else None,
    )
    return _store(repos, record, signer)


def _removed(
    repo: Repository, target: str, backup_id: str, verdict: Verdict, cause: str
) -> tuple[Verdict, str]:
    """A restore test that met missing objects because its backup was deleted meanwhile
    (retention where the lease could not be written or had run out) found no damage:
    error, naming the removal. A backup whose manifest is still there keeps its verdict."""
    key = catalog.backup_prefix(target, backup_id) + catalog.MANIFEST_NAME
    try:
        if repo.head(key) is not None:
            return verdict, cause
    except BackupError:
        return verdict, cause  # the repository cannot say: the verdict stands as found
    return "error", (
        f"backup {backup_id} was removed from repository {repo.name} while it was being "
        f"tested (its manifest {key} is gone: retention on another host?); the restore "
        f"test stopped on: {cause}"
    )


def _store(
    repos: Sequence[Repository], record: ResultRecord, signer: Ed25519PrivateKey | None
) -> ResultRecord:
    if signer is not None:
        record = signing.sign(record, signer)
    failed = records.store(repos, record)
    if failed and len(failed) == len(repos):
        raise VerifierError(f"the result record could not be stored anywhere: {failed}")
    return record


def _damaged(
    request: VerifyRequest,
    started: dt.datetime,
    version: str,
    exc: DamagedBackup,
    newest: tuple[str, str] | None,
) -> ResultRecord:
    """The record of a restore test whose backup's manifest is damaged: failed, naming it."""
    return _not_restored(
        request, started, version, newest, "failed", str(exc), exc.backup_id, exc.repository
    )


def _unlisted(
    request: VerifyRequest,
    where: str,
    started: dt.datetime,
    version: str,
    exc: BaseException,
    newest: tuple[str, str] | None,
) -> ResultRecord:
    """The record of a restore test whose backups could not even be listed."""
    cause = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
    backup_id = request.backup_id or "latest"
    return _not_restored(request, started, version, newest, "error", cause, backup_id, where)


def _not_restored(
    request: VerifyRequest,
    started: dt.datetime,
    version: str,
    newest: tuple[str, str] | None,
    verdict: Verdict,
    cause: str,
    backup_id: str,
    where: str,
) -> ResultRecord:
    return ResultRecord(
        id=ids.new_result_id(started, after=newest[0] if newest else None),
        target=request.target.name,
        backup_id=backup_id,
        kind=request.kind,
        started_at=catalog.utc_iso(started),
        finished_at=catalog.utc_iso(dt.datetime.now(dt.UTC)),
        verdict=verdict,
        cause=cause,
        pgproof_version=version,
        backup=BackupRef(where),
        prev_sha256=newest[1] if newest else None,
    )
