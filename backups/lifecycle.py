"""A backup job from start to end, the same for the CLI, the service and the benchmarks:
the target's lock, leftovers of killed jobs removed, the job run, and its outcome recorded
in every repository (``backups.jobstatus``) whether it succeeded or not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from pgproof.backups import jobstatus
from pgproof.backups.catalog import utc_iso
from pgproof.backups.errors import BackupError
from pgproof.backups.jobs import BackupJob, BackupOutcome, clear_leftovers
from pgproof.backups.kinds import Kind
from pgproof.backups.lock import target_lock
from pgproof.backups.progress import NullProgress, Progress
from pgproof.backups.runner import Runner
from pgproof.backups.settings import TargetSettings
from pgproof.backups.storage.base import Repository


def run_backup(
    kind: Kind,
    settings: TargetSettings,
    repos: Sequence[Repository],
    runner: Runner,
    version: str,
    progress: Progress | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> BackupOutcome:
    """One backup of ``kind`` into ``repos``. LockHeld when another job of the target runs;
    BackupError when the backup failed (its status is recorded first). ``warn`` hears of
    repositories that refused the status record."""
    from pgproof.backups.logical import LogicalBackup
    from pgproof.backups.physical import PhysicalBackup

    job_class: type[BackupJob] = LogicalBackup if kind == "logical" else PhysicalBackup
    started = utc_iso(dt.datetime.now(dt.UTC))

    def record(status: jobstatus.Status, backup_id: str | None, error: str) -> None:
        finished = utc_iso(dt.datetime.now(dt.UTC))
        done = jobstatus.JobStatus(settings.name, kind, status, started, finished, backup_id, error)
        for name in jobstatus.record(repos, done):
            warn(f"repository {name!r} did not take the job status record")

    with target_lock(settings.lock_dir, settings.name, f"backup {kind}"):
        try:
            for repo in repos:  # object_lock on a bucket that cannot lock: refused up front
                repo.require_locks()
        except BackupError as exc:
            record("failed", None, str(exc))
            raise
        clear_leftovers(repos, settings.name)
        job = job_class(settings, list(repos), runner, version, progress or NullProgress())
        try:
            outcome = job.run()
        except BackupError as exc:
            record("failed", None, str(exc))
            raise
        record(
            "ok" if outcome.ok else "partial",
            outcome.manifest.id,
            "; ".join(f"{n}: {why}" for n, why in outcome.failed.items()),
        )
    return outcome
