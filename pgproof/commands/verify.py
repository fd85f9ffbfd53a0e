"""``verify`` (a restore test) and ``report`` (the audit report, the chain check)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pgproof import __version__
from pgproof.backups.errors import LockHeld
from pgproof.backups.kinds import KINDS, Kind
from pgproof.backups.lock import target_lock
from pgproof.backups.runner import Runner
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.factory import opened
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out_json, progress_for
from pgproof.verifier.errors import NoBackup, TargetError, VerifierError
from pgproof.verifier.records import ResultRecord


def cmd_verify(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof.verifier.job import VerifyRequest
    from pgproof.verifier.run import verify

    target = targets[0]

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the sandbox's clean-up

    signal.signal(signal.SIGTERM, terminate)
    kinds: Sequence[Kind] = [args.kind] if args.kind else KINDS
    backup_id = None if args.backup in (None, "latest") else args.backup
    results: list[ResultRecord] = []
    try:
        with (
            opened(target.settings.repositories) as repos,
            target_lock(target.settings.lock_dir, target.name, "verify"),
        ):
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
                    results.append(
                        verify(request, repos, Runner(), __version__, progress_for(args), warn=err)
                    )
                except NoBackup as exc:
                    if args.kind is None and exc.backup_id is None:
                        continue  # verifying "everything": a kind never backed up is no failure
                    err(f"verify {target.name}: {exc}")
                    return EXIT_USAGE
                except TargetError as exc:
                    err(f"verify {target.name}: {exc}")
                    return EXIT_USAGE
    except (LockHeld, VerifierError) as exc:
        err(str(exc))
        return EXIT_FAILED
    if not results:
        err(f"verify {target.name}: no complete backup to test")
        return EXIT_FAILED
    status = EXIT_OK if all(r.passed for r in results) else EXIT_FAILED
    if args.json:
        out_json({"passed": status == EXIT_OK, "results": [r.to_dict() for r in results]})
        return status
    for r in results:
        _print_result(r)
    return status


def _print_result(r: ResultRecord) -> None:
    total = r.phases.get("total", 0.0)
    rpo = f", RPO {r.rpo_seconds:.0f} s" if r.rpo_seconds is not None else ""
    print(f"{r.kind} backup {r.backup_id}: {r.verdict.upper()} in {total:.1f} s{rpo}")
    if r.pitr is not None:
        print(f"  recovered to {r.pitr.reached_time} (LSN {r.pitr.reached_lsn})")
    for c in r.checks:
        print(f"  [{c.verdict:^7}] {c.name}: {c.detail}")
    if r.cause:
        print(f"  cause: {r.cause}")
    print(f"  record: {r.target}/results/{r.id}.json")


def cmd_report(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof.verifier import report

    with opened(cfg.repositories) as repos:
        if args.verify_chain:
            return _verify_chain(cfg, targets, repos, args.json)
        from pgproof.verifier import signing

        try:
            trust = signing.trust_of(cfg.verifier.trusted_keys, cfg.verifier.unsigned_before)
        except signing.SigningKeyError as exc:
            err(f"report: {exc}")
            return EXIT_USAGE
        model = report.build(
            report.inputs([t.settings for t in targets], repos), __version__, trust=trust
        )
    text = report.to_json(model) if args.format == "json" else report.render_html(model)
    if args.out:
        tmp = f"{args.out}.tmp-{os.getpid()}"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, args.out)
        err(f"report written to {args.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _verify_chain(
    cfg: Config, targets: tuple[Target, ...], repos: list[Repository], as_json: bool
) -> int:
    """The hash chain of every target's records and, when the config trusts public keys,
    every record's signature (unsigned, forged and unknown-key records named)."""
    from pgproof.verifier import chain, report, signing

    keys = None
    if cfg.verifier.trusted_keys:
        try:
            keys = signing.trusted(cfg.verifier.trusted_keys)
        except signing.SigningKeyError as exc:
            err(f"report --verify-chain: {exc}")
            return EXIT_USAGE
    doc: dict[str, Any] = {
        "targets": {},
        "intact": True,
        "signatures": "checked" if keys is not None else "not checked (no verifier.trusted_keys)",
    }
    for item in report.inputs([t.settings for t in targets], repos):
        checked, problems, errors = chain.verify_target(
            item.repos, item.name, keys, cfg.verifier.unsigned_before
        )
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
        out_json(doc)
    else:
        print(f"signatures: {doc['signatures']}")
    return EXIT_OK if doc["intact"] else EXIT_FAILED
