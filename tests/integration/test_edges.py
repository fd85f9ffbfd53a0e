"""Verdict truth at the edges (issue 22): healthy or half-healthy situations the other
modules never build, each with the verdict it must get and the cause it must name, and a
proof that nothing in the repository changed but the record.

- databases with nothing for amcheck to check (empty, only views, partitioned parents,
  materialized views WITH NO DATA, foreign tables): not applicable, never an error;
- a PITR target in a span where the source was down: judged at the point the WAL shows;
- a restore test whose sandbox runs out of disk: an error naming where and how much;
- a manifest that exists and cannot be read: failed, naming the object, with a record.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import heartbeat_running, load_json
from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.pgcluster import available_majors

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edges() -> Iterator[Setup]:
    """One source (filesystem repository) shared by the module's tests, in order."""
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None)
    try:
        yield setup
    finally:
        destroy_setup(setup)


def repository_files(setup: Setup) -> dict[str, bytes]:
    """Every stored object but the records (what a restore test may add)."""
    return {
        str(p.relative_to(setup.repo_dir)): p.read_bytes()
        for p in sorted(setup.repo_dir.rglob("*"))
        if p.is_file() and "results" not in p.parts
    }


def verify(setup: Setup, *args: str) -> tuple[int, dict[str, Any]]:
    proc = setup.pgproof("verify", "--json", *args)
    assert proc.stdout, proc.stderr
    record: dict[str, Any] = load_json(proc.stdout)["results"][0]
    return proc.returncode, record


def check_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in record["checks"] if c["name"] == name)
    return found


# -- 1. nothing to check is not applicable -----------------------------------------------


def test_databases_with_nothing_to_check_are_not_applicable(edges: Setup) -> None:
    c = edges.cluster
    c.sql("create database fresh")  # a new service's database: nothing in it yet
    c.sql("create database shapes")
    for statement in (
        "create view v as select 1 as one",
        "create table parent (id int, at date) partition by range (at)",
        "create index on parent (id)",  # a partitioned index: no storage either
        "create extension file_fdw",
        "create server files foreign data wrapper file_fdw",
        "create foreign table outside (line text) server files options (filename '/dev/null')",
    ):
        c.sql(statement, dbname="shapes")
    edges.pgproof("backup", "logical", check=True)
    before = repository_files(edges)
    code, record = verify(edges, "--kind", "logical")
    print("all empty:", record["verdict"], check_of(record, "amcheck"))
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert repository_files(edges) == before
    amcheck = check_of(record, "amcheck")
    assert amcheck["verdict"] == "passed" and amcheck["evidence"]["applicable"] is False
    assert "not applicable: nothing to check" in amcheck["detail"]
    reasons = amcheck["evidence"]["not_applicable"]
    assert set(reasons) >= {"postgres", "fresh", "shapes"}
    assert "it is empty" in reasons["fresh"]
    for held in ("1 view(s)", "foreign table", "partitioned", "1 extension(s)"):
        assert held in reasons["shapes"], reasons["shapes"]

    # one database of several holds a table, another a materialized view WITH NO DATA (an
    # empty heap pg_amcheck checks): both are checked, the empty one is named
    c.sql("create database later")
    c.sql("create materialized view mv as select 1 as one with no data", dbname="later")
    c.sql("create table items (id int primary key, name text)", dbname="fresh")
    c.sql("insert into items select g, 'n' || g from generate_series(1, 50) g", dbname="fresh")
    edges.pgproof("backup", "logical", check=True)
    before = repository_files(edges)
    code, record = verify(edges, "--kind", "logical")
    print("one of several:", record["verdict"], check_of(record, "amcheck"))
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    amcheck = check_of(record, "amcheck")
    assert amcheck["evidence"]["user_heap_tables"] >= 1 and amcheck["evidence"]["indexes"] >= 1
    assert set(amcheck["evidence"]["not_applicable"]) == {"postgres", "shapes"}
    assert repository_files(edges) == before


# -- 2. a PITR target in a span where the source was down ------------------------------


def test_a_target_while_the_source_was_down_is_judged_where_the_wal_ends(edges: Setup) -> None:
    """The heartbeat beats, the source is stopped for longer than the heartbeat's window
    (1 s beats, 5 s of slack), started again and beats again: a target inside the outage
    is proven at the last commit before it, and the evidence says what the WAL shows."""
    c = edges.cluster
    with heartbeat_running(edges):
        time.sleep(1.5)
        edges.pgproof("backup", "physical", check=True)
        time.sleep(2.5)
    c.stop()
    down_from = dt.datetime.now(dt.UTC)
    time.sleep(14)
    down_to = dt.datetime.now(dt.UTC)
    c.start()
    with heartbeat_running(edges):
        time.sleep(3)
    edges.wait_archived(c.switch_wal())
    before = repository_files(edges)
    target = down_from + (down_to - down_from) * 0.6
    code, record = verify(
        edges, "--kind", "physical", "--pitr", target.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    beat = check_of(record, "heartbeat")
    print("target in the outage:", record["verdict"], beat)
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert beat["verdict"] == "passed" and beat["evidence"]["anchor"] == "last replayed commit"
    quiet = beat["evidence"]["quiet_span"]
    assert "no commit between" in quiet and "replay stopped before the next commit" in quiet
    assert dt.datetime.fromisoformat(beat["evidence"]["window_end"]) <= down_from
    assert repository_files(edges) == before


def _tree(path: Path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*"))
