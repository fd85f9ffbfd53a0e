"""`pgproof heartbeat` survives what a source goes through: read-only, a restart, recovery
as a standby and a promotion. It says why it waits, keeps waiting, and beats again."""

from __future__ import annotations

import subprocess
import tempfile
import time

import pytest

from tests.integration.helpers import heartbeat_running, load_json
from tests.support.fixtures import PGPROOF, Setup, s3_env
from tests.support.pgcluster import make_cluster
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def beats(setup: Setup) -> int:
    try:
        return int(setup.cluster.sql("select beats from pgproof.heartbeat")[0][0])
    except Exception:  # noqa: BLE001 - not there yet, or the source is down
        return -1


def wait_for_more_beats(setup: Setup, than: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = beats(setup)
        if now > than:
            return now
        time.sleep(0.3)
    raise AssertionError(f"no beat after {than} within {timeout} s")


def test_heartbeat_waits_through_read_only_restart_recovery_and_promotion(
    fs_only15: Setup,
) -> None:
    s, c = fs_only15, fs_only15.cluster
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [PGPROOF, "--config", str(s.config_path), "heartbeat"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            seen = wait_for_more_beats(s, 0)

            # read-only: writes refused, the heartbeat reports and waits
            c.sql("alter system set default_transaction_read_only = on")
            c.sql("select pg_reload_conf()")
            time.sleep(3)
            assert proc.poll() is None, "the heartbeat exited on a read-only source"
            with c.connect() as conn:
                conn.execute("set default_transaction_read_only = off")
                conn.execute("alter system reset default_transaction_read_only")
                conn.execute("select pg_reload_conf()")
            seen = wait_for_more_beats(s, beats(s))

            # a restart: connections refused for a while
            c.stop()
            time.sleep(2)
            c.start()
            seen = wait_for_more_beats(s, seen)

            # a standby (as during a failover), then promoted
            c.stop()
            (c.datadir / "standby.signal").touch()
            c.start()
            time.sleep(3)
            assert proc.poll() is None, "the heartbeat exited on a source in recovery"
            stuck = beats(s)
            c.pg("pg_ctl", "-D", str(c.datadir), "-w", "promote")
            after = wait_for_more_beats(s, stuck)
            assert after > stuck
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(10)
        err.seek(0)
        log = err.read().decode()
    assert "read-only transaction" in log
    assert "is in recovery" in log and "waits for a primary" in log


def test_pitr_heartbeat_proof_passes_across_a_failover(setup15: Setup) -> None:
    """A primary and its streaming standby behind one multi-host conninfo: the backup is
    taken from the primary, the primary dies, the standby is promoted (timeline 2) and takes
    over archiving and the heartbeat. The restore test replays across the timeline switch to
    the newest WAL, and the heartbeat written by the new primary proves it got there."""
    s, primary = setup15, setup15.cluster
    standby = make_cluster(15, free_port(), env=s3_env())
    try:
        standby.pg(
            "pg_basebackup",
            "-h",
            primary.socket_dir,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(standby.datadir),
            "-R",
            "--checkpoint=fast",
            "-X",
            "stream",
        )
        standby.set(
            port=str(standby.port),
            unix_socket_directories=f"'{standby.socket_dir}'",
            archive_mode="on",  # archives once promoted
        )
        standby.start()
        both = (
            f"host={primary.socket_dir},{standby.socket_dir} "
            f"port={primary.port},{standby.port} dbname=postgres user=postgres "
            "target_session_attrs=read-write"
        )
        s.edit_config(lambda d: d["targets"][0].update(conninfo=both))
        with heartbeat_running(s):
            time.sleep(1.5)
            s.pgproof("backup", "physical", check=True, timeout=600)
            primary.sql("create table before_failover as select g from generate_series(1, 500) g")
            primary.stop("immediate")  # the primary dies
            standby.pg("pg_ctl", "-D", str(standby.datadir), "-w", "promote")
            standby.sql("create table after_failover as select g from generate_series(1, 500) g")
            deadline = time.monotonic() + 30
            promoted = standby.sql("select now()")[0][0]
            while standby.sql("select max(beat_at) from pgproof.heartbeat")[0][0] < promoted:
                assert time.monotonic() < deadline, "the heartbeat never beat on the new primary"
                time.sleep(0.3)
            time.sleep(1.5)
        s.cluster = standby  # archived WAL is now the new primary's
        s.wait_archived("00000002.history")
        s.wait_archived(standby.switch_wal())
        proc = s.pgproof("verify", "--kind", "physical", "--json", timeout=900)
        record = load_json(proc.stdout)["results"][0]
        assert proc.returncode == 0 and record["verdict"] == "passed", record["cause"]
        checks = {c["name"]: c for c in record["checks"]}
        assert checks["heartbeat"]["verdict"] == "passed", checks["heartbeat"]
        assert record["pitr"]["reached_lsn"], record["pitr"]
        assert checks["wal_replay"]["verdict"] == "passed"
    finally:
        s.cluster = primary
        standby.destroy()
