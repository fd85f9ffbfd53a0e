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
import re
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


_CHECKING = re.compile(r'^pg_amcheck: checking (heap table|btree index) "(.*)"$', re.M)
_CORRUPT = re.compile(r'^(heap table|btree index) "(.*?)"(?:, block (\d+))?[^\n]*:$', re.M)
_SYSTEM_SCHEMAS = ("pg_catalog", "pg_toast", "information_schema")


def amcheck(
    sandbox: Sandbox,
    heapallindexed: bool,
    jobs: int,
    timeout: float,
    restored: Sequence[str] | None = None,
) -> CheckResult:
    """pg_amcheck: heap and TOAST structure (verify_heapam) and every btree index, of every
    database (a physical restore: production's catalogs too), or of the ``restored``
    databases without their system catalogs (a logical restore: those are the sandbox's own
    writes). Relations it cannot check (partitioned indexes and tables, which have no
    storage; temporary and unlogged relations where they have no data) are not checked, as
    pg_amcheck decides; it reports damage with exit status 2 and the relation named."""
    args = ["--install-missing", f"--jobs={max(jobs, 1)}", "--verbose"]
    nothing: dict[str, str] = {}  # restored databases that hold nothing pg_amcheck checks
    if restored is None:
        args.append("--all")
    else:
        nothing = {db: why for db in restored if (why := _nothing_to_check(sandbox, db))}
        if len(nothing) == len(restored):
            return _nothing_applies(nothing)
        args += ["--exclude-schema=pg_catalog", "--exclude-schema=information_schema"]
        args += [
            f'--database="{db.replace(chr(34), chr(34) * 2)}"'
            for db in restored
            if db not in nothing
        ]
    if heapallindexed:
        args.append("--heapallindexed")
    res = sandbox.run("pg_amcheck", args, timeout=timeout, ok_codes=(0, 1, 2))
    out = res.stdout.decode(errors="replace")
    err = res.stderr
    checked = _CHECKING.findall(err)
    tables = [name for kind, name in checked if kind == "heap table"]
    indexes = [name for kind, name in checked if kind == "btree index"]
    damaged: dict[str, list[str]] = {}
    for kind, name, block in _CORRUPT.findall(out):
        where = f"block {block}" if block else ""
        damaged.setdefault(f"{kind} {name}", [])
        if where and where not in damaged[f"{kind} {name}"]:
            damaged[f"{kind} {name}"].append(where)
    evidence: dict[str, Any] = {
        "tool": "pg_amcheck",
        "heap_tables": len(tables),
        "indexes": len(indexes),
        "user_heap_tables": sum(1 for n in tables if _user(n)),
        "user_indexes": sum(1 for n in indexes if _user(n)),
        "heapallindexed": heapallindexed,
    }
    if nothing:
        evidence["not_applicable"] = dict(list(nothing.items())[:MAX_LISTED])
    if res.returncode == 2 or damaged:
        named = [
            f"{rel} ({', '.join(b[:3])}){_toast_owner(sandbox, rel)}" if b else rel
            for rel, b in damaged.items()
        ]
        evidence["damaged"] = named[:MAX_LISTED]
        evidence["report"] = out[-4000:]
        first = named[0] if named else out.strip().splitlines()[0] if out.strip() else "?"
        return CheckResult(
            "amcheck", "failed", f"{len(named) or 1} damaged relation(s): {first}", evidence
        )
    if res.returncode != 0 and _NO_RELATIONS in err and restored is not None:
        # what it would select and what the catalogs list disagreed: still nothing to check
        return _nothing_applies({db: "pg_amcheck found no relation to check" for db in restored})
    if res.returncode != 0:
        reason = (err.strip().splitlines() or ["?"])[-1]
        if "amcheck" in err and ("not available" in err or "control file" in err):
            reason = "the sandbox has no amcheck extension (PostgreSQL's contrib): " + reason
        return CheckResult("amcheck", "error", f"pg_amcheck could not run: {reason}", evidence)
    return CheckResult(
        "amcheck",
        "passed",
        f"{len(tables)} heap tables and {len(indexes)} btree indexes verified "
        f"({evidence['user_heap_tables']} and {evidence['user_indexes']} outside the catalogs)",
        evidence,
    )


_NO_RELATIONS = "no relations to check"
# What pg_amcheck selects outside the catalogs (heap tables, TOAST, matviews, sequences and
# btree indexes) and, beside it, what a database holds instead: the reason in the evidence
_CONTENTS = """
select count(*) filter (where c.relkind in ('r', 'm', 't', 'S', 'i') and c.relpersistence <> 't'
                          and (c.relkind <> 'i' or c.relam = 403)),
       count(*) filter (where c.relkind = 'v'),
       count(*) filter (where c.relkind in ('p', 'I')),
       count(*) filter (where c.relkind = 'f'),
       (select count(*) from pg_extension where extname <> 'plpgsql')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp_)'
"""


def _nothing_to_check(sandbox: Sandbox, db: str) -> str | None:
    """Why a restored database holds no relation pg_amcheck would check, None when it holds
    some (a materialized view WITH NO DATA is one: pg_amcheck checks its empty heap)."""
    with sandbox.connect(db) as conn:
        row = conn.execute(_CONTENTS).fetchone()
    assert row is not None
    checkable, views, partitioned, foreign, extensions = (int(v) for v in row)
    if checkable:
        return None
    held = [
        f"{n} {what}"
        for n, what in (
            (views, "view(s)"),
            (partitioned, "partitioned table(s) or index(es) without storage"),
            (foreign, "foreign table(s)"),
            (extensions, "extension(s)"),
        )
        if n
    ]
    return "no table, index or sequence outside the catalogs" + (
        f" (it holds {', '.join(held)})" if held else " (it is empty)"
    )


def _nothing_applies(nothing: dict[str, str]) -> CheckResult:
    first_db, first_why = next(iter(nothing.items()))
    return CheckResult(
        "amcheck",
        "passed",
        f"not applicable: nothing to check in {len(nothing)} restored database(s): "
        f"{first_db}: {first_why}",
        {
            "tool": "pg_amcheck",
            "applicable": False,
            "heap_tables": 0,
            "indexes": 0,
            "not_applicable": dict(list(nothing.items())[:MAX_LISTED]),
        },
    )


def _toast_owner(sandbox: Sandbox, relation: str) -> str:
    """ ", TOAST of <table>" for a damaged TOAST table (pg_amcheck names only the TOAST)."""
    db, sep, toast = relation.split(" ", 2)[-1].rpartition(".pg_toast.")  # "heap table X"
    if not sep:
        return ""
    try:
        with sandbox.connect(db) as conn:
            row = conn.execute(
                "select c.oid::regclass::text from pg_class c where c.reltoastrelid = %s::regclass",
                (f"pg_toast.{toast}",),
            ).fetchone()
    except (psycopg.Error, VerifierError):
        return ""
    return f", TOAST of {row[0]}" if row else ""


def _user(qualified: str) -> bool:
    parts = qualified.split(".")
    return len(parts) < 2 or parts[1] not in _SYSTEM_SCHEMAS


# Tables that can hold a compressed value: a row is compressed (or moved to TOAST) only when
# it is wider than the TOAST threshold (about 2 kB), so a table whose widest possible row is
# narrower never has one (fixed-width columns, varchar(n)/char(n) at the encoding's widest
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
