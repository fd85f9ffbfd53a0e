"""Physical restore and point-in-time recovery into a sandbox, then the checks.

1. The base backup streams from the repository, is checked against the manifest's sha256,
   decompressed and extracted (members filtered) into the sandbox's data directory.
2. ``pg_verifybackup`` checks every file against the backup's own ``backup_manifest``.
3. The WAL from the backup's start to the newest archived segment is prefetched in
   parallel (continuity and system identifier checked first: a gap or a foreign segment fails
   the test by name, never a shorter replay that passes).
4. Production's configuration is set aside; recovery runs with a local-only restore_command
   to the chosen target, promotes, and the point actually reached is read back.
5. Checks: WAL replay reached what it should, heartbeat proof at the target, amcheck, every
   table readable, custom assertions; then pg_checksums on the stopped cluster.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import os
import shlex

from pgproof.backups import catalog
from pgproof.backups.progress import NullProgress
from pgproof.verifier import (
    basefiles,
    checks,
    heartbeat,
    physicalchecks,
    pitr,
    sandboxconf,
    waldump,
)
from pgproof.verifier.errors import RestoreFailed, SandboxError
from pgproof.verifier.job import RestoreJob, VerifyRequest, amcheck_check, custom_checks
from pgproof.verifier.records import CheckResult, Pitr
from pgproof.verifier.sandbox import Sandbox
from pgproof.verifier.walprefetch import Prefetched, prefetch


def run_physical(job: RestoreJob) -> None:
    """The physical restore test: the steps of the module's docstring, each timed."""
    origin = job.origin or OWN_REPOSITORIES
    with job.timer.measure("fetch"):
        manifest, wal = origin.fetch(job)
    job = dataclasses.replace(job, manifest=manifest)  # completed by what the files say
    sandbox, found = job.sandbox, job.findings
    with job.timer.measure("checks"):  # pg_verifybackup, or the other tool's own check
        verify_result = origin.integrity(job, wal is None)
    # the links into the sandbox are in place; the backup's map names production's paths
    (sandbox.data_dir / "tablespace_map").unlink(missing_ok=True)
    # the restored cluster's bootstrap superuser (trust on the private socket)
    sandbox.user = manifest.superuser or "postgres"
    target, newest_commit = _target(job.request, manifest, sandbox, wal)
    found.pitr = Pitr(
        requested=job.request.pitr or "latest",
        mode=target.mode,
        target_time=target.time.isoformat() if target.time else None,
        settings=target.settings,
    )
    with job.timer.measure("recovery"):
        _recover(job, target, wal)
    reached = pitr.read_log(sandbox.server_log())
    _record_reached(job, reached, newest_commit)
    dbs = _databases(sandbox)
    _require_extensions(sandbox, dbs)
    with job.timer.measure("checks"):
        results = [verify_result, physicalchecks.replay_check(reached, target, wal, manifest)]
        found.checks = results + _checks(job, dbs, target, reached, newest_commit, wal)


class _OwnRepositories:
    """pgproof's own backups: files and WAL from the target's repositories, checked by
    pg_verifybackup against the backup's backup_manifest."""

    def fetch(self, job: RestoreJob) -> tuple[catalog.Manifest, Prefetched | None]:
        return job.manifest, _fetch(job)

    def integrity(self, job: RestoreJob, wal_included: bool) -> CheckResult:
        return physicalchecks.verifybackup(job.sandbox, wal_included)


OWN_REPOSITORIES = _OwnRepositories()


def _fetch(job: RestoreJob) -> Prefetched | None:
    """The base backup (and tablespaces) extracted while the WAL is prefetched beside it;
    None when the backup carries its own WAL."""
    request, manifest, sandbox = job.request, job.manifest, job.sandbox
    owner = job.runner.postgres_identity()
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        pending = None
        if not manifest.wal_included:
            pending = background.submit(
                prefetch,
                request.target.name,
                job.repos,
                manifest,
                sandbox.work_dir / "wal",
                owner,
                NullProgress(),
                plain=not sandbox.has_zstd,  # the server's side cannot decompress
            )
        base = next(f for f in manifest.files if f.role == "base")
        try:
            basefiles.extract_file(job, base, sandbox.data_dir)
            job.findings.bytes_restored = base.size + basefiles.restore_tablespaces(job)
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(Exception):
                    pending.result()  # never leave a thread writing into a sandbox being removed
        basefiles.place_backup_manifest(job)
        if owner is not None:
            basefiles.chown_tree(sandbox.data_dir, owner.uid, owner.gid)
            if manifest.tablespaces:
                basefiles.chown_tree(basefiles.tablespace_root(sandbox), owner.uid, owner.gid)
        wal: Prefetched | None = pending.result() if pending is not None else None
    if wal is not None:
        job.findings.bytes_restored += wal.bytes
    return wal


