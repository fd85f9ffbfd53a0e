"""One function per CLI command; each returns the exit code (see pgproof.cli)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import threading
from typing import Any, Literal

from backups.catalog import utc_iso
from backups.errors import BackupError, LockHeld
from backups.runner import Runner
from backups.storage.base import Repository
from backups.storage.factory import open_all
from pgproof import __version__
from pgproof.cli import EXIT_FAILED, EXIT_FETCH_ABORT, EXIT_OK, EXIT_USAGE, _err, _out_json
from pgproof.config import Config, Target


def _progress(args: argparse.Namespace) -> Any:
    from backups.progress import NullProgress

    if getattr(args, "json", False) or not sys.stderr.isatty():
        return NullProgress()
    from pgproof.progress import TerminalProgress

    return TerminalProgress()


def _job_status(
    repos: list[Repository],
    target: str,
    kind: str,
    started: str,
    backup_id: str | None,
    status: Literal["ok", "partial", "failed"],
    error: str,
) -> None:
    from backups import jobstatus

    finished = utc_iso(dt.datetime.now(dt.UTC))
    refused = jobstatus.record(
        repos, jobstatus.JobStatus(target, kind, status, started, finished, backup_id, error)
    )
    for name in refused:
        _err(f"repository {name!r} did not take the job status record")


def _close(repos: list[Repository]) -> None:
    for repo in repos:
        repo.close()


def cmd_backup(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    import signal

    from backups.jobs import clear_leftovers
    from backups.lock import target_lock
    from backups.logical import LogicalBackup
    from backups.physical import PhysicalBackup

    target = targets[0]

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: tools stopped, uploads aborted, no manifest

    signal.signal(signal.SIGTERM, terminate)
    try:
        repos = open_all(target.settings.repositories)
    except BackupError as exc:
        _err(str(exc))
        return EXIT_FAILED
    job_class = LogicalBackup if args.kind == "logical" else PhysicalBackup
    started = utc_iso(dt.datetime.now(dt.UTC))
    try:
        with target_lock(target.settings.lock_dir, target.name, f"backup {args.kind}"):
            clear_leftovers(repos, target.name)
            job = job_class(target.settings, repos, Runner(), __version__, _progress(args))
            try:
                outcome = job.run()
            except BackupError as exc:
                _job_status(repos, target.name, args.kind, started, None, "failed", str(exc))
                raise
            _job_status(
                repos,
                target.name,
                args.kind,
                started,
                outcome.manifest.id,
                "ok" if outcome.ok else "partial",
                "; ".join(f"{n}: {why}" for n, why in outcome.failed.items()),
            )
    except LockHeld as exc:
        _err(str(exc))
        return EXIT_FAILED
    except BackupError as exc:
        _err(f"{args.kind} backup of {target.name} failed: {exc}")
        if args.json:
            _out_json({"target": target.name, "kind": args.kind, "ok": False, "error": str(exc)})
        return EXIT_FAILED
    finally:
        _close(repos)
    m = outcome.manifest
    if args.json:
        _out_json(
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
        _err(f"repository {name!r} did not receive backup {m.id}: {why}")
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_wal_push(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import walarchive

    target = targets[0]
    from pgproof import walfast

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
    if target.settings.wal.asynchronous:
        return _wal_push_async(cfg, target, args.path)
    try:
        repos = open_all(target.settings.repositories)
        outcome = walarchive.push(
            target.name, repos, args.path, target.settings.wal.compression_level
        )
    except BackupError as exc:
        _err(f"wal-push {args.path}: {exc}")
        return EXIT_FAILED
    for why in outcome.failed.values():
        _err(f"wal-push {outcome.name}: {why}")
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _wal_push_async(cfg: Config, target: Target, path: str) -> int:
    from pgproof import walfast

    wal = target.settings.wal
    assert wal.spool_dir is not None
    return walfast.run_foreground(
        os.path.abspath(cfg.path), target.name, path, wal.spool_dir, wal.push_timeout_seconds
    )


def cmd_wal_push_worker(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import walarchive, walasync

    target = targets[0]
    wal = target.settings.wal
    assert wal.spool_dir is not None
    spool = walasync.Spool.for_target(wal.spool_dir, target.name)
    try:
        repos = open_all(target.settings.repositories)
    except BackupError as exc:  # tell the waiting archive_command why, instead of timing out
        for name in walasync.ready_files(args.pg_wal):
            spool.mark_error(name, str(exc))
        _err(f"wal-push-worker: {exc}")
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
        _close(repos)
    return EXIT_OK


def cmd_wal_fetch(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import walarchive

    target = targets[0]
    try:
        repos = open_all(target.settings.repositories)
    except BackupError as exc:
        _err(f"wal-fetch {args.name}: {exc}")
        return EXIT_FETCH_ABORT
    # Local repositories first: they are the fastest and need no network.
    repos.sort(key=lambda r: r.kind != "filesystem")
    try:
        _, problems = walarchive.fetch(target.name, repos, args.name, args.dest)
    except walarchive.WalNotFound:
        return EXIT_FAILED
    except BackupError as exc:
        _err(f"wal-fetch {args.name}: {exc}")
        return EXIT_FETCH_ABORT
    for problem in problems:
        _err(f"wal-fetch {args.name}: skipped a bad copy: {problem}")
    return EXIT_OK


def cmd_list(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import catalog, health

    doc: list[dict[str, Any]] = []
    for target in targets:
        repos = open_all(target.settings.repositories)
        for repo in repos:
            try:
                entries = catalog.scan(repo, target.name)
                verified = catalog.latest_verifications(repo, target.name)
            except BackupError as exc:
                doc.append({"target": target.name, "repository": repo.name, "error": str(exc)})
                continue
            for e in entries:
                if e.manifest is not None:
                    row = health.describe_backup(e.manifest)
                    last = verified.get(e.id)
                    row["last_verification"] = (
                        {
                            "verdict": last.verdict,
                            "finished_at": last.finished_at,
                            "result": last.result_id,
                        }
                        if last
                        else None
                    )
                elif e.error:
                    row = {"id": e.id, "state": "corrupt", "error": e.error}
                else:
                    row = {"id": e.id, "state": "incomplete", "size_bytes": e.stored_bytes}
                doc.append({"target": target.name, "repository": repo.name, **row})
        _close(repos)
    if args.json:
        _out_json({"backups": doc})
        return EXIT_OK
    from pgproof.progress import human_bytes

    print(
        f"{'TARGET':<12} {'REPOSITORY':<12} {'BACKUP':<34} {'KIND':<9} {'STATE':<10} "
        f"{'SIZE':>10}  LAST VERIFIED"
    )
    for row in doc:
        if "error" in row and "id" not in row:
            print(f"{row['target']:<12} {row['repository']:<12} unreachable: {row['error']}")
            continue
        size = human_bytes(row.get("size_bytes", 0))
        last = row.get("last_verification")
        shown = f"{last['verdict']} {last['finished_at']}" if last else "never"
        print(
            f"{row['target']:<12} {row['repository']:<12} {row['id']:<34} "
            f"{row.get('kind', '-'):<9} {row['state']:<10} {size:>10}  {shown}"
        )
    return EXIT_OK


def cmd_check(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import health

    reports = []
    for target in targets:
        repos = open_all(target.settings.repositories)
        interactive = not args.json and sys.stderr.isatty()

        def on_file(what: str) -> None:
            sys.stderr.write(f"\r\033[Kchecking {what}")
            sys.stderr.flush()

        try:
            report = health.check(
                target.name,
                repos,
                target.settings.max_backup_age_seconds,
                verify_data=not args.no_data,
                on_file=on_file if interactive else None,
            )
        finally:
            _close(repos)
        if interactive:
            sys.stderr.write("\r\033[K")
        reports.append(report)
    healthy = all(r.healthy for r in reports)
    if args.json:
        _out_json({"healthy": healthy, "targets": [r.to_dict() for r in reports]})
    else:
        for r in reports:
            print(f"target {r.target}: {'healthy' if r.healthy else 'PROBLEMS'}")
            for rep in r.repositories:
                wal = rep.wal
                print(
                    f"  {rep.repository} ({rep.location}): {len(rep.backups)} backups, "
                    f"WAL {wal.get('first') or '-'} .. {wal.get('last') or '-'}"
                )
            for problem in r.problems:
                print(f"  - {problem}")
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_retention(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from backups import retention
    from backups.lock import target_lock

    doc = []
    status = EXIT_OK
    for target in targets:
        repos = open_all(target.settings.repositories)
        try:
            with target_lock(target.settings.lock_dir, target.name, "retention"):
                for repo in repos:
                    try:
                        plan = retention.plan(repo, target.name, target.settings.retention)
                        if not args.dry_run:
                            retention.apply(repo, target.name, plan)
                    except BackupError as exc:
                        _err(f"retention of {target.name} in {repo.name}: {exc}")
                        status = EXIT_FAILED
                        continue
                    doc.append({"target": target.name, "dry_run": args.dry_run, **plan.__dict__})
        except LockHeld as exc:
            _err(str(exc))
            status = EXIT_FAILED
        finally:
            _close(repos)
    if args.json:
        _out_json({"retention": doc})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for row in doc:
            print(f"{row['target']} / {row['repository']}: keep {len(row['keep'])} backups")
            for backup_id in row["delete_backups"]:
                print(f"  {verb} backup {backup_id} ({row['reasons'][backup_id]})")
            for backup_id in row["delete_incomplete"]:
                print(f"  {verb} incomplete backup {backup_id}")
            if row["delete_wal"]:
                print(f"  {verb} {len(row['delete_wal'])} WAL files before {row['wal_horizon']}")
    return status


def cmd_heartbeat(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    import signal

    from backups import heartbeat
    from backups.lock import heartbeat_lock
    from backups.source import Source

    target = targets[0]
    hb = target.settings.heartbeat
    try:
        source = Source(target.settings.source, Runner())
        if args.once:
            beat = heartbeat.beat(source, hb.every_seconds, hb.database)
            print(beat.at.isoformat())
            return EXIT_OK
    except BackupError as exc:
        _err(f"heartbeat on {target.name}: {exc}")
        return EXIT_FAILED
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with heartbeat_lock(target.settings.lock_dir, target.name):  # one writer per target
            heartbeat.run_forever(
                source,
                hb.every_seconds,
                stop,
                hb.database,
                on_error=heartbeat.throttled(
                    lambda message: _err(f"heartbeat on {target.name}: {message}")
                ),
            )
    except LockHeld as exc:
        _err(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def cmd_verify(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    import signal

    from backups.catalog import Kind
    from backups.lock import target_lock
    from verifier.errors import TargetError, VerifierError
    from verifier.run import VerifyRequest, verify

    target = targets[0]

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the sandbox's clean-up

    signal.signal(signal.SIGTERM, terminate)
    kinds: list[Kind] = [args.kind] if args.kind else ["logical", "physical"]
    backup_id = None if args.backup in (None, "latest") else args.backup
    repos = open_all(target.settings.repositories)
    results = []
    status = EXIT_OK
    try:
        with target_lock(target.settings.lock_dir, target.name, "verify"):
            for kind in kinds:
                request = VerifyRequest(
                    target=target.settings,
                    kind=kind,
                    backup_id=backup_id,
                    pitr=args.pitr,
                    custom_checks=tuple((c.name, c.sql) for c in target.checks),
                    settings=cfg.verifier,
                    image=target.image,
                )
                try:
                    record = verify(request, repos, Runner(), __version__, _progress(args))
                except TargetError as exc:
                    if args.kind is None and "no complete" in str(exc):
                        continue  # verifying "everything": a kind never backed up is no failure
                    _err(f"verify {target.name}: {exc}")
                    return EXIT_USAGE
                results.append(record)
                if record.verdict != "passed":
                    status = EXIT_FAILED
    except (LockHeld, VerifierError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    finally:
        _close(repos)
    if not results:
        _err(f"verify {target.name}: no complete backup to test")
        return EXIT_FAILED
    if args.json:
        from dataclasses import asdict

        _out_json({"passed": status == EXIT_OK, "results": [asdict(r) for r in results]})
        return status
    for r in results:
        total = r.phases.get("total", 0.0)
        rpo = f", RPO {r.rpo_seconds:.0f} s" if r.rpo_seconds is not None else ""
        print(f"{r.kind} backup {r.backup_id}: {r.verdict.upper()} in {total:.1f} s{rpo}")
        if r.pitr:
            print(f"  recovered to {r.pitr.get('reached_time')} (LSN {r.pitr.get('reached_lsn')})")
        for c in r.checks:
            print(f"  [{c.verdict:^7}] {c.name}: {c.detail}")
        if r.cause:
            print(f"  cause: {r.cause}")
        print(f"  record: {r.target}/results/{r.id}.json")
    return status


def cmd_serve(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    import signal

    from exporters.errors import ExporterError
    from pgproof import logs
    from pgproof.service import Service

    logs.setup(args.log_format or cfg.serve.log_format)
    try:
        service = Service(cfg, args.listen)
    except ExporterError as exc:
        _err(str(exc))
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    host, port = service.http.address
    logging.getLogger("pgproof.serve").info(
        "serving", extra={"url": f"{service.http.scheme}://{host}:{port}/metrics"}
    )
    stop.wait()
    service.stop()
    return EXIT_OK


def cmd_report(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from verifier import report

    repos = open_all(cfg.repositories)
    try:
        if args.verify_chain:
            return _verify_chain(targets, repos, args.json)
        model = report.build(report.inputs([t.settings for t in targets], repos), __version__)
    finally:
        _close(repos)
    text = report.to_json(model) if args.format == "json" else report.render_html(model)
    if args.out:
        tmp = f"{args.out}.tmp-{os.getpid()}"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, args.out)
        _err(f"report written to {args.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _verify_chain(targets: tuple[Target, ...], repos: list[Repository], as_json: bool) -> int:
    from verifier import chain, report

    doc: dict[str, Any] = {"targets": {}, "intact": True}
    for item in report.inputs([t.settings for t in targets], repos):
        checked, problems, errors = chain.verify_target(item.repos, item.name)
        intact = not problems and not errors
        doc["intact"] = doc["intact"] and intact
        doc["targets"][item.name] = {
            "records": checked,
            "intact": intact,
            "problems": [
                {"repository": p.repository, "record": p.record, "kind": p.kind, "detail": p.detail}
                for p in problems
            ],
            "unreadable_repositories": errors,
        }
        if not as_json:
            state = "intact" if intact else "BROKEN"
            print(f"{item.name}: {checked} records, chain {state}")
            for p in problems:
                print(f"  {p}")
            for name, error in errors.items():
                print(f"  {name}: cannot be read: {error}")
    if as_json:
        _out_json(doc)
    return EXIT_OK if doc["intact"] else EXIT_FAILED
