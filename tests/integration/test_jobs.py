"""Retention, parallel dumps, the heartbeat and WAL side files, against real PostgreSQL 15."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from typing import Any

import pytest

from pgproof.backups import catalog
from tests.integration.helpers import all_keys, complete_ids, load_json, repos_of, seed
from tests.support.fixtures import PGPROOF, Setup
from tests.support.pgcluster import private_dir

pytestmark = pytest.mark.integration


def test_parallel_directory_dump_of_chosen_databases(setup15: Setup) -> None:
    seed(setup15)
    setup15.edit_config(
        lambda d: d["targets"][0].update(logical={"jobs": 2, "databases": ["app", "postgres"]})
    )
    backup_id = setup15.pgproof("backup", "logical", check=True).stdout.strip()
    for repo in repos_of(setup15):
        m = catalog.read_manifest(repo, "main", backup_id)
        assert [d.name for d in m.databases] == ["app", "postgres"]
        assert {d.format for d in m.databases} == {"directory"}
        app = next(d for d in m.databases if d.name == "app")
        assert [(t.table, t.rows) for t in app.tables] == [("items", 250)]
        files = [f.name for f in m.files if f.database == "app"]
        assert app.file == files[0].split("/")[0] and any(f.endswith("/toc.dat") for f in files)
    assert setup15.pgproof("check").returncode == 0

    setup15.edit_config(lambda d: d["targets"][0].update(logical={"databases": ["nope"]}))
    proc = setup15.pgproof("backup", "logical")
    assert proc.returncode == 1 and "databases not found on the source: nope" in proc.stderr


def write_result(setup: Setup, backup_id: str, kind: str, verdict: str) -> None:
    """A restore-test record as the verifier writes it (DESIGN.md: result record)."""
    now = catalog.utc_iso(dt.datetime.now(dt.UTC))
    record = {
        "id": f"r-{backup_id}",
        "target": "main",
        "backup_id": backup_id,
        "kind": kind,
        "verdict": verdict,
        "started_at": now,
        "finished_at": now,
    }
    for repo in repos_of(setup):
        repo.put_bytes(f"main/results/r-{backup_id}.json", json.dumps(record).encode())


def test_retention_keeps_policy_wal_and_the_last_passed_backup(setup15: Setup) -> None:
    c = setup15.cluster
    ids = []
    for i in range(3):
        c.sql(f"create table r{i} as select 1")
        ids.append(setup15.pgproof("backup", "physical", check=True).stdout.strip())
        c.switch_wal()
    setup15.wait_archived(c.switch_wal())
    write_result(setup15, ids[0], "physical", "passed")  # the oldest passed its restore test
    write_result(setup15, ids[1], "physical", "failed")
    setup15.edit_config(lambda d: d["targets"][0].update(retention={"full_backups": 1}))

    dry = load_json(setup15.pgproof("retention", "--dry-run", "--json", check=True).stdout)
    plans = {p["repository"]: p for p in dry["retention"]}
    for plan in plans.values():
        assert plan["delete_backups"] == [ids[1]]  # ids[2] newest, ids[0] last passed
        assert sorted(plan["keep"]) == [ids[0], ids[2]]
    for repo in repos_of(setup15):
        assert complete_ids(repo) == ids  # nothing deleted by a dry run

    out = load_json(setup15.pgproof("retention", "--json", check=True).stdout)
    for repo in repos_of(setup15):
        assert complete_ids(repo) == [ids[0], ids[2]]
        assert not [k for k in all_keys(repo) if f"/backups/{ids[1]}/" in k]
    assert setup15.pgproof("check").returncode == 0  # WAL of the kept backups is whole

    write_result(setup15, ids[2], "physical", "passed")  # now the newest passed too
    out = load_json(setup15.pgproof("retention", "--json", check=True).stdout)
    plan = out["retention"][0]
    assert plan["delete_backups"] == [ids[0]]
    assert plan["delete_wal"] and plan["wal_horizon"]
    local = repos_of(setup15)[0]
    horizon = plan["wal_horizon"]
    remaining = [k.rsplit("/", 1)[-1][:24] for k in all_keys(local) if "/wal/" in k]
    assert min(n for n in remaining if n[:8] == horizon[:8]) >= horizon
    assert setup15.pgproof("check").returncode == 0


def heartbeat_row(setup: Setup) -> tuple[Any, ...]:
    return setup.cluster.sql("select beat_at, beats, interval_seconds from pgproof.heartbeat")[0]


def test_heartbeat_once_and_loop_until_sigterm(setup15: Setup) -> None:
    assert setup15.pgproof("heartbeat", "--once").returncode == 0
    first = heartbeat_row(setup15)
    assert first[1] == 1 and first[2] == 1.0
    proc = subprocess.Popen(
        [PGPROOF, "--config", str(setup15.config_path), "heartbeat"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    later = heartbeat_row(setup15)
    assert later[1] >= 3 and later[0] > first[0]
    # the source going away is reported, not a crash; the loop goes on
    setup15.cluster.stop()
    down = subprocess.Popen(
        [PGPROOF, "--config", str(setup15.config_path), "heartbeat"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert down.poll() is None
    down.send_signal(signal.SIGTERM)
    _, err = down.communicate(timeout=10)
    assert down.returncode == 0 and "cannot connect to source" in err


def test_history_partial_and_backup_files_round_trip(fs_only15: Setup) -> None:
    src = private_dir("pgproof-side-")
    files = {
        "00000002.history": b"1\t0/3000000\tno recovery target specified\n",
        "000000010000000000000003.partial": b"\x01" * 16 * 1024 * 1024,
        "000000010000000000000002.00000028.backup": b"START WAL LOCATION: 0/2000028\n",
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
        assert fs_only15.pgproof("wal-push", str(src / name)).returncode == 0
    keys = {k.rsplit("/", 1)[-1] for k in all_keys(repos_of(fs_only15)[0]) if "/wal/" in k}
    assert {"00000002.history", "000000010000000000000003.partial.zst"} <= keys
    dest = private_dir("pgproof-side-out-")
    for name, data in files.items():
        assert fs_only15.pgproof("wal-fetch", name, str(dest / "out")).returncode == 0
        assert (dest / "out").read_bytes() == data
    assert fs_only15.pgproof("wal-fetch", "00000003.history", str(dest / "out")).returncode == 1
    (src / "RECOVERYXLOG").write_bytes(b"x")
    proc = fs_only15.pgproof("wal-push", str(src / "RECOVERYXLOG"))
    assert proc.returncode == 1 and "not a WAL, history or backup file" in proc.stderr
