"""The checks run on a restored sandbox; each returns a verdict with evidence.

A check that could not run is an ``error``, never a pass; a check that does not apply says
so in its evidence (``applicable: false``) and passes; only evidence of damage is
``failed``. Names are stable (they appear in result records, metrics and reports):
``restore_errors``, ``row_counts``, ``database_properties``, ``roles``, ``amcheck``,
``readable``, ``checksums``, ``heartbeat`` (verifier.heartbeat), ``verifybackup`` and
``wal_replay`` (verifier.physical) and ``custom:<name>``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgproof.backups import catalog, dbprops
from pgproof.backups.errors import CommandError
from pgproof.verifier.errors import VerifierError
from pgproof.verifier.records import CheckResult
from pgproof.verifier.sandbox import Sandbox

MAX_LISTED = 20


def guarded(name: str, body: Callable[[], CheckResult]) -> CheckResult:
    """Run a check; anything that stops it from running makes it an error, not a pass."""
    started = time.monotonic()
    try:
        result = body()
    except (VerifierError, psycopg.Error, CommandError, OSError) as exc:
        result = CheckResult(name, "error", f"could not run: {str(exc).strip()[:2000]}")
    if "seconds" in result.evidence:
        return result
    evidence = {**result.evidence, "seconds": round(time.monotonic() - started, 3)}
    return dataclasses.replace(result, evidence=evidence)


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


def _foreign(manifest: catalog.Manifest) -> str | None:
    """The tool that made a backup pgproof did not make (its manifest is pgproof's reading
    of the tool's files), None for pgproof's own."""
    source = manifest.extra.get("source")
    return str(source) if source else None


def restored_counts(sandbox: Sandbox, databases: Sequence[str]) -> dict[str, dict[str, int]]:
    """Rows of every user table of each restored database (``schema.table`` -> rows)."""
    found: dict[str, dict[str, int]] = {}
    listing = sql.SQL(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')"
        " and n.nspname !~ '^pg_toast' order by 1, 2"
    )
    for db in databases:
        counts: dict[str, int] = {}
        with sandbox.connect(db) as conn:
            for schema, table in conn.execute(listing).fetchall():
                query = sql.SQL("select count(*) from only {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                counts[f"{schema}.{table}"] = int(row[0]) if row else 0
        found[db] = counts
    return found


def row_counts(sandbox: Sandbox, manifest: catalog.Manifest) -> CheckResult:
    """Every table's row count equals the count taken at the dump's snapshot. Another tool's
    dumps record no counts: then the restored counts are the evidence (every table read)."""
    tool = _foreign(manifest)
    if tool is not None and not any(d.tables for d in manifest.databases):
        counts = restored_counts(sandbox, [d.name for d in manifest.databases])
        tables = sum(len(c) for c in counts.values())
        rows = sum(sum(c.values()) for c in counts.values())
        return CheckResult(
            "row_counts",
            "passed",
            f"not applicable: dumps made outside pgproof ({tool}) record no row counts to "
            "compare with; restored "
            f"{tables} tables holding {rows} rows (each read in full)",
            {
                "applicable": False,
                "restored_tables": tables,
                "restored_rows": rows,
                "restored": {db: dict(list(c.items())[:200]) for db, c in counts.items()},
            },
        )
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


def database_properties(sandbox: Sandbox, manifest: catalog.Manifest) -> CheckResult:
    """Each restored database has what the dump's snapshot recorded: encoding, locale and
    provider, owner, connection limit, ACL, comment, settings and large objects."""
    differences: list[str] = []
    compared: list[str] = []
    for dump in manifest.databases:
        if dump.properties is None:
            continue
        with sandbox.connect(dump.name) as conn:
            restored = dbprops.read_properties(conn)
        compared.append(dump.name)
        differences += [f"{dump.name}: {d}" for d in dump.properties.differences(restored)]
    evidence: dict[str, Any] = {"databases": compared, "differences": differences[:MAX_LISTED]}
    if not compared:
        why = (
            f"dumps made outside pgproof ({_foreign(manifest)}) record no properties apart "
            "from what they hold (restored as the dump describes its database)"
            if _foreign(manifest)
            else "the backup recorded no database properties (made by an older pgproof)"
        )
        return CheckResult(
            "database_properties",
            "passed",
            f"not applicable: {why}",
            {**evidence, "applicable": False},
        )
    evidence["large_objects"] = sum(
        d.properties.large_objects for d in manifest.databases if d.properties
    )
    if differences:
        return CheckResult(
            "database_properties",
            "failed",
            f"{len(differences)} database properties differ: {differences[0]}",
            evidence,
        )
    return CheckResult(
        "database_properties",
        "passed",
        f"{len(compared)} database(s) restored with their encoding, locale, owner, settings, "
        f"ACL, comment and {evidence['large_objects']} large object(s)",
        evidence,
    )


def roles(sandbox: Sandbox, manifest: catalog.Manifest) -> CheckResult:
    """The roles of the globals dump exist with their attributes, memberships and settings."""
    if manifest.roles is None:
        reason = (
            "the backup has no globals dump"
            if not any(f.role == "globals" for f in manifest.files)
            else f"the globals file made outside pgproof ({_foreign(manifest)}) was restored; "
            "no separate record of its roles exists to compare with (restore_errors covers "
            "its statements)"
            if _foreign(manifest)
            else "the backup did not record its roles (an older pgproof, or roles changed "
            "while the globals were dumped)"
        )
        return CheckResult("roles", "passed", f"not applicable: {reason}", {"applicable": False})
    with sandbox.connect() as conn:
        # the sandbox's own superuser is left out unless it stands for the source's
        own = () if sandbox.user == manifest.superuser else (sandbox.user,)
        restored = dbprops.read_roles(conn, exclude=own)
    differences = dbprops.role_differences(manifest.roles, restored)
    evidence: dict[str, Any] = {
        "roles": len(manifest.roles),
        "differences": differences[:MAX_LISTED],
    }
    if differences:
        return CheckResult(
            "roles", "failed", f"{len(differences)} role differences: {differences[0]}", evidence
        )
    return CheckResult(
        "roles",
        "passed",
        f"{len(manifest.roles)} roles restored with their attributes and memberships",
        evidence,
    )


# characters; anything unbounded, a domain or an array counts as unbounded).
_COMPRESSIBLE = """
select '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"'
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and c.relpersistence <> 't'
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp_)'
  and (select coalesce(sum(case
          when a.attlen > 0 then a.attlen
          when t.typname in ('varchar', 'bpchar') and a.atttypmod > 4
            then (a.atttypmod - 4) * pg_encoding_max_length(
                   (select encoding from pg_database where datname = current_database())) + 4
          else 100000 end), 0)
       from pg_attribute a join pg_type t on t.oid = a.atttypid
       where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) + 32 >= %s
