"""verify --kind logical against real PostgreSQL: the pass, and the failures it must catch."""

from __future__ import annotations

from typing import Any

import pytest

from pgproof.backups import catalog
from tests.integration.helpers import load_json, repos_of, seed
from tests.support.fixtures import Setup

pytestmark = pytest.mark.integration


def verify(setup: Setup, *args: str) -> tuple[int, dict[str, Any]]:
    proc = setup.pgproof("verify", "--kind", "logical", "--json", *args)
    assert proc.stdout, proc.stderr
    return proc.returncode, load_json(proc.stdout)


def test_logical_restore_test_passes_and_is_recorded(setup_matrix: Setup) -> None:
    s = setup_matrix
    seed(s)
    s.cluster.sql("create index orders_note on orders (note)")
    s.edit_config(
        lambda d: d["targets"][0].update(
            checks=[{"name": "orders_not_empty", "sql": "select count(*) > 0 from orders"}]
        )
    )
    backup_id = s.pgproof("backup", "logical", check=True).stdout.strip()
    code, doc = verify(s)
    record = doc["results"][0]
    assert code == 0, record["cause"]
    assert record["verdict"] == "passed" and record["backup_id"] == backup_id
    names = {c["name"]: c for c in record["checks"]}
    assert set(names) == {
        "restore_errors",
        "row_counts",
        "database_properties",
        "roles",
        "amcheck",
        "custom:orders_not_empty",
    }
    assert names["database_properties"]["verdict"] == "passed"
    assert names["roles"]["evidence"]["roles"] >= 2  # postgres and reader
    assert names["row_counts"]["evidence"]["tables"] >= 2
    assert names["amcheck"]["evidence"]["indexes"] >= 3
    assert set(record["phases"]) >= {"fetch", "restore", "checks", "total"}
    assert record["sandbox"] == "process" and record["prev_sha256"] is None
    # stored in every repository, chained to the previous record of the target
    code, again = verify(s)
    assert again["results"][0]["prev_sha256"] is not None
    for repo in repos_of(s):
        keys = [i.key for i in repo.listing("main/results/")]
        assert len(keys) == 2
    listed = load_json(s.pgproof("list", "--json", check=True).stdout)["backups"]
    assert all(b["last_verification"]["verdict"] == "passed" for b in listed)


def test_flipped_byte_in_a_dump_fails_naming_the_file(setup15: Setup) -> None:
    seed(setup15)
    backup_id = setup15.pgproof("backup", "logical", check=True).stdout.strip()
    local, offsite = repos_of(setup15)
    m = catalog.read_manifest(local, "main", backup_id)
    dump = next(f for f in m.files if f.database == "app")
    for repo in (local, offsite):  # corrupt everywhere: no intact copy to fall back on
        key = catalog.backup_prefix("main", backup_id) + dump.name
        data = bytearray(repo.read_bytes(key))
        data[len(data) // 2] ^= 0x10
        repo.put_bytes(key, bytes(data))
    code, doc = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "failed"
    assert f"file {dump.name} does not match its sha256" in record["cause"]


def test_failing_custom_assertion_fails_the_test(setup15: Setup) -> None:
    seed(setup15)
    setup15.edit_config(
        lambda d: d["targets"][0].update(
            checks=[
                {"name": "enough_orders", "sql": "select count(*) > 5000 from orders"},
                {"name": "no_such_table", "sql": "select count(*) > 0 from nowhere"},
            ]
        )
    )
    setup15.pgproof("backup", "logical", check=True)
    code, doc = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "failed"
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["custom:enough_orders"]["verdict"] == "failed"
    assert "returned False" in checks["custom:enough_orders"]["detail"]
    assert checks["custom:no_such_table"]["verdict"] == "failed"
    assert "nowhere" in checks["custom:no_such_table"]["detail"]
    assert checks["row_counts"]["verdict"] == "passed"
