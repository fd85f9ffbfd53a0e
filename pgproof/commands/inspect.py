"""``list`` and ``check``: what a target's repositories hold, read without restoring."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pgproof.backups import catalog, foreign, health
from pgproof.backups.errors import BackupError
from pgproof.backups.runner import Runner
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.factory import opened
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_OK, out_json
from pgproof.verifier import records


def _rows(target: str, repo: Repository) -> list[dict[str, Any]]:
    """One row per backup of ``target`` in ``repo``, with its newest restore test."""
    try:
        entries = catalog.scan(repo, target)
        tested = records.newest_per_backup(records.readable(records.read_all(repo, target)))
    except BackupError as exc:
        return [{"target": target, "repository": repo.name, "error": str(exc)}]
    rows = []
    for e in entries:
        if e.manifest is not None:
            row = health.describe_backup(e.manifest)
            last = tested.get(e.id)
            row["last_verification"] = (
                {"verdict": last.verdict, "finished_at": last.finished_at, "result": last.id}
                if last
                else None
            )
        elif e.error:
            row = {"id": e.id, "state": "corrupt", "error": e.error}
        else:
            row = {"id": e.id, "state": "incomplete", "size_bytes": e.stored_bytes}
        rows.append({"target": target, "repository": repo.name, **row})
    return rows


def _foreign_rows(target: Target) -> list[dict[str, Any]]:
    """A foreign target's backups as its tool lists them, with their newest restore test
    from the results repository."""
    assert target.settings.foreign is not None
    report = foreign.health(
        target.settings.foreign,
        Runner(),
        target.name,
        target.settings.max_backup_age_seconds,
        verify=False,
    )
    where = report.repositories[0].repository
    if not report.repositories[0].reachable:
        return [{"target": target.name, "repository": where, "error": "; ".join(report.problems)}]
    with opened(target.settings.repositories) as repos:
        tested = records.newest_per_backup(
            records.readable(records.read_all(repos[0], target.name))
        )
    rows = []
    for row in report.repositories[0].backups:
        last = tested.get(row["id"])
        row["last_verification"] = (
            {"verdict": last.verdict, "finished_at": last.finished_at, "result": last.id}
            if last
            else None
        )
        rows.append({"target": target.name, "repository": where, **row})
    return rows


def cmd_list(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    doc: list[dict[str, Any]] = []
    for target in targets:
        if target.settings.foreign is not None:
            doc += _foreign_rows(target)
            continue
        with opened(target.settings.repositories) as repos:
            for repo in repos:
                doc += _rows(target.name, repo)
    if args.json:
        out_json({"backups": doc})
        return EXIT_OK
    from pgproof.progress import human_bytes

    width = max([len("REPOSITORY"), *(len(str(row["repository"])) for row in doc)])
    print(
        f"{'TARGET':<12} {'REPOSITORY':<{width}} {'BACKUP':<34} {'KIND':<9} {'STATE':<10} "
        f"{'SIZE':>10}  LAST VERIFIED"
    )
    for row in doc:
        if "error" in row and "id" not in row:
            print(f"{row['target']:<12} {row['repository']:<{width}} unreachable: {row['error']}")
            continue
        size = human_bytes(row.get("size_bytes", 0))
        last = row.get("last_verification")
        shown = f"{last['verdict']} {last['finished_at']}" if last else "never"
        print(
            f"{row['target']:<12} {row['repository']:<{width}} {row['id']:<34} "
            f"{row.get('kind', '-'):<9} {row['state']:<10} {size:>10}  {shown}"
        )
    return EXIT_OK


def cmd_check(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    reports = []
    interactive = not args.json and sys.stderr.isatty()

    def on_file(what: str) -> None:
        sys.stderr.write(f"\r\033[Kchecking {what}")
        sys.stderr.flush()

    for target in targets:
        if target.settings.foreign is not None:
            reports.append(
                foreign.health(
                    target.settings.foreign,
                    Runner(),
                    target.name,
                    target.settings.max_backup_age_seconds,
                    verify=not args.no_data,
                )
            )
            continue
        with opened(target.settings.repositories) as repos:
            report = health.check(
                target.name,
                repos,
                target.settings.max_backup_age_seconds,
                verify_data=not args.no_data,
                on_file=on_file if interactive else None,
            )
        if interactive:
            sys.stderr.write("\r\033[K")
        reports.append(report)
    healthy = all(r.healthy for r in reports)
    if args.json:
        out_json({"healthy": healthy, "targets": [r.to_dict() for r in reports]})
        return EXIT_OK if healthy else EXIT_FAILED
    for r in reports:
        print(f"target {r.target}: {'healthy' if r.healthy else 'PROBLEMS'}")
        for rep in r.repositories:
            wal = rep.wal
            print(
                f"  {rep.repository} ({rep.location}): {len(rep.backups)} backups, "
                f"WAL {wal.get('first') or '-'} .. {wal.get('last') or '-'}"
            )
            enc = rep.encryption
            if enc:
                counts = ", ".join(f"{k}: {n}" for k, n in enc["objects_per_key"].items())
                print(
                    f"    encrypted, master key {enc['current_key']}; objects per key "
                    f"({enc['counted']}): {counts or 'none read'}"
                )
        for problem in r.problems:
            print(f"  - {problem}")
    return EXIT_OK if healthy else EXIT_FAILED
