"""Alert conditions over a target's status: what fires, and what stays quiet."""

from __future__ import annotations

import time

from pgproof.alerts.conditions import evaluate
from pgproof.backups.jobstatus import JobStatus
from pgproof.exporters.model import BackupInfo, RecordSummary, RepoSnapshot, TargetView, WalView
from pgproof.exporters.settings import AlertLimits
from pgproof.exporters.status import ArchiverStatus, summarize

NOW = 2_000_000_000.0
TH = {"main": AlertLimits(26 * 3600, 3 * 86400, 900, 32)}


def _view(
    backups_age: float = 3600,
    verdict: str = "passed",
    missing: int = 0,
    job: str | None = "ok",
    test_age: float = 3600,
) -> TargetView:
    backups = tuple(
        BackupInfo(f"b-{k}", k, NOW - backups_age - 60, NOW - backups_age, 10)
        for k in ("logical", "physical")
    )
    records = tuple(
        RecordSummary(
            f"r-{k}",
            f"b-{k}",
            k,
            verdict,
            NOW - test_age,
            {"total": 9.0},
            5.0,
            0 if verdict == "passed" else 2,
            "",
        )
        for k in ("logical", "physical")
    )
    jobs = {}
    if job is not None:
        jobs = {"physical": JobStatus("main", "physical", job, "s", "f", None, "boom", "h")}  # type: ignore[arg-type]
    wal = WalView(
        100, "x", NOW - 10, "y", missing, ("000000010000000000000007",) if missing else (), ()
    )
    return TargetView("main", backups, 0, (), records, (), jobs, wal)


def _alerts(
    view: TargetView, up: bool = True, source: ArchiverStatus | None = None, err: str = ""
) -> set[str]:
    snap = RepoSnapshot("local", up, NOW, 0.1, "" if up else "down", {"main": view} if up else {})
    status = summarize("main", ["local"], {"local": snap}, ("logical", "physical"), source, err)
    return {a.key for a in evaluate([status], NOW, TH)}


def test_healthy_target_is_quiet() -> None:
    quiet = ArchiverStatus("on", 100, 0, NOW - 30, None, 0)
    assert _alerts(_view(), source=quiet) == set()


def test_each_condition_fires() -> None:
    assert "PgproofBackupTooOld/main/logical" in _alerts(_view(backups_age=30 * 3600))
    assert "PgproofBackupFailed/main/physical" in _alerts(_view(job="failed"))
    assert "PgproofBackupFailed/main/physical" in _alerts(_view(job="partial"))
    assert "PgproofRestoreTestFailed/main/physical" in _alerts(_view(verdict="error"))
    assert "PgproofRestoreTestStale/main/logical" in _alerts(_view(test_age=4 * 86400))
    assert "PgproofWalGap/main/" in _alerts(_view(missing=3))
    assert _alerts(_view(), up=False) == {"PgproofRepositoryDown/main/local"}
    assert "PgproofSourceDown/main/" in _alerts(_view(), err="cannot connect")


def test_wal_backlog_and_stall_but_not_a_quiet_database() -> None:
    quiet_for_hours = ArchiverStatus("on", 100, 0, NOW - 7200, None, 0)
    assert _alerts(_view(), source=quiet_for_hours) == set()
    stalled = ArchiverStatus("on", 100, 12, NOW - 7200, NOW - 5, 40)
    fired = _alerts(_view(), source=stalled)
    assert {"PgproofWalArchivingStalled/main/", "PgproofWalBacklog/main/"} <= fired
    busy_but_moving = ArchiverStatus("on", 100, 0, NOW - 5, None, 3)
    assert _alerts(_view(), source=busy_but_moving) == set()


def test_no_backup_at_all() -> None:
    empty = TargetView("main", (), 0, (), (), (), {}, None)
    assert {"PgproofBackupMissing/main/logical", "PgproofBackupMissing/main/physical"} <= _alerts(
        empty
    )
    assert time.time() > 0
