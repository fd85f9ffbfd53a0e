"""The checks run on a restored sandbox; each returns a verdict with evidence.

A check that could not run is an ``error``, never a pass. Names are stable (they appear in
result records, metrics and reports): ``restore_errors``, ``row_counts``, ``amcheck``,
``readable``, ``checksums``, ``heartbeat``, ``wal_replay`` and ``custom:<name>``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from backups import catalog
from backups.errors import CommandError
from verifier.errors import VerifierError
from verifier.records import CheckResult
from verifier.sandbox import Sandbox

MAX_LISTED = 20


def guarded(name: str, body: Callable[[], CheckResult]) -> CheckResult:
    """Run a check; anything that stops it from running makes it an error, not a pass."""
    started = time.monotonic()
    try:
        result = body()
    except (VerifierError, psycopg.Error, CommandError, OSError) as exc:
        result = CheckResult(name, "error", f"could not run: {str(exc).strip()[:2000]}")
    result.evidence.setdefault("seconds", round(time.monotonic() - started, 3))
    return result


def restore_errors(errors: Sequence[str], ignored: Sequence[str] = ()) -> CheckResult:
    evidence: dict[str, Any] = {"count": len(errors)}
    if ignored:  # known statements of a newer pg_dump that an older server rejects harmlessly
        evidence["ignored"] = sorted(set(ignored))[:MAX_LISTED]
        evidence["ignored_count"] = len(ignored)
    if not errors:
        return CheckResult("restore_errors", "passed", "the restore reported no error", evidence)
    evidence["errors"] = list(errors[:MAX_LISTED])
    return CheckResult(
        "restore_errors",
        "failed",
        f"{len(errors)} restore errors, first: {errors[0][:300]}",
        evidence,
    )


def row_counts(sandbox: Sandbox, manifest: catalog.Manifest) -> CheckResult:
    """Every table's row count equals the count taken at the dump's snapshot."""
    mismatches: list[str] = []
    compared = 0
    for dump in manifest.databases:
        with sandbox.connect(dump.name) as conn:
            for t in dump.tables:
                query = sql.SQL("select count(*) from only {}.{}").format(
                    sql.Identifier(t.schema), sql.Identifier(t.table)
                )
                try:
                    row = conn.execute(query).fetchone()
                    found = int(row[0]) if row else -1
                except psycopg.errors.UndefinedTable:
                    found = -1
                compared += 1
                if found != t.rows:
                    shown = "missing" if found < 0 else str(found)
                    mismatches.append(
                        f"{dump.name}.{t.schema}.{t.table}: {shown} rows, dump had {t.rows}"
                    )
    evidence: dict[str, Any] = {"tables": compared, "mismatches": mismatches[:MAX_LISTED]}
    if mismatches:
        return CheckResult(
            "row_counts", "failed", f"{len(mismatches)} tables differ: {mismatches[0]}", evidence
        )
    return CheckResult(
        "row_counts", "passed", f"{compared} tables match the dump's snapshot", evidence
    )


_BTREES = """
select c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
from pg_index i
join pg_class c on c.oid = i.indexrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_am a on a.oid = c.relam
where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready
order by 2
"""


def amcheck(sandbox: Sandbox, databases: Sequence[str], heapallindexed: bool) -> CheckResult:
    corrupt: list[str] = []
    checked = 0
    for db in databases:
        with sandbox.connect(db) as conn:
            conn.execute("create extension if not exists amcheck")
            for oid, name in conn.execute(_BTREES).fetchall():
                checked += 1
                try:
                    conn.execute(
                        "select bt_index_check(index => %s::regclass, heapallindexed => %s)",
                        (oid, heapallindexed),
                    )
                except psycopg.Error as exc:
                    corrupt.append(f"{db}.{name}: {str(exc).strip().splitlines()[0]}")
    evidence = {
        "indexes": checked,
        "heapallindexed": heapallindexed,
        "corrupt": corrupt[:MAX_LISTED],
    }
    if corrupt:
        return CheckResult(
            "amcheck", "failed", f"{len(corrupt)} corrupt indexes: {corrupt[0]}", evidence
        )
    return CheckResult("amcheck", "passed", f"{checked} btree indexes verified", evidence)


def readable(sandbox: Sandbox, databases: Sequence[str], timeout: float) -> CheckResult:
    """Read every table in full: pg_dump to /dev/null per database."""
    failures: list[str] = []
    for db in databases:
        try:
            sandbox.run(
                "pg_dump",
                [
                    "--format=custom",
                    "--compress=0",
                    "--no-sync",
                    "--file=/dev/null",
                    f"--dbname={sandbox.conninfo(db)}",
                ],
                timeout=timeout,
            )
        except CommandError as exc:
            failures.append(f"{db}: {exc.stderr_tail.strip()[-500:]}")
    if failures:
        return CheckResult(
            "readable",
            "failed",
            f"unreadable data in {failures[0]}",
            {"databases": list(databases), "failures": failures},
        )
    return CheckResult(
        "readable",
        "passed",
        f"every table of {len(databases)} database(s) read in full",
        {"databases": list(databases)},
    )


def checksums(sandbox: Sandbox, enabled: bool, timeout: float) -> CheckResult:
    """pg_checksums --check on the stopped cluster (when the backup has data checksums)."""
    if not enabled:
        return CheckResult(
            "checksums",
            "passed",
            "data checksums are off on the source: skipped",
            {"skipped": True},
        )
    try:
        res = sandbox.run("pg_checksums", ["--check", "-D", str(sandbox.data_dir)], timeout=timeout)
    except CommandError as exc:
        return CheckResult("checksums", "failed", f"pg_checksums: {exc.stderr_tail.strip()[-500:]}")
    summary = res.stdout.decode(errors="replace").strip().splitlines()
    return CheckResult(
        "checksums", "passed", "every page's checksum verified", {"pg_checksums": summary[-6:]}
    )


def custom(sandbox: Sandbox, name: str, query: str, dbname: str) -> CheckResult:
    """A custom assertion: its first column of its first row must be true."""
    check = f"custom:{name}"
    try:
        with sandbox.connect(dbname) as conn:
            row = conn.execute(query.encode()).fetchone()
    except psycopg.Error as exc:
        return CheckResult(
            check, "failed", f"the query failed: {str(exc).strip()[:500]}", {"sql": query}
        )
    value = row[0] if row else None
    if value is True:
        return CheckResult(check, "passed", "true", {"sql": query})
    return CheckResult(check, "failed", f"returned {value!r}, expected true", {"sql": query})


def heartbeat(
    sandbox: Sandbox, dbname: str, target: dt.datetime, interval: float, slack: float
) -> CheckResult:
    """After recovering to ``target``: newest beat in [target - interval - slack, target]."""
    with sandbox.connect(dbname) as conn:
        try:
            row = conn.execute(
                "select beat_at, beats from pgproof.heartbeat where id = 1"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return CheckResult(
                "heartbeat", "failed", "pgproof.heartbeat is not in the restored data"
            )
    if row is None:
        return CheckResult("heartbeat", "failed", "pgproof.heartbeat has no row")
    beat: dt.datetime = row[0]
    lower = target - dt.timedelta(seconds=interval + slack)
    evidence = {
        "beat_at": beat.isoformat(),
        "beats": int(row[1]),
        "target": target.isoformat(),
        "window_start": lower.isoformat(),
        "interval_seconds": interval,
        "slack_seconds": slack,
    }
    if beat > target:
        return CheckResult(
            "heartbeat",
            "failed",
            f"replay went past the target: a beat at {beat.isoformat()} is after it",
            evidence,
        )
    if beat < lower:
        return CheckResult(
            "heartbeat",
            "failed",
            f"replay stopped early: newest beat {beat.isoformat()} is older than "
            f"{lower.isoformat()}",
            evidence,
        )
    return CheckResult(
        "heartbeat",
        "passed",
        f"newest beat {beat.isoformat()} is within {interval + slack:g} s before the target",
        evidence,
    )
