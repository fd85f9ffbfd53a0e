"""Damage the backup faithfully copies: a source without data checksums with a broken heap
page, TOAST chunk, index page and compressed value (stopped, bytes changed, started).
pg_basebackup copies the damage; the physical restore test fails and names each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import load_json
from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.pagedamage import break_btree_order, break_heap_tuple, break_tuple_data
from tests.support.pgcluster import available_majors

pytestmark = pytest.mark.integration


@pytest.fixture
def no_checksums() -> Iterator[Setup]:
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None, checksums=False)
    try:
        yield setup
    finally:
        destroy_setup(setup)


def test_heap_toast_and_index_damage_is_named(no_checksums: Setup) -> None:
    s = no_checksums
    c = s.cluster
    s.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    off = "with (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
    c.sql(f"create table ledger (id int primary key, note text) {off}")
    c.sql("insert into ledger select g, 'entry ' || g from generate_series(1, 2000) g")
    c.sql(f"create table documents (id int, body text) {off}")
    c.sql("alter table documents alter column body set storage external")  # TOAST, no pglz
    c.sql(
        "insert into documents select g, (select string_agg(md5(g::text || i::text), '')"
        " from generate_series(1, 100) i) from generate_series(1, 50) g"
    )
    # a compressed value (pglz, inline): only decompressing it sees damage inside it
    c.sql(f"create table notes (id int, body text) {off}")
    c.sql("insert into notes values (1, repeat('abcdefgh', 2000))")
    c.sql("checkpoint")
    notes = c.sql("select pg_relation_filepath('notes')")[0][0]
    rows = c.sql(
        "select pg_relation_filepath('ledger'), pg_relation_filepath('ledger_pkey'),"
        " pg_relation_filepath(reltoastrelid), reltoastrelid::regclass::text"
        " from pg_class where relname = 'documents'"
    )
    heap, index, toast, toast_name = rows[0]
    c.stop()
    data = c.datadir
    break_heap_tuple(Path(data / heap), block=2)
    break_btree_order(Path(data / index), block=1)
    break_heap_tuple(Path(data / toast), block=0)
    break_tuple_data(Path(data / notes), block=0, skip=16, length=48)
    c.start()
    s.pgproof("backup", "physical", check=True)
    proc = s.pgproof("verify", "--kind", "physical", "--json")
    record: dict[str, Any] = load_json(proc.stdout)["results"][0]
    assert proc.returncode == 1 and record["verdict"] == "failed", record["cause"]
    amcheck = next(x for x in record["checks"] if x["name"] == "amcheck")
    assert amcheck["verdict"] == "failed"
    named = " ".join(amcheck["evidence"]["damaged"])
    assert "heap table postgres.public.ledger (block 2)" in named
    assert "btree index postgres.public.ledger_pkey" in named
    assert f"heap table postgres.{toast_name} (block 0), TOAST of documents" in named
    # without data checksums, reading every compressible table is what sees inside values
    readable = next(x for x in record["checks"] if x["name"] == "readable")
    assert readable["verdict"] == "failed", readable
    assert "compressed" in readable["detail"] and "postgres" in readable["detail"]
    assert readable["evidence"]["tables_read"]["postgres"] >= 2  # documents, notes; not ledger
    # the checksums check says why it cannot help here, and does not fail for it
    checksums = next(x for x in record["checks"] if x["name"] == "checksums")
    assert checksums["verdict"] == "passed" and "off" in checksums["detail"]