def _recover(job: RestoreJob, target: pitr.Target, wal: Prefetched | None) -> None:
    """Recovery to the target with a local-only restore_command; a target the archive does
    not reach fails the test, a tablespace created after the backup is an error."""
    sandbox, manifest, progress = job.sandbox, job.manifest, job.progress
    waldir = str(wal.directory) if wal else str(sandbox.work_dir / "wal")
    os.makedirs(waldir, exist_ok=True)
    sandbox.configure(
        fast=True,
        preload=_preload(sandbox),
        recovery=sandboxconf.Recovery(local_restore_command(waldir), target.settings),
    )
    segments = len(wal.segments) if wal else 0
    progress.start("WAL replay", segments * manifest.wal_segment_size or None)
    shown = 0

    def follow() -> None:  # replay progress: the segments the server has restored so far
        nonlocal shown
        restored = sandbox.server_log().count("restored log file")
        if restored > shown:
            progress.advance((restored - shown) * manifest.wal_segment_size)
            shown = restored

    try:
        sandbox.start(timeout=job.request.settings.timeout_seconds, on_wait=follow)
        progress.done()
    except SandboxError as exc:
        created = pitr.tablespace_created(str(exc))
        if created is not None:
            raise SandboxError(_tablespace_created(created)) from None
        reached = pitr.read_log(str(exc))
        if reached.target_missed:
            raise RestoreFailed(
                f"the archived WAL ends before the PITR target ({target.describe()}); "
                f"replay reached {reached.lsn or 'an earlier point'}"
            ) from None
        raise


def _record_reached(
    job: RestoreJob, reached: pitr.Reached, newest_commit: dt.datetime | None
) -> None:
    """Where replay stopped, and the RPO: what a failure at the test's start would have
    lost, i.e. the age of the newest state the archive can give back (not of the point
    this test chose to stop at): the newest archived commit, or the backup's end when
    nothing committed after it."""
    recoverable = max(
        t for t in (reached.last_transaction, newest_commit, job.manifest.finished) if t is not None
    )
    assert job.findings.pitr is not None
    job.findings.pitr = dataclasses.replace(
        job.findings.pitr,
        reached_lsn=reached.lsn,
        reached_time=reached.last_transaction.isoformat() if reached.last_transaction else None,
        stop_reason=reached.stop_reason,
        newest_recoverable=recoverable.isoformat(),
    )
    job.findings.rpo_seconds = round(max(0.0, (job.started - recoverable).total_seconds()), 3)


def _checks(
    job: RestoreJob,
    dbs: list[str],
    target: pitr.Target,
    reached: pitr.Reached,
    newest_commit: dt.datetime | None,
    wal: Prefetched | None,
) -> list[CheckResult]:
    """The checks on the recovered cluster: heartbeat proof, amcheck beside the full read,
    custom checks; then pg_checksums on the stopped cluster."""
    request, sandbox, manifest = job.request, job.sandbox, job.manifest
    results: list[CheckResult] = []
    hb = request.target.heartbeat
    if hb.enabled:
        hb_db = hb.database or request.conninfo_db
        win = heartbeat.window(
            target.time,
            reached.last_transaction,
            newest_commit,
            manifest.started,
            manifest.finished,
            hb.every_seconds + request.settings.heartbeat_slack_seconds,
            replayed_commit=reached.replayed_commit,
            next_commit=reached.next_commit,
        )
        results.append(
            checks.guarded(
                "heartbeat",
                functools.partial(
                    physicalchecks.heartbeat_proof,
                    job,
                    hb_db if hb_db in dbs else "postgres",
                    win,
                    wal,
                    reached,
                ),
            )
        )
    # amcheck and the full read touch different things: run them side by side
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        parallel = [
            pool.submit(amcheck_check, request, sandbox),
            pool.submit(
                checks.guarded,
                "readable",
                functools.partial(
                    checks.readable,
                    sandbox,
                    dbs,
                    manifest.data_checksums,
                    request.settings.timeout_seconds,
                ),
            ),
        ]
        results += [f.result() for f in parallel]
    results += custom_checks(request, sandbox, dbs)
    sandbox.stop("fast")
    results.append(
        checks.guarded(
            "checksums",
            functools.partial(
                checks.checksums, sandbox, manifest.data_checksums, request.settings.timeout_seconds
            ),
        )
    )
    return results


