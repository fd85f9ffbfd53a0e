"""``wal-push`` (archive_command), its async worker, and ``wal-fetch`` (restore_command)."""

from __future__ import annotations

import argparse
import os

from pgproof import walfast
from pgproof.backups import walarchive
from pgproof.backups.errors import BackupError
from pgproof.backups.storage.factory import close_all, open_all, opened
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_FETCH_ABORT, EXIT_OK, EXIT_USAGE, err


def _foreign(target: Target, command: str) -> bool:
    if target.settings.foreign is None:
        return False
    from pgproof.backups.foreign import where as where_of  # not on wal-push's path

    where = where_of(target.settings.foreign)
    err(f"{command}: another tool archives the WAL of target {target.name} ({where}), not pgproof")
    return True


def cmd_wal_push(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    target = targets[0]
    if _foreign(target, "wal-push"):
        return EXIT_USAGE
    walfast.write_cache(
        cfg.path,
        {
            t.name: {
                "async": t.settings.wal.asynchronous,
                "spool_dir": t.settings.wal.spool_dir,
                "timeout": t.settings.wal.push_timeout_seconds,
            }
            for t in cfg.targets
        },
    )
    wal = target.settings.wal
    if wal.asynchronous:
        assert wal.spool_dir is not None
        return walfast.run_foreground(
            os.path.abspath(cfg.path),
            target.name,
            args.path,
            wal.spool_dir,
            wal.push_timeout_seconds,
        )
    try:
        with opened(target.settings.repositories) as repos:
            outcome = walarchive.push(target.name, repos, args.path, wal.compression_level)
    except BackupError as exc:
        err(f"wal-push {args.path}: {exc}")
        return EXIT_FAILED
    for why in outcome.failed.values():
        err(f"wal-push {outcome.name}: {why}")
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_wal_push_worker(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof.backups import walasync

    target = targets[0]
    wal = target.settings.wal
    assert wal.spool_dir is not None
    spool = walasync.Spool.for_target(wal.spool_dir, target.name)
    try:
        repos = open_all(target.settings.repositories)
    except BackupError as exc:  # tell the waiting archive_command why, instead of timing out
        for name in walasync.ready_files(args.pg_wal):
            spool.mark_error(name, str(exc))
        err(f"wal-push-worker: {exc}")
        return EXIT_FAILED

    def push_one(path: str) -> None:
        outcome = walarchive.push(target.name, repos, path, wal.compression_level)
        if not outcome.ok:
            raise BackupError("; ".join(outcome.failed.values()))

    try:
        walasync.run_worker(
            spool,
            args.pg_wal,
            push_one,
            workers=wal.async_workers,
            lookahead=wal.async_lookahead,
            lock_fd=args.lock_fd,
        )
    finally:
        close_all(repos)
    return EXIT_OK


def cmd_wal_fetch(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    target = targets[0]
    if _foreign(target, "wal-fetch"):
        return EXIT_USAGE
    try:
        with opened(target.settings.repositories) as repos:
            # Local repositories first: they are the fastest and need no network.
            repos.sort(key=lambda r: r.kind != "filesystem")
            _, problems = walarchive.fetch(target.name, repos, args.name, args.dest)
    except walarchive.WalNotFound:
        return EXIT_FAILED
    except BackupError as exc:
        err(f"wal-fetch {args.name}: {exc}")
        return EXIT_FETCH_ABORT
    for problem in problems:
        err(f"wal-fetch {args.name}: skipped a bad copy: {problem}")
    return EXIT_OK
