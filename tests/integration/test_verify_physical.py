"""verify --kind physical: restore, PITR with the heartbeat proof, and what it must catch."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.integration.helpers import backup_under_heartbeat, load_json, repos_of, seed
from tests.support.fixtures import Setup

pytestmark = pytest.mark.integration


def verify(setup: Setup, *args: str) -> tuple[int, dict[str, Any]]:
    proc = setup.pgproof("verify", "--kind", "physical", "--json", *args)
    assert proc.stdout, proc.stderr
    return proc.returncode, load_json(proc.stdout)


def test_physical_pitr_random_passes_with_heartbeat_proof(setup_matrix: Setup) -> None:
    s = setup_matrix
    seed(s)
    backup_id = backup_under_heartbeat(s, 6)
    before = {
        r.name: sorted((i.key, i.size) for i in r.listing("main/") if "/results/" not in i.key)
        for r in repos_of(s)
    }
    code, doc = verify(s, "--pitr", "random")
    record = doc["results"][0]
    assert code == 0, record["cause"]
    assert record["backup_id"] == backup_id and record["verdict"] == "passed"
    checks = {c["name"]: c for c in record["checks"]}
    assert set(checks) >= {
        "verifybackup",
        "wal_replay",
        "heartbeat",
        "amcheck",
        "readable",
        "checksums",
    }
    assert record["pitr"]["mode"] == "time" and record["pitr"]["reached_lsn"]
    target = dt.datetime.fromisoformat(record["pitr"]["target_time"])
    beat = dt.datetime.fromisoformat(checks["heartbeat"]["evidence"]["beat_at"])
    assert target - dt.timedelta(seconds=7) <= beat <= target
    assert set(record["phases"]) >= {"fetch", "recovery", "checks", "total"}
    # the restore test wrote nothing but its record
    after = {
        r.name: sorted((i.key, i.size) for i in r.listing("main/") if "/results/" not in i.key)
        for r in repos_of(s)
    }
    assert after == before


def test_physical_latest_replays_the_whole_archive(setup15: Setup) -> None:
    seed(setup15)
    setup15.pgproof("backup", "physical", check=True)
    setup15.cluster.sql("create table after_backup as select g from generate_series(1, 5000) g")
    setup15.wait_archived(setup15.cluster.switch_wal())
    setup15.edit_config(
        lambda d: d["targets"][0].update(
            checks=[
                {"name": "after_backup_there", "sql": "select count(*) = 5000 from after_backup"}
            ],
            heartbeat={"enabled": False},
        )
    )
    code, doc = verify(setup15, "--pitr", "latest")
    record = doc["results"][0]
    assert code == 0, record["cause"]
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["custom:after_backup_there"]["verdict"] == "passed"
    assert checks["wal_replay"]["verdict"] == "passed"


def test_pitr_to_an_lsn_and_to_a_restore_point(setup15: Setup) -> None:
    s = setup15
    s.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    seed(s)
    s.pgproof("backup", "physical", check=True)
    s.cluster.sql("create table before_point as select 1 as x")
    s.cluster.sql("select pg_create_restore_point('pgproof-test-point')")
    lsn = s.cluster.sql("select pg_current_wal_lsn()::text")[0][0]
    s.cluster.sql("create table after_point as select 1 as x")
    s.wait_archived(s.cluster.switch_wal())
    s.edit_config(
        lambda d: d["targets"][0].update(
            checks=[
                {"name": "before_there", "sql": "select to_regclass('before_point') is not null"},
                {"name": "after_absent", "sql": "select to_regclass('after_point') is null"},
            ]
        )
    )
    for spec in (f"lsn:{lsn}", "name:pgproof-test-point"):
        code, doc = verify(s, "--pitr", spec)
        record = doc["results"][0]
        assert code == 0, (spec, record["cause"])
        assert record["pitr"]["stop_reason"], record["pitr"]
        checks = {c["name"]: c["verdict"] for c in record["checks"]}
        assert checks["custom:before_there"] == checks["custom:after_absent"] == "passed"


def test_a_bad_wal_copy_is_skipped_and_named(setup15: Setup) -> None:
    """One repository's copy of a segment has a flipped byte, the other is intact: the
    restore test replays the good copy and passes, and names the bad one as evidence."""
    seed(setup15)
    backup_under_heartbeat(setup15, 2)
    wal = setup15.repo_dir / "main" / "wal"
    segment = sorted(p for p in wal.iterdir() if len(p.name) == 28 and p.suffix == ".zst")[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    code, doc = verify(setup15)
    record = doc["results"][0]
    assert code == 0, record["cause"]
    replay = next(c for c in record["checks"] if c["name"] == "wal_replay")
    assert replay["evidence"]["bad_copies_count"] == 1
    assert replay["evidence"]["bad_copies_skipped"][0].startswith("local: ")
    assert segment.name in replay["evidence"]["bad_copies_skipped"][0]
    assert "1 bad WAL copies skipped" in replay["detail"]
