"""Databases nobody on this project designed, for the verdict-truth corpus:

- PostgreSQL 15's own regression database, built by ``pg_regress --use-existing`` with the
  parallel schedule from Debian's source package (``scripts/build-regress`` caches it);
- the project's rich-schema script (``tests/corpus/rich_schema.sql``), on every major.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgproof.backups.runner import Runner
from tests.support.pgcluster import Cluster, private_dir

RICH_SCHEMA = Path(__file__).resolve().parents[1] / "corpus" / "rich_schema.sql"
REGRESS_CACHE = Path(os.environ.get("PGPROOF_REGRESS_CACHE", "/var/cache/pgproof/regress")) / "15"


def load_rich_schema(cluster: Cluster) -> None:
    cluster.pg(
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        cluster.socket_dir,
        "-p",
        str(cluster.port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-f",
        str(RICH_SCHEMA),
        timeout=600,
    )


def regression_suite() -> Path:
    """The cached suite, or a skip that says how to build it."""
    if not (REGRESS_CACHE / "pg_regress").exists():
        pytest.skip(
            f"PostgreSQL's regression suite is not built: scripts/build-regress ({REGRESS_CACHE})"
        )
    return REGRESS_CACHE


@dataclass(frozen=True)
class RegressionRun:
    tests: int
    failed: int  # tests whose output differs (the database is built all the same)
    seconds: float


def build_regression(cluster: Cluster) -> RegressionRun:
    """Run the parallel schedule into a ``regression`` database that stays."""
    suite = regression_suite()
    out = private_dir("pgproof-regress-out-")
    try:
        cluster.sql("create database regression template template0 encoding 'UTF8' locale 'C'")
        for setting in (
            "lc_messages to 'C'",
            "lc_monetary to 'C'",
            "lc_numeric to 'C'",
            "lc_time to 'C'",
            "bytea_output to 'hex'",
            "timezone_abbreviations to 'Default'",
        ):
            cluster.sql(f"alter database regression set {setting}")
        res = Runner().run(
            [
                str(suite / "pg_regress"),
                "--use-existing",
                f"--bindir={cluster.bins.bin_dir}",
                f"--inputdir={suite / 'regress'}",
                f"--outputdir={out}",
                f"--dlpath={suite}",
                f"--schedule={suite / 'regress' / 'parallel_schedule'}",
                f"--host={cluster.socket_dir}",
                f"--port={cluster.port}",
                "--user=postgres",
                "--max-connections=20",
            ],
            timeout=1200,
            as_postgres=True,
            ok_codes=(0, 1),
            cwd=str(out),
        )
        text = res.stdout.decode(errors="replace")
        ran = re.findall(r"^[ +]*(?:test\s+)?\S+\s+\.\.\. (ok|FAILED|failed)", text, re.M)
        summary = re.search(r"(\d+) of (\d+) tests failed", text)
        failed = int(summary.group(1)) if summary else sum(1 for r in ran if r != "ok")
        total = int(summary.group(2)) if summary else len(ran)
        return RegressionRun(total, failed, res.seconds)
    finally:
        shutil.rmtree(out, ignore_errors=True)


COUNTS = """
select
  count(*) filter (where c.relkind = 'r' and user_schema),
  count(*) filter (where c.relkind = 'p'),
  count(*) filter (where c.relkind = 'i' and user_schema),
  count(*) filter (where c.relkind = 'I'),
  count(*) filter (where c.relkind = 'm'),
  count(*) filter (where c.relkind = 'v' and user_schema),
  count(*) filter (where c.relkind = 'f'),
  count(*) filter (where c.relkind = 'S'),
  count(*) filter (where c.relpersistence = 'u'),
  (select count(*) from pg_largeobject_metadata),
  (select count(*) from pg_extension),
  pg_database_size(current_database())
from pg_class c join pg_namespace n on n.oid = c.relnamespace,
  lateral (select n.nspname !~ '^pg_' and n.nspname <> 'information_schema' as user_schema) u
"""
COUNT_NAMES = (
    "tables",
    "partitioned tables",
    "indexes",
    "partitioned indexes",
    "matviews",
    "views",
    "foreign tables",
    "sequences",
    "unlogged relations",
    "large objects",
    "extensions",
    "bytes",
)


def object_counts(cluster: Cluster) -> dict[str, int]:
    """Objects in every database of ``cluster`` that accepts connections (for reports)."""
    total = dict.fromkeys(COUNT_NAMES, 0)
    total["databases"] = 0
    for (db,) in cluster.sql("select datname from pg_database where datallowconn"):
        row = cluster.sql(COUNTS, dbname=str(db))[0]
        for name, value in zip(COUNT_NAMES, row, strict=True):
            total[name] += int(value)
        total["databases"] += 1
    return total
