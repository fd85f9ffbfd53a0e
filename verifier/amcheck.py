"""The ``amcheck`` check: pg_amcheck over every restored database's user relations, and
what a database holds when there is nothing for it to check (empty, views, partitioned
parents, foreign tables): not applicable, never an error (verifier.checks has the others)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg

from pgproof.verifier.checks import MAX_LISTED
from pgproof.verifier.errors import VerifierError
from pgproof.verifier.records import CheckResult
from pgproof.verifier.sandbox import Sandbox

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