order by 1
"""
TOAST_THRESHOLD = 2000  # a little under TOAST_TUPLE_THRESHOLD (2032 bytes with 8 kB pages)


def readable(
    sandbox: Sandbox, databases: Sequence[str], data_checksums: bool, timeout: float
) -> CheckResult:
    """What pg_amcheck does not see: damage inside compressed values (verify_heapam checks
    tuple and TOAST structure, never decompresses). Every table that can hold a compressed
    value, and the large objects, are read in full with pg_dump (which decompresses and
    prints every value). With data checksums on, pg_checksums verifies every byte of every
    page instead, and this check does not apply."""
    if data_checksums:
        return CheckResult(
            "readable",
            "passed",
            "not applicable: data checksums are on (checksums verifies every page, amcheck "
            "every tuple): reading every value again adds nothing",
            {"applicable": False},
        )
    failures: list[str] = []
    read: dict[str, int] = {}
    for db in databases:
        with sandbox.connect(db) as conn:
            tables = [str(r[0]) for r in conn.execute(_COMPRESSIBLE, (TOAST_THRESHOLD,))]
        read[db] = len(tables)
        args = ["--format=custom", "--compress=0", "--no-sync", "--file=/dev/null", "--blobs"]
        if not tables:
            args.append("--exclude-table-data=*")  # the large objects' data still comes
        args += [f"--table={t}" for t in tables]
        args.append(f"--dbname={sandbox.conninfo(db)}")
        try:
            sandbox.run("pg_dump", args, timeout=timeout)
        except CommandError as exc:
            failures.append(f"{db}: {exc.stderr_tail.strip()[-500:]}")
    evidence: dict[str, Any] = {"databases": list(databases), "tables_read": read}
    if failures:
        evidence["failures"] = failures
        return CheckResult("readable", "failed", f"unreadable data in {failures[0]}", evidence)
    return CheckResult(
        "readable",
        "passed",
        f"{sum(read.values())} table(s) that can hold compressed values and the large objects "
        f"read in full (other tables have no row wide enough to be compressed)",
        evidence,
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
