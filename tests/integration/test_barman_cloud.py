"""Restore tests of backups barman-cloud made (issue 14; the layout CloudNativePG's Barman
Cloud plugin writes) in SeaweedFS S3: the real barman-cloud-restore and
barman-cloud-wal-restore fetch, pgproof's verifier does the rest. Broken copies of the server
folder fail naming the cause; no object of any copy changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.barman import (
    SERVER,
    BarmanSource,
    barman_bin,
    barman_source,
    write_barman_config,
)
from tests.support.fixtures import PGPROOF
from tests.support.pgcluster import private_dir
from tests.support.pgproofcli import PgproofCli, heartbeat_running
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(barman_bin() is None, reason="barman-cloud not installed"),
]
S3_ENV = {"PGPROOF_TEST_S3_KEY": ACCESS_KEY, "PGPROOF_TEST_S3_SECRET": SECRET_KEY}


@dataclass
class Server(PgproofCli):
    source: BarmanSource
    config: Path
    removed: str

    def secrets(self) -> dict[str, str]:
        return S3_ENV


def _segments(keys: list[str]) -> list[str]:
    return [k for k in keys if "/wals/" in k and len(k.rsplit("/", 1)[-1].split(".")[0]) == 24
            and ".backup" not in k]  # fmt: skip


@pytest.fixture(scope="module")
def server(seaweed: SeaweedS3) -> Iterator[Server]:
    with barman_source(seaweed, 15, "barman15") as src:
        base = private_dir("pgproof-barman-")
        prefixes = {
            "cnpg": src.prefix,
            "gap": "gap-a",
            "damaged": "damaged-a",
            "unarchived": "unarchived-a",
        }
        beat = {"enabled": True, "every_seconds": 1}
        config = write_barman_config(
            base, seaweed, src, prefixes, conninfo=src.cluster.conninfo(), heartbeat=beat
        )
        with heartbeat_running(config, "cnpg", S3_ENV):
            src.backup()
            src.cluster.sql(
                "create table after_backup as select g from generate_series(1, 50000) g"
            )
            time.sleep(2)
            src.cluster.switch_wal()
            src.cluster.sql("insert into after_backup select g from generate_series(1, 50000) g")
            time.sleep(2)
            last = src.cluster.switch_wal()
            deadline = time.monotonic() + 60
            while not any(last in k for k in src.keys()) and time.monotonic() < deadline:
                time.sleep(0.5)
        keys = src.keys()
        segments = _segments(keys)
        removed = segments[-2]
        src.copy_to("gap-a", skip=(removed,))
        src.copy_to("damaged-a")
        data = next(k for k in src.keys("damaged-a") if k.endswith("data.tar.gz"))
        client = seaweed.client()
        body = bytearray(client.get_object(Bucket=src.bucket, Key=data)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        client.put_object(Bucket=src.bucket, Key=data, Body=bytes(body))
        info = next(k for k in keys if k.endswith("backup.info"))
        begin = next(
            line.split("=", 1)[1].strip()
            for line in client.get_object(Bucket=src.bucket, Key=info)["Body"]
            .read()
            .decode()
            .splitlines()
            if line.startswith("begin_wal=")
        )
        src.copy_to(
            "unarchived-a",
            skip=tuple(s for s in segments if s.rsplit("/", 1)[-1][:24] >= begin),
        )
        try:
            yield Server(src, config, removed.rsplit("/", 1)[-1][:24])
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_barman_cloud_backup_passes_with_the_heartbeat_proof(server: Server) -> None:
    before = server.source.tree_hash()
    r = server.verify("cnpg", "--pitr", "random")
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    checks = {c.name: c for c in r.checks}
    assert checks["heartbeat"].verdict == "passed", checks["heartbeat"].detail
    assert checks["verifybackup"].evidence["checked"] == ["data.tar.gz"]
    assert {"wal_replay", "amcheck", "checksums"} <= set(checks)
    assert r.backup is not None and r.backup.repository == f"barman-cloud:{SERVER}"
    # PITR latest: the PostgreSQL 17 test's
    assert server.source.tree_hash() == before  # never written


def test_a_segment_missing_from_the_archive_fails_by_name(server: Server) -> None:
    before = server.source.tree_hash("gap-a")
    r = server.verify("gap")
    assert r.verdict == "failed", r.cause
    assert server.removed in r.cause and "missing from the archive" in r.cause
    assert server.source.tree_hash("gap-a") == before


def test_a_flipped_byte_in_the_data_archive_fails(server: Server) -> None:
    before = server.source.tree_hash("damaged-a")
    r = server.verify("damaged")
    assert r.verdict == "failed", r.cause
    # whether barman-cloud-restore stops on it or exits 0 (it may, depending on where the
    # byte is), pgproof's read-through names the archive
    assert "data.tar.gz does not decompress" in r.cause, r.cause
    assert server.source.tree_hash("damaged-a") == before


def test_a_backup_whose_wal_was_never_archived_fails(server: Server) -> None:
    r = server.verify("unarchived")
    assert r.verdict == "failed", r.cause
    assert "archive" in r.cause
    checked = json.loads(server.pgproof("check", "--target", "unarchived", "--json").stdout)
    assert not checked["healthy"], checked


def test_list_check_and_a_wrong_credential(server: Server) -> None:
    listed = json.loads(server.pgproof("list", "--target", "cnpg", "--json").stdout)["backups"]
    assert listed and listed[-1]["repository"] == f"barman-cloud:{SERVER}"
    assert listed[-1]["last_verification"] is not None
    checked = server.pgproof("check", "--target", "cnpg", "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["healthy"], checked.stdout
    wrong = subprocess.run(
        [PGPROOF, "--config", str(server.config), "verify", "--target", "cnpg", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **S3_ENV, "PGPROOF_TEST_S3_SECRET": "not-the-secret"},
    )
    (record,) = json.loads(wrong.stdout)["results"]
    assert record["verdict"] == "error", record
    assert "not-the-secret" not in wrong.stdout + wrong.stderr


def test_postgresql_17_passes(seaweed: SeaweedS3) -> None:
    with barman_source(seaweed, 17, "barman17") as src:
        base = private_dir("pgproof-barman17-")
        try:
            config = write_barman_config(base, seaweed, src, {"cnpg17": src.prefix})
            src.backup()
            src.cluster.sql("create table after_backup as select 1")
            src.cluster.switch_wal()
            time.sleep(1.5)
            done = subprocess.run(
                [PGPROOF, "--config", str(config), "verify", "--target", "cnpg17", "--kind",
                 "physical", "--json"],
                capture_output=True, text=True, timeout=900, env={**os.environ, **S3_ENV},
            )  # fmt: skip
            (record,) = json.loads(done.stdout)["results"]
            assert record["verdict"] == "passed", record["cause"]
            assert record["pg_version"].startswith("17.")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_missing_tool_is_an_error_naming_it(server: Server, tmp_path: Path) -> None:
    doc = yaml.safe_load(server.config.read_text())
    doc["targets"][0]["source"]["bin_dir"] = "/nonexistent/barman/bin"
    config = tmp_path / "pgproof.yaml"
    config.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [PGPROOF, "--config", str(config), "verify", "--target", "cnpg", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **S3_ENV},
    )
    (record,) = json.loads(done.stdout)["results"]
    assert record["verdict"] == "error", record
    assert "/nonexistent/barman/bin/barman-cloud-backup-list" in record["cause"], record["cause"]
