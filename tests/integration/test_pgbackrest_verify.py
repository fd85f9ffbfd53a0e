"""Restore tests of backups pgBackRest made (issue 14): the real pgBackRest restores the files
and fetches the WAL, pgproof's verifier does the rest (PITR, the heartbeat proof, amcheck,
the full read, pg_checksums) and keeps the record in its own repository; and the stanza read
through ``pgbackrest info`` only, the passphrase through the environment. The pgBackRest
repositories' bytes are the same before and after every test."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgproof.backups.errors import SourceError
from pgproof.backups.pgbackrest import InfoError, PgBackRest
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings
from tests.support.monitoring import exporter_once
from tests.support.pgbackrest import (
    PASSPHRASE,
    Release,
    S3Repo,
    Stanzas,
    calls,
    pgbackrest_stanzas,
    recording,
    releases,
    target,
    tree_hash,
    write_pgproof_config,
)
from tests.support.pgcluster import private_dir
from tests.support.pgproofcli import PgproofCli, heartbeat_running
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.support.tlsproxy import tls_proxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed"),
]
PASS_ENV = "PGPROOF_TEST_BR_PASS"
# pgBackRest reads its S3 keys from pgproof's environment (pgproof never sees them)
S3_KEYS = {"PGBACKREST_REPO1_S3_KEY": ACCESS_KEY, "PGBACKREST_REPO1_S3_KEY_SECRET": SECRET_KEY}


@dataclass
class Source(PgproofCli):
    stanzas: Stanzas
    config: Path
    results: Path
    gap_repo: Path  # a copy of the plain repository with one archived segment removed
    removed: str
    damaged_repo: Path  # a copy with one byte of a backup file flipped
    flipped: str
    release: Release
    calls_log: Path  # every pgBackRest command pgproof ran: uid and arguments

    def secrets(self) -> dict[str, str]:
        return {PASS_ENV: PASSPHRASE, **S3_KEYS}


def _bucket_hash(s3: SeaweedS3, bucket: str) -> str:
    client = s3.client()
    h = hashlib.sha256()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            h.update(o["Key"].encode())
            h.update(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
    return h.hexdigest()


@pytest.fixture(scope="module", params=releases(), ids=lambda r: f"pgbackrest-{r.version}")
def source(seaweed: SeaweedS3, request: pytest.FixtureRequest) -> Iterator[Source]:
    """The module runs once per pgBackRest release installed (2.45 and 2.55.1): the same
    release writes the stanzas and is the one pgproof runs, through a wrapper that records
    the uid of every command."""
    release: Release = request.param
    bucket = f"pgbackrest-{release.version.replace('.', '-')}"
    seaweed.make_bucket(bucket)
    with (
        tls_proxy(seaweed.s3_port) as tls,
        pgbackrest_stanzas(
            s3=S3Repo(tls.port, bucket, ACCESS_KEY, SECRET_KEY), binary=release.binary
        ) as st,
    ):
        base = private_dir("pgproof-brsrc-")
        wrapper, calls_log = recording(base, release.binary)
        conninfo, beat = st.cluster.conninfo(), {"enabled": True, "every_seconds": 1}
        tool = {"conninfo": conninfo, "binary": str(wrapper)}
        config = write_pgproof_config(
            base,
            target("plain", st.plain, heartbeat=beat, **tool),
            target("encrypted", st.encrypted, heartbeat=beat, cipher_pass_env=PASS_ENV, **tool),
            target("s3", st.s3_reader, heartbeat=beat, **tool),
            target("gap", base / "gap.conf", **tool),
            target("unarchived", base / "unarchived.conf", **tool),
            target("damaged", base / "damaged.conf", **tool),
        )
        results = base / "results"
        with heartbeat_running(config, "plain"):
            st.backup()
            st.cluster.sql("create table after_backup as select g from generate_series(1, 50000) g")
            st.cluster.switch_wal()
            st.cluster.sql("insert into after_backup select g from generate_series(1, 50000) g")
            last = st.cluster.switch_wal()
            deadline = time.monotonic() + 60
            archive = st.repos[0] / "archive" / "main"
            while not list(archive.rglob(f"{last}-*")) and time.monotonic() < deadline:
                time.sleep(0.5)
        # the gap: a copy of the plain repository without the segment after the backup's
        gap_repo = base / "gap-repo"
        shutil.copytree(st.repos[0], gap_repo, symlinks=True)
        segments = sorted(p for p in (gap_repo / "archive" / "main").rglob("0000000*.gz"))
        removed = segments[-2]
        removed.unlink()
        # never archived: a copy whose archive stops before the backup's start
        with PgBackRest(
            PgBackRestSettings("main", str(st.plain), binary=release.binary), Runner()
        ) as reader:
            (backup,) = reader.info().backups
        assert backup.start_wal is not None
        unarchived_repo = base / "unarchived-repo"
        shutil.copytree(st.repos[0], unarchived_repo, symlinks=True)
        for path in (unarchived_repo / "archive" / "main").rglob("0000000*.gz"):
            if path.name[:24] >= backup.start_wal:
                path.unlink()
        # the damage: a copy with one byte of a data file of the backup flipped
        damaged_repo = base / "damaged-repo"
        shutil.copytree(st.repos[0], damaged_repo, symlinks=True)
        victim = max(
            (damaged_repo / "backup" / "main").rglob("pg_data/base/*/*.gz"),
            key=lambda p: p.stat().st_size,
        )
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        subprocess.run(["chown", "-R", "postgres:postgres", str(base)], check=True)
        st.reader_for(gap_repo, "gap").rename(base / "gap.conf")
        st.reader_for(unarchived_repo, "unarchived").rename(base / "unarchived.conf")
        damaged_conf = st.reader_for(damaged_repo, "damaged")
        # pgBackRest retries a failed file after 15 s by default: once is enough here
        damaged_conf.write_text(
            damaged_conf.read_text().replace("[global]\n", "[global]\njob-retry=0\n")
        )
        damaged_conf.rename(base / "damaged.conf")
        try:
            yield Source(
                st,
                config,
                results,
                gap_repo,
                removed.name[:24],
                damaged_repo,
                victim.name,
                release,
                calls_log,
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_pgbackrest_backup_passes_with_the_heartbeat_proof(source: Source) -> None:
    before = [tree_hash(r) for r in source.stanzas.repos]
    r = source.verify("plain")
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    checks = {c.name: c for c in r.checks}
    assert "pgbackrest verify" in checks["verifybackup"].detail
    assert checks["heartbeat"].verdict == "passed"
    assert {"wal_replay", "amcheck", "readable", "checksums"} <= set(checks)
    assert r.backup is not None and r.backup.repository == "pgbackrest:main"
    assert r.backup_id.endswith("F") and r.pitr is not None and r.pitr.reached_lsn
    # PITR random: the S3 repository's test
    assert [tree_hash(r) for r in source.stanzas.repos] == before  # never written


def bucket_of(source: Source) -> str:
    assert source.stanzas.s3 is not None
    return source.stanzas.s3.bucket


def test_a_repository_in_s3_passes_and_is_only_read(source: Source, seaweed: SeaweedS3) -> None:
    before = _bucket_hash(seaweed, bucket_of(source))
    r = source.verify("s3", "--pitr", "random")
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    assert {c.name: c.verdict for c in r.checks}["heartbeat"] == "passed"
    wrong = source.verify("s3", env={"PGBACKREST_REPO1_S3_KEY_SECRET": "not-the-secret"})
    assert wrong.verdict == "error", wrong.cause
    assert "not-the-secret" not in wrong.cause
    assert _bucket_hash(seaweed, bucket_of(source)) == before


def test_an_encrypted_repository_and_a_wrong_passphrase(source: Source) -> None:
    before = tree_hash(source.stanzas.repos[1])
    assert source.verify("encrypted").verdict == "passed"
    wrong = source.verify("encrypted", env={PASS_ENV: "not-the-passphrase"})
    assert wrong.verdict == "error", wrong.cause
    assert "not-the-passphrase" not in wrong.cause and "cannot decrypt" in wrong.cause
    assert tree_hash(source.stanzas.repos[1]) == before


def test_a_segment_missing_from_the_archive_fails_by_name(source: Source) -> None:
    before = tree_hash(source.gap_repo)
    r = source.verify("gap")
    assert r.verdict == "failed", r.cause
    assert source.removed in r.cause
    assert tree_hash(source.gap_repo) == before


def test_a_backup_whose_wal_was_never_archived_fails(source: Source) -> None:
    r = source.verify("unarchived")
    assert r.verdict == "failed", r.cause
    assert "archive" in r.cause
    checked = json.loads(source.pgproof("check", "--target", "unarchived", "--json").stdout)
    assert not checked["healthy"], checked


def test_a_flipped_byte_in_a_backup_file_fails(source: Source) -> None:
    before = tree_hash(source.damaged_repo)
    r = source.verify("damaged")
    print(f"pgBackRest {source.release.version}, damaged file:", r.cause)
    assert r.verdict == "failed", r.cause
    assert "pgbackrest restore" in r.cause and "data error" in r.cause
    # located: the file and the backup set that holds it, as pgbackrest verify names them
    assert "/pg_data/base/" in r.cause and source.flipped in r.cause, r.cause
    assert f"in full backup {r.backup_id}" in r.cause
    assert tree_hash(source.damaged_repo) == before


def test_list_and_check_read_the_stanza(source: Source) -> None:
    listed = json.loads(source.pgproof("list", "--target", "plain", "--json").stdout)["backups"]
    assert listed and listed[-1]["repository"] == "pgbackrest:main"
    assert listed[-1]["last_verification"] is not None
    checked = source.pgproof("check", "--target", "plain", "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["healthy"], report
    report = json.loads(source.pgproof("report", "--format", "json", "--target", "plain").stdout)
    (window,) = [t["recoverable_window"] for t in report["targets"]]
    assert window["problems"] == [] and window["from"], window
    assert window["repositories"]["pgbackrest:main"]["physical_backups"] == 1
    refused = source.pgproof("backup", "physical", "--target", "plain")
    assert refused.returncode == 2 and "made by another tool" in refused.stderr


def test_metrics_and_alerts_follow_pgbackrests_listing(
    source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASS_ENV, PASSPHRASE)  # the encrypted stanza is listed with it
    source.verify("plain")  # a passed restore test to show
    text, alerts = exporter_once(source.config)
    assert 'pgproof_repository_up{repository="pgbackrest:main"} 1.0' in text
    assert 'pgproof_backup_age_seconds{kind="physical",target="plain"}' in text
    assert 'pgproof_restore_test_last_status{kind="physical",target="plain"} 1.0' in text
    assert 'kind="logical",target="plain"' not in text  # pgBackRest makes no logical backups
    assert not [a for a in alerts if a.target == "plain"], alerts  # healthy: nothing fires
    assert 'pgproof_repository_up{repository="pgbackrest:main#2"} 1.0' in text  # encrypted


# -- reading a stanza through pgbackrest info (the listing every command starts from)


def test_info_lists_the_backup_and_the_wal_it_needs(source: Source) -> None:
    before = tree_hash(source.stanzas.repos[0])
    with PgBackRest(
        PgBackRestSettings("main", str(source.stanzas.plain), binary=source.release.binary),
        Runner(),
    ) as tool:
        info = tool.info()
    assert not os.path.exists(tool.private)  # its private lock directory went with it
    (backup,) = info.backups
    assert backup.type == "full" and backup.pg_major == 15 and not backup.error
    assert backup.start_wal and backup.stop_wal and backup.start_lsn < backup.stop_lsn
    (archive,) = info.archives
    assert archive.first is not None and archive.last is not None
    assert archive.first <= backup.start_wal <= backup.stop_wal <= archive.last
    sysid = source.stanzas.cluster.sql("select system_identifier::text from pg_control_system()")
    assert backup.system_identifier == sysid[0][0]
    assert tree_hash(source.stanzas.repos[0]) == before  # read, never written


def test_an_encrypted_repository_reads_with_the_passphrase_from_the_environment(
    source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree_hash(source.stanzas.repos[1])
    settings = PgBackRestSettings(
        "main",
        str(source.stanzas.encrypted),
        cipher_pass_env="BR_PASS",
        binary=source.release.binary,
    )
    tool = PgBackRest(settings, Runner())
    request_private = tool.private
    assert PASSPHRASE not in " ".join(tool.argv("info"))
    monkeypatch.setenv("BR_PASS", PASSPHRASE)
    info = tool.info()
    assert info.cipher == "aes-256-cbc" and len(info.backups) == 1
    monkeypatch.setenv("BR_PASS", "wrong-passphrase")
    with pytest.raises(SourceError, match="cannot decrypt the repository's backup.info") as wrong:
        tool.info()
    assert "wrong-passphrase" not in str(wrong.value) and "BR_PASS" in str(wrong.value)
    monkeypatch.delenv("BR_PASS")
    with pytest.raises(SourceError, match="BR_PASS is not set"):
        tool.info()
    tool.close()
    assert not os.path.exists(request_private)
    assert tree_hash(source.stanzas.repos[1]) == before


def test_a_wrong_stanza_or_config_is_named(source: Source) -> None:
    binary = source.release.binary

    def info(settings: PgBackRestSettings) -> None:
        with PgBackRest(settings, Runner()) as tool:
            tool.info()

    with pytest.raises(InfoError, match="stanza 'other': missing stanza path"):
        info(PgBackRestSettings("other", str(source.stanzas.plain), binary=binary))
    with pytest.raises(SourceError, match="unable to open missing file"):
        info(PgBackRestSettings("main", "/nonexistent/pgbackrest.conf", binary=binary))
    with pytest.raises(SourceError, match="could not start"):
        info(
            PgBackRestSettings("main", str(source.stanzas.plain), binary="/nonexistent/pgbackrest")
        )


def test_every_command_but_restore_runs_as_the_repository_owner(source: Source) -> None:
    """pgBackRest 2.59 refuses every command but restore as root: pgproof (root here) runs
    them as the repository's owner (source.user, postgres), restore as itself."""
    source.verify("plain")
    source.pgproof("check", "--target", "plain", "--json")
    seen = calls(source.calls_log)
    print(f"pgBackRest {source.release.version} commands (uid, command):", sorted(set(seen)))
    owner = pwd.getpwnam("postgres").pw_uid
    commands = {c for _, c in seen}
    assert {"info", "verify", "repo-ls", "archive-get", "restore"} <= commands, commands
    assert {(u, c) for u, c in seen if c not in ("restore", "version")} <= {
        (owner, c) for c in commands
    }
    assert all(u == owner for u, c in seen if c != "restore")
    assert {u for u, c in seen if c == "restore"} == {os.geteuid()}
