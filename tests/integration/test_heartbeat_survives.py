"""`pgproof heartbeat` survives what a source goes through: read-only, a restart, recovery
as a standby and a promotion. It says why it waits, keeps waiting, and beats again."""

from __future__ import annotations

import subprocess
import tempfile
import time

import pytest

from tests.support.fixtures import PGPROOF, Setup

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
