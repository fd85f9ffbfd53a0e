"""Restore tests of the files cron scripts leave (issue 14), made here by the recipe's own
commands: ``pg_dump -Fc -Z9 | gzip``, a plain ``pg_dump | gzip``, ``pg_dumpall
--globals-only``, ``pg_basebackup -Ft -z`` and ``archive_command = 'cp %p'`` (older segments
gzip'ed). The same tree is read from a directory and from an S3 prefix (SeaweedFS); broken
copies of it fail naming the cause; no byte of any copy changes."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgproof.verifier.records import ResultRecord
from tests.support.cronbackups import CronBackups, cron_backups, files_target, write_config
from tests.support.monitoring import exporter_once
from tests.support.pgbackrest import tree_hash
from tests.support.pgcluster import private_dir
from tests.support.pgproofcli import PgproofCli, heartbeat_running
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

pytestmark = pytest.mark.integration
S3_ENV = {"PGPROOF_TEST_S3_KEY": ACCESS_KEY, "PGPROOF_TEST_S3_SECRET": SECRET_KEY}


@dataclass
class Trees(PgproofCli):
    backups: CronBackups
    config: Path
    copies: dict[str, Path]  # repository name -> its folder
    removed: str  # the segment missing from the "gap" copy
    stamp: str

    def secrets(self) -> dict[str, str]:
        return S3_ENV


def _copy(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, symlinks=True)
    return to


def _upload(s3: SeaweedS3, root: Path, bucket: str, prefix: str) -> None:
    s3.make_bucket(bucket)
    client = s3.client()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root)}"
            client.upload_file(str(path), bucket, key)


def _folders(copies: dict[str, Path]) -> list[dict[str, object]]:
    return [{"name": n, "type": "filesystem", "path": str(p)} for n, p in copies.items()]


@pytest.fixture(scope="module")
def trees(seaweed: SeaweedS3) -> Iterator[Trees]:
    with cron_backups(15) as cb:
        base = private_dir("pgproof-cronsrc-")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
        conninfo, beat = cb.cluster.conninfo(), {"enabled": True, "every_seconds": 1}
        s3_repo: dict[str, object] = {
            "type": "s3",
            "bucket": "cron-backups",
            "prefix": "db1",
            "endpoint_url": seaweed.endpoint,
            "region": "us-east-1",
            "access_key_id_env": "PGPROOF_TEST_S3_KEY",
            "secret_access_key_env": "PGPROOF_TEST_S3_SECRET",
        }
        copies = {n: base / n for n in ("gap", "damaged", "unarchived")}
        config = write_config(
            base,
            {"type": "filesystem", "path": str(cb.root)},
            files_target("cron", conninfo=conninfo, heartbeat=beat),
            files_target("s3", source={"repository": "s3cron"}),
            *(files_target(n, source={"repository": n}) for n in copies),
            extra_repos=[
                {"name": "s3cron", **s3_repo},
                *_folders(copies),
            ],
        )
        with heartbeat_running(config, "cron"):
            cb.dump_run(stamp)
            cb.base_backup(stamp)
            cb.cluster.sql("create table after_backup as select g from generate_series(1, 50000) g")
            time.sleep(2)
            cb.cluster.switch_wal()
            cb.cluster.sql("insert into after_backup select g from generate_series(1, 50000) g")
            time.sleep(2)
            last = cb.cluster.switch_wal()
            deadline = time.monotonic() + 60
            while not (cb.root / "wal" / last).exists() and time.monotonic() < deadline:
                time.sleep(0.5)
        cb.gzip_archived()
        segments = sorted(p.name for p in (cb.root / "wal").iterdir() if len(p.name) >= 24)
        # the gap: a segment replay needs after the backup, removed
        gap = _copy(cb.root, copies["gap"])
        removed = segments[-2]
        (gap / "wal" / removed).unlink()
        # the damage: one byte of base.tar.gz flipped, the custom dump cut short
        damaged = _copy(cb.root, copies["damaged"])
        victim = damaged / "base" / stamp / "base.tar.gz"
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        dump = next((damaged / "dumps").glob("postgres_full_*.dump.gz"))
        dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
        # never archived: no pg_wal.tar, and the archive stops before the backup's start
        unarchived = _copy(cb.root, copies["unarchived"])
        (unarchived / "base" / stamp / "pg_wal.tar.gz").unlink()
        label = json.loads((cb.root / "base" / stamp / "backup_manifest").read_text())
        start = label["WAL-Ranges"][0]["Start-LSN"]
        start_segno = int(start.split("/")[0], 16) * 256 + int(start.split("/")[1], 16) // (
            16 << 20
        )
        for name in segments:
            if int(name[8:16], 16) * 256 + int(name[16:24], 16) >= start_segno:
                (unarchived / "wal" / name).unlink()
        _upload(seaweed, cb.root, "cron-backups", "db1")
        subprocess.run(["chown", "-R", "postgres:postgres", str(base)], check=True)
        try:
            yield Trees(cb, config, {"cron": cb.root, **copies}, removed[:24], stamp)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_dump_run_passes_and_the_plain_dump_restores(trees: Trees) -> None:
    before = tree_hash(trees.copies["cron"])
    r = trees.verify("cron", kind="logical")
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    checks = {c.name: c for c in r.checks}
    assert checks["row_counts"].evidence["applicable"] is False
    restored = checks["row_counts"].evidence["restored"]
    assert restored["shop"]["public.items"] == 5000  # the plain dump, by its file's name
    assert restored["postgres"]["public.pgbench_accounts"] == 100000
    assert checks["amcheck"].verdict == "passed"
    assert r.backup is not None and r.backup.repository == "files:cron"
    assert r.backup.time_from == "name"  # the run's timestamp, said in the record
    assert any(f.startswith("dumps/shop_") for f in r.backup.files), r.backup.files
    assert tree_hash(trees.copies["cron"]) == before


def test_a_base_backup_passes_pitr_random_with_the_heartbeat_proof(trees: Trees) -> None:
    before = tree_hash(trees.copies["cron"])
    r = trees.verify("cron", "--pitr", "random")
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    checks = {c.name: c for c in r.checks}
    assert "pg_verifybackup" in checks["verifybackup"].detail
    assert checks["heartbeat"].verdict == "passed", checks["heartbeat"].detail
    assert {"wal_replay", "amcheck", "checksums"} <= set(checks)
    assert r.backup_id == trees.stamp  # PITR latest: the S3 copy's test
    assert r.backup is not None and r.backup.time_from == "backup_label"
    assert tree_hash(trees.copies["cron"]) == before


def test_the_same_tree_in_s3_passes(trees: Trees) -> None:
    for kind in ("logical", "physical"):
        r = trees.verify("s3", kind=kind)
        assert r.verdict == "passed", (kind, r.cause)
        assert r.backup is not None and r.backup.repository == "files:s3cron"


def test_a_segment_missing_from_the_archive_fails_by_name(trees: Trees) -> None:
    before = tree_hash(trees.copies["gap"])
    r = trees.verify("gap")
    assert r.verdict == "failed", r.cause
    assert trees.removed in r.cause and "missing from the archive" in r.cause
    assert tree_hash(trees.copies["gap"]) == before


def test_damaged_files_fail_naming_them(trees: Trees) -> None:
    before = tree_hash(trees.copies["damaged"])
    physical = trees.verify("damaged")
    assert physical.verdict == "failed", physical.cause
    assert "base.tar.gz" in physical.cause
    logical = trees.verify("damaged", kind="logical")
    assert logical.verdict == "failed", logical.cause
    assert "postgres_full_" in logical.cause and "truncated" in logical.cause
    assert tree_hash(trees.copies["damaged"]) == before


def test_a_backup_whose_wal_was_never_archived_fails(trees: Trees) -> None:
    before = tree_hash(trees.copies["unarchived"])
    r = trees.verify("unarchived")
    assert r.verdict == "failed", r.cause
    assert "archive" in r.cause
    checked = json.loads(trees.pgproof("check", "--target", "unarchived", "--json").stdout)
    assert not checked["healthy"]
    assert any("not archived" in p for p in checked["targets"][0]["problems"]), checked
    assert tree_hash(trees.copies["unarchived"]) == before


def test_list_check_report_and_refusals(trees: Trees) -> None:
    listed = json.loads(trees.pgproof("list", "--target", "cron", "--json").stdout)["backups"]
    kinds = {row["kind"]: row for row in listed}
    assert set(kinds) == {"logical", "physical"}, listed
    assert kinds["physical"]["time_from"] == "name" and kinds["physical"]["id"] == trees.stamp
    checked = trees.pgproof("check", "--target", "cron", "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["healthy"], report
    damaged = json.loads(trees.pgproof("check", "--target", "damaged", "--json").stdout)
    problems = damaged["targets"][0]["problems"]
    assert any("base.tar.gz" in p for p in problems) and any("truncated" in p for p in problems)
    refused = trees.pgproof("backup", "logical", "--target", "cron")
    assert refused.returncode == 2 and "made by another tool" in refused.stderr
    report = json.loads(trees.pgproof("report", "--format", "json", "--target", "cron").stdout)
    (window,) = [t["recoverable_window"] for t in report["targets"]]
    assert window["repositories"]["files:cron"]["logical_backups"] == 1


def test_metrics_and_alerts_follow_the_files(trees: Trees, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    stored = trees.config.parent / "results" / "cron" / "results"
    passed = {
        r.kind
        for r in (ResultRecord.from_dict(json.loads(p.read_text())) for p in stored.glob("*.json"))
        if r.passed
    }
    for kind in {"logical", "physical"} - passed:  # a passed restore test of each kind to show
        trees.verify("cron", kind=kind)
    text, alerts = exporter_once(trees.config)
    assert 'pgproof_repository_up{repository="files:cron"} 1.0' in text
    for kind in ("logical", "physical"):
        assert f'pgproof_backup_age_seconds{{kind="{kind}",target="cron"}}' in text
        assert f'pgproof_restore_test_last_status{{kind="{kind}",target="cron"}} 1.0' in text
    assert not [a for a in alerts if a.target == "cron"], alerts  # healthy: nothing fires
