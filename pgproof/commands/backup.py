"""``backup`` and ``retention``: the jobs that write and prune a target's repositories."""

from __future__ import annotations

import argparse
import signal

from pgproof import __version__
from pgproof.backups import foreign, retention
from pgproof.backups.errors import BackupError, LockHeld
from pgproof.backups.lifecycle import run_backup
from pgproof.backups.lock import target_lock
from pgproof.backups.runner import Runner
from pgproof.backups.storage.factory import opened
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out_json, progress_for


def cmd_backup(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    target = targets[0]
    if target.settings.foreign is not None:
        err(
            f"backup: {foreign.where(target.settings.foreign)} holds the backups of target "
            f"{target.name}, made by another tool; pgproof only tests them"
        )
        return EXIT_USAGE

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: tools stopped, uploads aborted, no manifest

    signal.signal(signal.SIGTERM, terminate)
    try:
        with opened(target.settings.repositories) as repos:
            outcome = run_backup(
                args.kind,
                target.settings,
                repos,
                Runner(),
                __version__,
                progress_for(args),
                warn=err,
            )
    except LockHeld as exc:
        err(str(exc))
        return EXIT_FAILED
    except BackupError as exc:
        err(f"{args.kind} backup of {target.name} failed: {exc}")
        if args.json:
            out_json({"target": target.name, "kind": args.kind, "ok": False, "error": str(exc)})
        return EXIT_FAILED
    m = outcome.manifest
    if args.json:
        out_json(
            {
                "target": target.name,
                "kind": m.kind,
                "ok": outcome.ok,
                "backup_id": m.id,
                "size_bytes": m.size,
                "duration_seconds": round(m.duration_seconds, 3),
                "stored_in": list(outcome.stored_in),
                "failed": outcome.failed,
            }
        )
    else:
        print(m.id)
    for name, why in outcome.failed.items():
        err(f"repository {name!r} did not receive backup {m.id}: {why}")
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_retention(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof.verifier import records  # the restore tests decide what stays

    doc = []
    status = EXIT_OK
    for target in targets:
        if target.settings.foreign is not None:
            continue  # the other tool keeps its own retention; the records are never deleted
        try:
            with (
                opened(target.settings.repositories) as repos,
                target_lock(target.settings.lock_dir, target.name, "retention"),
            ):
                # restore tests in progress anywhere, and where each backup is complete
                others = retention.across(
                    repos, target.name, longest_lease=cfg.verifier.lease_seconds
                )
                for repo in repos:
                    try:
                        repo.require_keys(target.name)  # never plan blind to what it holds
                        # the newest backup of each kind that passed a restore test stays
                        tested = records.readable(records.read_all(repo, target.name))
                        plan = retention.plan(
                            repo,
                            target.name,
                            target.settings.retention,
                            records.last_passed_backups(tested),
                            others=others,
                        )
                        repo.require_locks()
                        plan = retention.hold_locked(repo, target.name, plan)
                        if not args.dry_run:
                            retention.apply(repo, target.name, plan)
                    except BackupError as exc:
                        err(f"retention of {target.name} in {repo.name}: {exc}")
                        status = EXIT_FAILED
                        continue
                    doc.append({"target": target.name, "dry_run": args.dry_run, **plan.__dict__})
        except LockHeld as exc:
            err(str(exc))
            status = EXIT_FAILED
    if args.json:
        out_json({"retention": doc})
        return status
    verb = "would delete" if args.dry_run else "deleted"
    for row in doc:
        print(f"{row['target']} / {row['repository']}: keep {len(row['keep'])} backups")
        for backup_id in row["delete_backups"]:
            print(f"  {verb} backup {backup_id} ({row['reasons'][backup_id]})")
        for backup_id in row["delete_incomplete"]:
            print(f"  {verb} incomplete backup {backup_id}")
        if row["delete_wal"]:
            print(f"  {verb} {len(row['delete_wal'])} WAL files before {row['wal_horizon']}")
        for what, why in row["locked"].items():
            print(f"  kept for now: {what}: {why}")
        for backup_id, why in row["leased"].items():
            print(f"  kept for now: backup {backup_id}: {why}")
        for backup_id, why in row["complete_elsewhere"].items():
            print(
                f"  kept: files of backup {backup_id} without a manifest here, {why}: "
                "its manifest was lost here (see README: a manifest missing in one repository)"
            )
    return status
