"""`pgproof serve` running its schedule for two targets over several cycles: it survives the
source going down and coming back, a repository briefly unreachable and SMTP down, serves
its reports, and on SIGTERM stops cleanly leaving no process, sandbox or lock behind."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import seed
from tests.support.fixtures import PGPROOF, Setup, s3_env
from tests.support.ports import free_port
from tests.support.serve import Served, serve, value, wait_for

pytestmark = pytest.mark.integration


def _configure(s: Setup) -> Path:
    workdir = s.config_path.parent / "sandboxes"

    def change(doc: dict[str, Any]) -> None:
        main = doc["targets"][0]
        main["schedule"] = {
            "logical": "every 4 seconds",
            "physical": "every 9 seconds",
            "verify": "every 7 seconds",
            "retention": "every 13 seconds",
        }
        main["retention"] = {"full_backups": 3}
        main["heartbeat"] = {"enabled": True, "every_seconds": 1}
        second = {
            "name": "second",
            "conninfo": main["conninfo"],
            "repositories": ["local"],
            "schedule": {"logical": "every 5 seconds"},
        }
        doc["targets"].append(second)
        doc["exporter"] = {"refresh": "1s", "source_timeout": "2s"}
        doc["verifier"] = {"workdir": str(workdir)}
        doc["serve"] = {"max_parallel_jobs": 2, "shutdown_grace": "20s", "log_format": "json"}
        doc["alerts"] = {
            "evaluate_every": "1s",
            "state_file": str(s.config_path.parent / "alerts-state.json"),
            "email": {  # nothing listens there: SMTP is down for the whole test
                "host": "127.0.0.1",
                "port": free_port(),
                "starttls": False,
                "timeout": "1s",
                "from": "pgproof@example.com",
                "to": ["dba@example.com"],
            },
        }

    # two targets soon: the source archives for "main" by name (set first, so the archiver
    # never meets a config where the target is ambiguous and backs off for a minute)
    s.cluster.set(archive_command=f"'{PGPROOF} --config {s.config_path} wal-push %p --target main'")
    s.cluster.sql("select pg_reload_conf()")
    s.edit_config(change)
    return workdir


def _count(srv: Served, target: str, kind: str, repository: str = "local") -> float:
    got = value(srv.scrape(), "pgproof_backups", target=target, kind=kind, repository=repository)
    return got or 0


def _status(srv: Served, target: str, kind: str = "logical") -> float | None:
    return value(srv.scrape(), "pgproof_backup_last_status", target=target, kind=kind)


def _wait(srv: Served, check: Callable[[], object], timeout: float = 120) -> None:
    """wait_for, and the service's log when it does not come."""
    try:
        wait_for(check, timeout=timeout, every=1)
    except AssertionError as exc:
        text = srv.log()
        raise AssertionError(
            f"{exc}\n--- serve log ---\n{text[:5000]}\n...\n{text[-3000:]}"
        ) from None


def _log_events(srv: Served) -> list[dict[str, Any]]:
    events = []
    for line in srv.log().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_serve_runs_the_schedule_survives_failures_and_stops_cleanly(setup15: Setup) -> None:
    s = setup15
    seed(s)
    workdir = _configure(s)
    with serve(s.config_path, env=s3_env()) as srv:
        # several cycles: backups of both targets, restore tests, retention keeping 3
        _wait(srv, lambda: _count(srv, "main", "logical") >= 3, timeout=180)
        _wait(srv, lambda: _count(srv, "second", "logical") >= 2, timeout=120)
        _wait(
            srv,
            lambda: (
                (
                    value(
                        srv.scrape(),
                        "pgproof_restore_tests_total",
                        target="main",
                        kind="physical",
                        result="passed",
                    )
                    or 0
                )
                >= 1
            ),
            timeout=180,
        )

        def retention_deleted() -> bool:
            return any(
                e.get("job") == "retention"
                and e.get("exit_code") == 0
                and not str(e.get("summary", "")).startswith("deleted 0 backups")
                for e in _log_events(srv)
            )

        _wait(srv, retention_deleted, timeout=120)

        # the source goes down: jobs fail, the service goes on
        s.cluster.stop()
        try:
            _wait(srv, lambda: _status(srv, "second") == 0, timeout=120)
            assert srv.get("/healthz")[0] == 200
            assert value(srv.scrape(), "pgproof_source_up", target="main") == 0
        finally:
            s.cluster.start()
        _wait(srv, lambda: _status(srv, "second") == 1, timeout=120)
        _wait(srv, lambda: _status(srv, "main") == 1, timeout=120)

        # the filesystem repository disappears for a while: the next jobs fail or miss it
        moved = Path(str(s.repo_dir) + ".away")
        before = len([e for e in _log_events(srv) if e.get("message") == "job failed"])
        os.rename(s.repo_dir, moved)
        try:
            _wait(
                srv,
                lambda: (
                    len([e for e in _log_events(srv) if e.get("message") == "job failed"]) > before
                ),
                timeout=60,
            )
        finally:
            os.rename(moved, s.repo_dir)
        _wait(srv, lambda: _status(srv, "second") == 1, timeout=120)
        _wait(srv, lambda: value(srv.scrape(), "pgproof_repository_up", repository="local") == 1)

        # SMTP down all along: logged, nothing else affected
        _wait(srv, lambda: "alert email not delivered" in srv.log(), timeout=60)

        # reports over HTTP
        status, body, _ = srv.get("/reports/")
        assert status == 200 and b"main" in body and b"second" in body
        status, body, _ = srv.get("/reports/report.json")
        report = json.loads(body)
        first = report["targets"][0]["results"][0]
        status, body, headers = srv.get(f"/reports/main/{first['id']}.json")
        assert status == 200 and json.loads(body)["id"] == first["id"]
        assert srv.get(f"/reports/main/{first['id']}.html")[0] == 200
        assert srv.get("/reports/main/../../etc/passwd")[0] == 404

        # SIGTERM while a restore test runs
        def verifying() -> bool:
            health = json.loads(srv.get("/healthz")[1])
            return bool(health["jobs"]["main"]["running"] == "verify")

        wait_for(verifying, timeout=120, every=0.2)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
    events = _log_events(srv)
    assert any(e.get("message") == "stopped" for e in events)
    # nothing left: no pgproof process of this config, no sandbox, no lock held
    leftovers = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(s.config_path) in cmdline and state != "Z":
            leftovers.append(cmdline)
        if str(workdir) in cmdline and state != "Z":
            leftovers.append(cmdline)
    assert leftovers == []
    assert not workdir.exists() or not any(workdir.iterdir())
    for lock in (s.config_path.parent / "locks").glob("*"):
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
    time.sleep(0)