def _tablespace_created(created: pitr.TablespaceCreated) -> str:
    return (
        f"the archived WAL creates tablespace {created.oid} at {created.location!r} (LSN "
        f"{created.lsn}), after the backup was taken: replaying it would write there, "
        f"outside the sandbox, so the sandbox's server stopped at that record (its OS user "
        f"may not take the directory over). This backup can be restore-tested only to points "
        f"before LSN "
        f"{created.lsn} (--pitr); the next physical backup includes the tablespace"
    )


def local_restore_command(waldir: str) -> str:
    """Decompress a prefetched segment (or copy a plain file); exit 1 when it is not there."""
    d = shlex.quote(waldir)
    return (
        f"if [ -f {d}/%f.zst ]; then zstd -dqf {d}/%f.zst -o %p; "
        f"elif [ -f {d}/%f ]; then cp {d}/%f %p; else exit 1; fi"
    )


def _target(
    request: VerifyRequest, manifest: catalog.Manifest, sandbox: Sandbox, wal: Prefetched | None
) -> tuple[pitr.Target, dt.datetime | None]:
    """The recovery target, and the newest commit in the archive, which measures the RPO
    whatever point is tested (the server's log names no commit when replay just ends)."""
    newest = None
    if wal and wal.segments:
        newest = _newest_commit(sandbox, wal)
    return pitr.choose(request.pitr or "latest", manifest.finished, newest), newest


def _newest_commit(sandbox: Sandbox, wal: Prefetched) -> dt.datetime | None:
    """The newest commit in the archived WAL (pg_waldump over the last segments)."""
    for name in reversed(wal.segments[-3:]):
        out = waldump.dump_segment(sandbox, wal.directory, name, ["--rmgr=Transaction"])
        found = pitr.newest_commit(out) if out is not None else None
        if found is not None:
            return found
    return None


def _preload(sandbox: Sandbox) -> list[str]:
    """Production's shared_preload_libraries that this server can load (others are dropped)."""
    requested: list[str] = []
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        path = sandbox.data_dir / name
        if path.exists():
            value = sandboxconf.parse_conf(path.read_text(errors="replace")).get(
                "shared_preload_libraries"
            )
            if value is not None:
                requested = sandboxconf.split_list(value)
    if not requested:
        return []
    kept, _dropped = sandboxconf.usable_preload(requested, sandbox.libraries())
    return kept


def _databases(sandbox: Sandbox) -> list[str]:
    with sandbox.connect() as conn:
        rows = conn.execute(
            "select datname from pg_database where datallowconn and not datistemplate order by 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _require_extensions(sandbox: Sandbox, dbs: list[str]) -> None:
    """The restored databases' extensions must be installable where the sandbox runs: a
    table of an extension's type cannot be read without its library, and that is the
    sandbox's lack, not damage (an error naming them, never a failed check)."""
    with sandbox.connect() as conn:
        available = {str(r[0]) for r in conn.execute("select name from pg_available_extensions")}
    missing: dict[str, list[str]] = {}
    for db in dbs:
        with sandbox.connect(db) as conn:
            for (name,) in conn.execute("select extname from pg_extension"):
                if str(name) not in available:
                    missing.setdefault(str(name), []).append(db)
    if missing:
        named = "; ".join(f"{e} (database {', '.join(d)})" for e, d in sorted(missing.items()))
        raise SandboxError(
            f"the sandbox's PostgreSQL {sandbox.major} lacks extension(s) the restored "
            f"databases use: {named}; install them where the sandbox runs (or use an image "
            f"that has them)"
        )
