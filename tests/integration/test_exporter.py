"""`pgproof serve` /metrics over a repository made by the real backup jobs and verifier,
and what it must say when things break."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import load_json, seed
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import Setup, s3_env
from tests.support.serve import Samples, names, serve, value, wait_for

pytestmark = pytest.mark.integration

DESIGN_METRICS = {
    "pgproof_backup_last_success_timestamp_seconds",
    "pgproof_backup_age_seconds",
    "pgproof_backup_size_bytes",
    "pgproof_backup_duration_seconds",
    "pgproof_backup_last_status",
    "pgproof_backups",
    "pgproof_wal_archive_last_success_timestamp_seconds",
    "pgproof_wal_archive_missing_segments",
    "pgproof_source_wal_ready_files",
    "pgproof_source_archiver_failed_total",
    "pgproof_source_archiver_failed_count",  # deprecated, one more release
    "pgproof_restore_test_last_success_timestamp_seconds",
    "pgproof_restore_test_last_status",
    "pgproof_restore_test_duration_seconds",
    "pgproof_restore_test_rpo_seconds",
    "pgproof_restore_test_checks_failed",
    "pgproof_restore_tests_total",
    "pgproof_build_info",
    "pgproof_scrape_errors_total",
}


def _iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _configure(setup: Setup, proxy: FaultProxy | None = None) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["exporter"] = {"refresh": "1s", "max_staleness": "20s", "source_timeout": "2s"}
        doc["targets"][0]["schedule"] = {"logical": "daily 02:00", "physical": "daily 03:00"}
        doc["targets"][0]["heartbeat"] = {"enabled": False}
        if proxy is not None:
            doc["repositories"][1]["endpoint_url"] = proxy.endpoint

    setup.edit_config(change)


def test_metrics_match_what_the_jobs_and_the_verifier_stored(setup15: Setup) -> None:
    s = setup15
    seed(s)
    _configure(s)
    logical = load_json(s.pgproof("backup", "logical", "--json", check=True).stdout)
    physical = load_json(s.pgproof("backup", "physical", "--json", check=True).stdout)
    s.wait_archived(s.cluster.switch_wal())
    proc = s.pgproof("verify", "--json")
    verified = load_json(proc.stdout)["results"]
    by_kind = {r["kind"]: r for r in verified}
    assert {r["verdict"] for r in verified} == {"passed"}, (verified, proc.stderr)

    assert s.s3 is not None
    proxy = FaultProxy(s.s3.endpoint)
    try:
        _configure(s, proxy)
        with serve(s.config_path, env=s3_env()) as srv:
            m = srv.scrape()
            assert DESIGN_METRICS <= names(m), DESIGN_METRICS - names(m)
            now = time.time()
            for kind, made in (("logical", logical), ("physical", physical)):
                for repo in ("local", "offsite"):
                    assert (
                        value(m, "pgproof_backups", target="main", kind=kind, repository=repo) == 1
                    )
                assert (
                    value(m, "pgproof_backup_size_bytes", target="main", kind=kind)
                    == made["size_bytes"]
                )
                assert value(m, "pgproof_backup_last_status", target="main", kind=kind) == 1
                age = value(m, "pgproof_backup_age_seconds", target="main", kind=kind)
                finished = _iso(by_kind[kind]["backup"]["finished_at"])
                assert age is not None and abs(age - (now - finished)) < 5, (age, now - finished)
                took = value(m, "pgproof_backup_duration_seconds", target="main", kind=kind)
                assert took is not None and abs(took - made["duration_seconds"]) < 1.5
                record = by_kind[kind]
                assert value(m, "pgproof_restore_test_last_status", target="main", kind=kind) == 1
                assert (
                    value(
                        m, "pgproof_restore_tests_total", target="main", kind=kind, result="passed"
                    )
                    == 1
                )
                assert (
                    value(
                        m, "pgproof_restore_tests_total", target="main", kind=kind, result="failed"
                    )
                    == 0
                )
                assert value(
                    m,
                    "pgproof_restore_test_last_success_timestamp_seconds",
                    target="main",
                    kind=kind,
                ) == pytest.approx(_iso(record["finished_at"]), abs=0.01)
                for phase, seconds in record["phases"].items():
                    got = value(
                        m,
                        "pgproof_restore_test_duration_seconds",
                        target="main",
                        kind=kind,
                        phase=phase,
                    )
                    assert got == pytest.approx(seconds)
                assert value(m, "pgproof_restore_test_checks_failed", target="main", kind=kind) == 0
            assert value(m, "pgproof_restore_test_rpo_seconds", target="main") == pytest.approx(
                by_kind["physical"]["rpo_seconds"]
            )
            assert value(m, "pgproof_wal_archive_missing_segments", target="main") == 0
            last_wal = value(m, "pgproof_wal_archive_last_success_timestamp_seconds", target="main")
            assert last_wal is not None and now - 600 < last_wal <= now + 1
            assert value(m, "pgproof_source_up", target="main") == 1
            assert value(m, "pgproof_source_archiver_failed_total", target="main") == 0
            assert value(m, "pgproof_source_archiver_failed_count", target="main") == 0
            lint = subprocess.run(
                ["promtool", "check", "metrics"],
                input=srv.get("/metrics")[1],
                capture_output=True,
                check=False,
            )
            problems = [
                line
                for line in (lint.stdout + lint.stderr).decode().splitlines()
                if line.strip() and "pgproof_source_archiver_failed_count" not in line
            ]
            assert problems == [], problems  # only the deprecated name, until it goes
            ready = value(m, "pgproof_source_wal_ready_files", target="main")
            assert ready is not None and 0 <= ready < 3
            assert value(m, "pgproof_build_info", version="0.1.0") == 1
            assert value(m, "pgproof_scrape_errors_total") == 0
            assert value(m, "pgproof_repository_up", repository="local") == 1
            assert value(m, "pgproof_repository_up", repository="offsite") == 1

            # a malformed result record: skipped and counted, the scrape still answers
            bad = s.repo_dir / "main" / "results" / "20991231T000000Z-broken.json"
            bad.write_text('{"id": "x", "verdict": ')

            def invalid_counted() -> Samples | None:
                got = srv.scrape()
                n = value(got, "pgproof_result_records_invalid", target="main", repository="local")
                return got if n == 1 else None

            wait_for(invalid_counted)
            m = srv.scrape()
            errors_before = value(m, "pgproof_scrape_errors_total") or 0
            assert errors_before >= 1
            assert value(m, "pgproof_restore_test_last_status", target="main", kind="physical") == 1
            assert "20991231T000000Z-broken.json" in srv.log()

            # the filesystem repository disappears (unmounted): down, its values not served
            moved = Path(str(s.repo_dir) + ".away")
            os.rename(s.repo_dir, moved)
            try:
                wait_for(
                    lambda: value(srv.scrape(), "pgproof_repository_up", repository="local") == 0
                )
                m = srv.scrape()
                assert (
                    value(m, "pgproof_backups", target="main", kind="logical", repository="local")
                    is None
                )
                assert (
                    value(m, "pgproof_backups", target="main", kind="logical", repository="offsite")
                    == 1
                )
                assert value(m, "pgproof_backup_last_status", target="main", kind="physical") == 1
                assert (value(m, "pgproof_scrape_errors_total") or 0) > errors_before
            finally:
                os.rename(moved, s.repo_dir)
            wait_for(lambda: value(srv.scrape(), "pgproof_repository_up", repository="local") == 1)

            # S3 answering 500 to everything: offsite down, local still reported
            proxy.fail(lambda method, path: True, None)
            wait_for(
                lambda: value(srv.scrape(), "pgproof_repository_up", repository="offsite") == 0
            )
            m = srv.scrape()
            assert (
                value(m, "pgproof_backups", target="main", kind="physical", repository="local") == 1
            )
            proxy.clear()
            wait_for(
                lambda: value(srv.scrape(), "pgproof_repository_up", repository="offsite") == 1
            )

            # the source goes down: source_up 0 at once, a backup attempt fails and says so
            s.cluster.stop()
            try:
                m = srv.scrape()
                assert value(m, "pgproof_source_up", target="main") == 0
                assert value(m, "pgproof_source_wal_ready_files", target="main") is None
                failed = s.pgproof("backup", "logical")
                assert failed.returncode == 1
                wait_for(
                    lambda: (
                        value(
                            srv.scrape(),
                            "pgproof_backup_last_status",
                            target="main",
                            kind="logical",
                        )
                        == 0
                    )
                )
                # the last good backup is still reported, with its true age
                m = srv.scrape()
                assert (
                    value(m, "pgproof_backup_size_bytes", target="main", kind="logical")
                    == (logical["size_bytes"])
                )
            finally:
                s.cluster.start()
            wait_for(lambda: value(srv.scrape(), "pgproof_source_up", target="main") == 1)
            status, body, _ = srv.get("/healthz")
            health = json.loads(body)
            assert status == 200 and health["repositories"]["local"]["up"] is True
    finally:
        proxy.stop()
    job = json.loads((s.repo_dir / "main" / "jobs" / "logical.json").read_text())
    assert job["status"] == "failed" and "connect" in job["error"]
    shutil.rmtree(s.repo_dir / "main" / "results" / "nothing", ignore_errors=True)
