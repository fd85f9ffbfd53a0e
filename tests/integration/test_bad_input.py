"""Every bad input of the backups issue: a clear error, and nothing lost or faked."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgproof.backups import catalog, walarchive, walnames
from pgproof.backups.lock import target_lock
from pgproof.backups.storage.filesystem import FilesystemRepository
from tests.integration.helpers import all_keys, complete_ids, load_json, repos_of
from tests.support.faultproxy import FaultProxy, is_put
from tests.support.fixtures import PGPROOF, Setup, s3_env, small_tmpfs
from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration


def random_table(setup: Setup, rows: int = 400_000) -> None:
    """~30 MB of poorly compressible rows: several S3 parts, more than a tiny disk holds."""
    setup.cluster.sql(
        "create table blob as select g as id, md5(random()::text) || md5(random()::text) as v"
        f" from generate_series(1, {rows}) g"
    )


def no_backup_anywhere(setup: Setup) -> None:
    for repo in repos_of(setup):
        assert [k for k in all_keys(repo) if "/backups/" in k] == [], repo.name


def fake_segment(name: str, data: bytes) -> Path:
    directory = private_dir("pgproof-walsrc-")
    path = directory / name
    path.write_bytes(data)
    return path


def test_wrong_password_leaves_no_backup_and_no_password_in_output(setup15: Setup) -> None:
    c = setup15.cluster
    c.sql("create role backup login superuser password 'right-password-42'")
    hba = c.datadir / "pg_hba.conf"
    hba.write_text(
        "local all backup scram-sha-256\nlocal replication backup scram-sha-256\n" + hba.read_text()
    )
    c.sql("select pg_reload_conf()")

    def use_backup_role(doc: dict[str, Any]) -> None:
        t = doc["targets"][0]
        t["conninfo"] = t["conninfo"].replace("user=postgres", "user=backup")
        t["password_env"] = "PGPROOF_TEST_PW"

    setup15.edit_config(use_backup_role)
    wrong = {"PGPROOF_TEST_PW": "wrong-password-1234"}
    for kind in ("logical", "physical"):
        proc = setup15.pgproof("backup", kind, env=wrong)
        assert proc.returncode == 1
        assert "password authentication failed" in proc.stderr
        assert "wrong-password-1234" not in proc.stderr + proc.stdout
    no_backup_anywhere(setup15)
    right = {"PGPROOF_TEST_PW": "right-password-42"}
    for kind in ("logical", "physical"):  # the passfile reaches pg_dump and pg_basebackup
        proc = setup15.pgproof("backup", kind, env=right)
        assert proc.returncode == 0, proc.stderr


def test_unreachable_source_is_a_clear_error(setup15: Setup) -> None:
    port = free_port()

    def elsewhere(doc: dict[str, Any]) -> None:
        doc["targets"][0]["conninfo"] = f"host=127.0.0.1 port={port} dbname=postgres user=x"

    setup15.edit_config(elsewhere)
    proc = setup15.pgproof("backup", "logical")
    assert proc.returncode == 1
    assert "cannot connect to source 127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr
    no_backup_anywhere(setup15)


def test_wal_push_of_existing_name_with_other_bytes_is_refused(setup15: Setup) -> None:
    name = setup15.cluster.switch_wal()
    setup15.wait_archived(name)
    repos = repos_of(setup15)
    key = f"main/wal/{name}.zst"
    time.sleep(0.5)  # S3 may finish just after the local copy
    before = [hashlib.sha256(r.read_bytes(key)).hexdigest() for r in repos]
    impostor = fake_segment(name, os.urandom(1024) * 16384)
    proc = setup15.pgproof("wal-push", str(impostor))
    assert proc.returncode == 1
    assert "different content" in proc.stderr and "refusing to overwrite" in proc.stderr
    assert "local" in proc.stderr and "offsite" in proc.stderr
    assert [hashlib.sha256(r.read_bytes(key)).hexdigest() for r in repos] == before

    # Same name, same bytes: success, stored once.
    new = fake_segment("0000000100000000000000F0", b"\x07" * 16 * 1024 * 1024)
    for _ in range(2):
        assert setup15.pgproof("wal-push", str(new)).returncode == 0
    for repo in repos:
        assert [k for k in all_keys(repo) if "0000000100000000000000F0" in k] == [
            "main/wal/0000000100000000000000F0.zst"
        ]
    # and it comes back intact
    dest = private_dir("pgproof-fetch-") / "RECOVERYXLOG"
    assert setup15.pgproof("wal-fetch", "0000000100000000000000F0", str(dest)).returncode == 0
    assert dest.read_bytes() == b"\x07" * 16 * 1024 * 1024
    assert setup15.pgproof("wal-fetch", "0000000100000000000000F1", str(dest)).returncode == 1


def test_corrupted_or_truncated_backup_file_is_named_by_check(setup15: Setup) -> None:
    setup15.cluster.sql("create table t as select g from generate_series(1, 10000) g")
    backup_id = load_json(setup15.pgproof("backup", "logical", "--json", check=True).stdout)[
        "backup_id"
    ]
    local, offsite = repos_of(setup15)
    manifest = catalog.read_manifest(local, "main", backup_id)
    dump = next(f for f in manifest.files if f.role == "database")
    path = setup15.repo_dir / "main/backups" / backup_id / dump.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    glob_key = catalog.backup_prefix("main", backup_id) + "globals.sql.zst"
    offsite.put_bytes(glob_key, offsite.read_bytes(glob_key)[:-10])  # truncated in S3

    proc = setup15.pgproof("check", "--json")
    assert proc.returncode == 1
    problems = load_json(proc.stdout)["targets"][0]["problems"]
    assert f"local: backup {backup_id}: file {dump.name}: sha256 does not match" in "\n".join(
        problems
    )
    assert any(
        p.startswith(f"offsite: backup {backup_id}: file globals.sql.zst: size") for p in problems
    ), problems
    listed = load_json(setup15.pgproof("list", "--json").stdout)["backups"]
    assert {b["state"] for b in listed} == {"complete"}  # list does not re-hash; check does


def test_gap_in_wal_archive_is_named_by_check(setup15: Setup) -> None:
    c = setup15.cluster
    setup15.pgproof("backup", "physical", check=True)
    names = []
    for i in range(4):
        c.sql(f"create table g{i} as select 1")
        names.append(c.switch_wal())
    setup15.wait_archived(names[-1])
    assert setup15.pgproof("check").returncode == 0
    gone = names[1]
    FilesystemRepository("local", setup15.repo_dir).delete([f"main/wal/{gone}.zst"])
    proc = setup15.pgproof("check", "--json")
    assert proc.returncode == 1
    problems = load_json(proc.stdout)["targets"][0]["problems"]
    assert problems == [f"local: WAL segment {gone} is missing from the archive"]


def test_second_job_on_a_target_is_refused_while_one_runs(setup15: Setup) -> None:
    lock_dir = str(setup15.config_path.parent / "locks")
    with target_lock(lock_dir, "main", "backup physical"):
        proc = setup15.pgproof("backup", "logical")
    assert proc.returncode == 1
    assert (
        "another pgproof job holds the lock of target 'main' (backup physical, pid" in proc.stderr
    )
    assert setup15.pgproof("backup", "logical").returncode == 0  # released


def test_sigkill_during_backup_leaves_nothing_that_looks_complete(setup15: Setup) -> None:
    random_table(setup15)
    setup15.edit_config(lambda d: d["targets"][0]["physical"].update(max_rate="2M"))
    proc = subprocess.Popen(
        [PGPROOF, "--config", str(setup15.config_path), "backup", "physical"],
        env=dict(os.environ, **s3_env()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    backups_dir = setup15.repo_dir / "main" / "backups"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".tmp.") for p in backups_dir.glob("*/*")):
        assert time.monotonic() < deadline and proc.poll() is None, "backup never started writing"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the orphaned pg_basebackup dies on the closed pipe

    # Only temp files (and an unfinished S3 multipart upload) exist: nothing is listed as a
    # backup, certainly not as a complete one.
    listed = load_json(setup15.pgproof("list", "--json", check=True).stdout)["backups"]
    assert all(b["state"] == "incomplete" for b in listed), listed
    for repo in repos_of(setup15):
        assert complete_ids(repo) == []
    assert any(p.name.startswith(".tmp.") for p in backups_dir.glob("*/*"))

    setup15.edit_config(lambda d: d["targets"][0]["physical"].pop("max_rate"))
    backup_id = setup15.pgproof("backup", "physical", check=True).stdout.strip()
    listed = load_json(setup15.pgproof("list", "--json", check=True).stdout)["backups"]
    assert {(b["repository"], b["id"], b["state"]) for b in listed} == {
        ("local", backup_id, "complete"),
        ("offsite", backup_id, "complete"),
    }
    assert setup15.s3 is not None
    pending = setup15.s3.client().list_multipart_uploads(Bucket=setup15.bucket)
    assert pending.get("Uploads", []) == []
    assert [p for p in backups_dir.rglob("*") if p.name.startswith(".tmp.")] == []
    assert setup15.pgproof("check").returncode == 0


@pytest.fixture
def proxy(seaweed: SeaweedS3) -> Iterator[FaultProxy]:
    p = FaultProxy(seaweed.endpoint)
    try:
        yield p
    finally:
        p.stop()


def through(setup: Setup, proxy: FaultProxy, **s3: Any) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["repositories"][1].update(endpoint_url=proxy.endpoint, **s3)

    setup.edit_config(change)


def test_s3_answering_500_then_recovering_is_retried_and_stored_once(
    setup15: Setup, proxy: FaultProxy
) -> None:
    through(setup15, proxy)
    segment = fake_segment("0000000100000000000000E0", os.urandom(4096) * 4096)
    proxy.fail(is_put, 2)
    proc = setup15.pgproof("wal-push", str(segment))
    assert proc.returncode == 0, proc.stderr
    assert proxy.injected == 2
    puts = [p for m, p in proxy.requests if m == "PUT" and "0000000100000000000000E0" in p]
    assert len(puts) == 3  # two refused, one stored
    _, offsite = repos_of(setup15)
    assert [k for k in all_keys(offsite) if "0000000100000000000000E0" in k] == [
        "main/wal/0000000100000000000000E0.zst"
    ]


def test_s3_failing_in_the_middle_of_a_backup(setup15: Setup, proxy: FaultProxy) -> None:
    random_table(setup15)
    through(setup15, proxy, max_attempts=2)
    parts_seen = 0

    def second_backup_part_onwards(method: str, path: str) -> bool:
        nonlocal parts_seen
        if method == "PUT" and "partNumber=" in path and "/backups/" in path:
            parts_seen += 1
            return parts_seen > 1
        return False

    proxy.fail(second_backup_part_onwards, None)
    proc = setup15.pgproof("backup", "physical", "--json")
    assert proc.returncode == 1
    doc = load_json(proc.stdout)
    assert doc["stored_in"] == ["local"] and "offsite" in doc["failed"]
    assert "repository 'offsite' did not receive backup" in proc.stderr
    local, offsite = repos_of(setup15)
    assert complete_ids(local) == [doc["backup_id"]]
    assert [k for k in all_keys(offsite) if "/backups/" in k] == []
    assert setup15.s3 is not None
    pending = setup15.s3.client().list_multipart_uploads(Bucket=setup15.bucket)
    assert pending.get("Uploads", []) == []  # aborted, no orphaned parts


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    with small_tmpfs("2m") as mount_point:
        yield mount_point


def test_disk_filling_up_in_the_middle_of_a_backup(setup15: Setup, tiny_disk: Path) -> None:
    random_table(setup15)
    os.chown(tiny_disk, setup15.repo_dir.stat().st_uid, setup15.repo_dir.stat().st_gid)
    setup15.edit_config(lambda d: d["repositories"][0].update(path=str(tiny_disk)))
    proc = setup15.pgproof("backup", "logical", "--json")
    assert proc.returncode == 1
    doc = load_json(proc.stdout)
    assert doc["stored_in"] == ["offsite"]
    assert "No space left on device" in doc["failed"]["local"]
    _, offsite = repos_of(setup15)
    assert complete_ids(offsite) == [doc["backup_id"]]
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file() and "/backups/" in str(p)]
    assert leftovers == []  # no manifest, no temp file


def test_only_repository_filling_up_fails_fast(fs_only15: Setup, tiny_disk: Path) -> None:
    """With nowhere left to write, the dump is stopped at once (no wait on a full pipe)."""
    random_table(fs_only15)
    os.chown(tiny_disk, fs_only15.repo_dir.stat().st_uid, fs_only15.repo_dir.stat().st_gid)
    fs_only15.edit_config(lambda d: d["repositories"][0].update(path=str(tiny_disk)))
    for kind in ("logical", "physical"):
        started = time.monotonic()
        proc = fs_only15.pgproof("backup", kind, timeout=120)
        assert proc.returncode == 1
        assert "every repository failed" in proc.stderr and "No space left" in proc.stderr
        assert time.monotonic() - started < 60
    assert [p for p in tiny_disk.rglob("*") if p.is_file() and "/backups/" in str(p)] == []


def test_physical_backup_with_archiving_broken_fails_instead_of_waiting(fs_only15: Setup) -> None:
    """The server holds backup_manifest until the backup's WAL is archived: with
    archive_command failing, the job ends after physical.wal_wait_seconds with the reason."""
    s = fs_only15

    def short_wait(doc: dict[str, Any]) -> None:
        doc["targets"][0]["physical"] = {"wal_wait_seconds": 5}

    s.edit_config(short_wait)
    s.cluster.set(archive_command="'/bin/false'")
    s.cluster.sql("select pg_reload_conf()")
    began = time.monotonic()
    proc = s.pgproof("backup", "physical", timeout=300)
    took = time.monotonic() - began
    assert proc.returncode == 1
    assert "waiting for the backup's WAL to be archived" in proc.stderr
    assert took < 120, took
    repo = FilesystemRepository("local", s.repo_dir)
    assert [i for i in complete_ids(repo) if "physical" in i] == []
    status = load_json((s.repo_dir / "main" / "jobs" / "physical.json").read_text())
    assert status["status"] == "failed" and "archive" in status["error"]


CUT_POINTS = {
    # the completion of a data file's multipart upload
    "completion": lambda method, path: (
        method == "POST" and "uploadId=" in path and "/backups/" in path
    ),
    # the manifest, the last write of a backup
    "manifest": lambda method, path: (
        method == "PUT" and path.split("?")[0].endswith("manifest.json")
    ),
}


@pytest.mark.parametrize("point", sorted(CUT_POINTS))
@pytest.mark.parametrize("kind", ["logical", "physical"])
def test_s3_cut_late_in_a_backup_leaves_no_manifest_claiming_it(
    setup15: Setup, proxy: FaultProxy, kind: str, point: str
) -> None:
    """S3 fails at the completion of a data upload or at the manifest, the last step: the
    filesystem keeps the backup, its manifest names only the repository that holds it, and
    S3 keeps nothing of it."""
    random_table(setup15)
    through(setup15, proxy, max_attempts=2)
    proxy.fail(CUT_POINTS[point], None)
    proc = setup15.pgproof("backup", kind, "--json")
    assert proc.returncode == 1
    doc = load_json(proc.stdout)
    assert doc["stored_in"] == ["local"] and "offsite" in doc["failed"]
    local, offsite = repos_of(setup15)
    manifest = catalog.read_manifest(local, "main", doc["backup_id"])
    assert manifest.repositories == ("local",)
    assert [k for k in all_keys(offsite) if "/backups/" in k] == []


def test_check_reads_every_wal_copy_and_names_bad_ones(setup15: Setup) -> None:
    """One repository's copy of a segment has a flipped byte; a segment of another cluster
    is stored with consistent metadata under the next name. `check` names both, per
    repository, and the second `check` reads only what it has not seen intact."""
    s = setup15
    s.pgproof("backup", "physical", check=True)
    s.wait_archived(s.cluster.switch_wal())
    clean = load_json(s.pgproof("check", "--json", check=True).stdout)
    local_wal = clean["targets"][0]["repositories"][0]["wal"]
    assert local_wal["corrupt"] == [] and local_wal["copies_read"] >= 2
    # a flipped byte in the filesystem copy of the newest segment
    wal = s.repo_dir / "main" / "wal"
    newest = sorted(p for p in wal.iterdir() if len(p.name) == 28 and p.suffix == ".zst")[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    # another cluster's segment, pushed (valid sha256 metadata) under the next name
    other = make_other_cluster()
    try:
        foreign = Path(other.datadir / "pg_wal" / other.switch_wal())
        tli, segno = walnames.parse_segment_name(newest.name[:24], walnames.DEFAULT_SEGMENT_SIZE)
        renamed = private_dir("pgproof-foreign-") / walnames.segment_name(tli, segno + 1)
        renamed.write_bytes(foreign.read_bytes())
        assert walarchive.push("main", repos_of(s), renamed, 1).ok
    finally:
        other.destroy()
    proc = s.pgproof("check", "--json")
    doc = load_json(proc.stdout)
    assert proc.returncode == 1 and not doc["healthy"]
    problems = doc["targets"][0]["problems"]
    bad = newest.name[:24]
    assert (
        f"local: WAL segment {bad}: stored bytes do not match their sha256 (corrupted)" in problems
    )
    assert not any(p.startswith(f"offsite: WAL segment {bad}") for p in problems)
    assert any(
        p.startswith(f"{r}: WAL segment {renamed.name}: belongs to another cluster")
        for p in problems
        for r in ("local", "offsite")
    )
    # remembered: intact copies are not read again, bad ones are
    again = load_json(s.pgproof("check", "--json").stdout)
    local_again = again["targets"][0]["repositories"][0]["wal"]
    assert local_again["copies_read"] == 2  # the corrupted and the foreign copy
    assert local_again["copies_remembered"] == local_wal["copies_read"] - 1


def make_other_cluster() -> Cluster:
    other = make_cluster(15, free_port())
    other.initdb(settings={"archive_mode": "off"})
    other.start()
    return other
