"""Verdict truth at the edges (issue 22): healthy or half-healthy situations the other
modules never build, each with the verdict it must get and the cause it must name, and a
proof that nothing in the repository changed but the record.

- databases with nothing for amcheck to check (empty, only views, partitioned parents,
  materialized views WITH NO DATA, foreign tables): not applicable, never an error;
- a PITR target in a span where the source was down: judged at the point the WAL shows;
- a backup removed while it is tested: kept by the test's lease, else an error naming it;
- a restore test whose sandbox runs out of disk: an error naming where and how much;
- a manifest that exists and cannot be read: failed, naming the object, with a record.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgproof import config as pgconfig
from pgproof.backups import retention
from pgproof.backups.runner import Runner
from pgproof.backups.storage.factory import open_all
from pgproof.verifier import job, run
from pgproof.verifier.logical import run_logical
from pgproof.verifier.physical import run_physical
from tests.integration.helpers import heartbeat_running, load_json
from tests.support.fixtures import PGPROOF, Setup, destroy_setup, make_setup, small_tmpfs
from tests.support.pgcluster import available_majors

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edges() -> Iterator[Setup]:
    """One source (filesystem repository) shared by the module's tests, in order."""
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None)
    try:
        yield setup
    finally:
        destroy_setup(setup)


def repository_files(setup: Setup) -> dict[str, bytes]:
    """Every backup file, manifest and WAL object (the records a restore test adds and the
    job documents `check` rewrites left out)."""
    return {
        str(p.relative_to(setup.repo_dir)): p.read_bytes()
        for p in sorted(setup.repo_dir.rglob("*"))
        if p.is_file() and "results" not in p.parts and "jobs" not in p.parts
    }


def verify(setup: Setup, *args: str) -> tuple[int, dict[str, Any]]:
    proc = setup.pgproof("verify", "--json", *args)
    assert proc.stdout, proc.stderr
    record: dict[str, Any] = load_json(proc.stdout)["results"][0]
    return proc.returncode, record


def check_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in record["checks"] if c["name"] == name)
    return found


# -- 1. nothing to check is not applicable -----------------------------------------------


def test_databases_with_nothing_to_check_are_not_applicable(edges: Setup) -> None:
    c = edges.cluster
    c.sql("create database fresh")  # a new service's database: nothing in it yet
    c.sql("create database shapes")
    for statement in (
        "create view v as select 1 as one",
        "create table parent (id int, at date) partition by range (at)",
        "create index on parent (id)",  # a partitioned index: no storage either
        "create extension file_fdw",
        "create server files foreign data wrapper file_fdw",
        "create foreign table outside (line text) server files options (filename '/dev/null')",
    ):
        c.sql(statement, dbname="shapes")
    edges.pgproof("backup", "logical", check=True)
    before = repository_files(edges)
    code, record = verify(edges, "--kind", "logical")
    print("all empty:", record["verdict"], check_of(record, "amcheck"))
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert repository_files(edges) == before
    amcheck = check_of(record, "amcheck")
    assert amcheck["verdict"] == "passed" and amcheck["evidence"]["applicable"] is False
    assert "not applicable: nothing to check" in amcheck["detail"]
    reasons = amcheck["evidence"]["not_applicable"]
    assert set(reasons) >= {"postgres", "fresh", "shapes"}
    assert "it is empty" in reasons["fresh"]
    for held in ("1 view(s)", "foreign table", "partitioned", "1 extension(s)"):
        assert held in reasons["shapes"], reasons["shapes"]

    # one database of several holds a table, another a materialized view WITH NO DATA (an
    # empty heap pg_amcheck checks): both are checked, the empty one is named
    c.sql("create database later")
    c.sql("create materialized view mv as select 1 as one with no data", dbname="later")
    c.sql("create table items (id int primary key, name text)", dbname="fresh")
    c.sql("insert into items select g, 'n' || g from generate_series(1, 50) g", dbname="fresh")
    edges.pgproof("backup", "logical", check=True)
    before = repository_files(edges)
    code, record = verify(edges, "--kind", "logical")
    print("one of several:", record["verdict"], check_of(record, "amcheck"))
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    amcheck = check_of(record, "amcheck")
    assert amcheck["evidence"]["user_heap_tables"] >= 1 and amcheck["evidence"]["indexes"] >= 1
    assert set(amcheck["evidence"]["not_applicable"]) == {"postgres", "shapes"}
    assert repository_files(edges) == before


# -- 2. a PITR target in a span where the source was down ------------------------------


def test_a_target_while_the_source_was_down_is_judged_where_the_wal_ends(edges: Setup) -> None:
    """The heartbeat beats, the source is stopped for longer than the heartbeat's window
    (1 s beats, 5 s of slack), started again and beats again: a target inside the outage
    is proven at the last commit before it, and the evidence says what the WAL shows."""
    c = edges.cluster
    with heartbeat_running(edges):
        time.sleep(1.5)
        edges.pgproof("backup", "physical", check=True)
        time.sleep(2.5)
    c.stop()
    down_from = dt.datetime.now(dt.UTC)
    time.sleep(14)
    down_to = dt.datetime.now(dt.UTC)
    c.start()
    with heartbeat_running(edges):
        time.sleep(3)
    edges.wait_archived(c.switch_wal())
    before = repository_files(edges)
    target = down_from + (down_to - down_from) * 0.6
    code, record = verify(
        edges, "--kind", "physical", "--pitr", target.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    beat = check_of(record, "heartbeat")
    print("target in the outage:", record["verdict"], beat)
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert beat["verdict"] == "passed" and beat["evidence"]["anchor"] == "last replayed commit"
    quiet = beat["evidence"]["quiet_span"]
    assert "no commit between" in quiet and "replay stopped before the next commit" in quiet
    assert dt.datetime.fromisoformat(beat["evidence"]["window_end"]) <= down_from
    assert repository_files(edges) == before


def test_a_target_after_a_timeline_fork_is_judged_where_the_wal_ends(edges: Setup) -> None:
    """The source is restored to a point in time by hand (README's runbook: `pgproof fetch`
    and `wal-fetch`), which forks a new timeline; it is minutes (here seconds) before the
    restored source commits again. A target between the fork and that first commit lies in
    a span where timeline 1 still beat, but the new timeline holds nothing: proven at the
    fork's last commit, never judged against the abandoned timeline's beats."""
    c = edges.cluster
    with heartbeat_running(edges):
        time.sleep(1.5)
        backup_id = edges.pgproof("backup", "physical", check=True).stdout.strip()
        time.sleep(3)
        fork_at = dt.datetime.now(dt.UTC)
        time.sleep(4)  # timeline 1 goes on beating past the point the source is taken back to
    edges.wait_archived(c.switch_wal())
    c.stop()
    fetched = Path(c.base) / "fetched"
    edges.pgproof("fetch", "--backup", backup_id, "--out", str(fetched), check=True)
    shutil.rmtree(c.datadir)
    c.datadir.mkdir(mode=0o700)
    owner = c.runner.postgres_identity()
    for path in (fetched, *fetched.rglob("*"), c.datadir):
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
    c.runner.run(
        ["tar", "--zstd", "-xf", str(fetched / "base.tar.zst"), "-C", str(c.datadir)],
        as_postgres=True,
    )
    (c.datadir / "recovery.signal").touch()
    c.set(
        restore_command=f"'{PGPROOF} --config {edges.config_path} wal-fetch %f %p'",
        recovery_target_time=f"'{fork_at.isoformat()}'",
        recovery_target_action="'promote'",
    )
    if owner is not None:
        for path in (c.datadir / "recovery.signal", c.datadir / "postgresql.conf"):
            os.chown(path, owner.uid, owner.gid)
    c.start()
    deadline = time.monotonic() + 60
    while c.sql("select pg_is_in_recovery()")[0][0]:
        assert time.monotonic() < deadline, c.log_tail()
        time.sleep(0.2)
    timeline = int(c.sql("select timeline_id from pg_control_checkpoint()")[0][0])
    assert timeline == 2, c.log_tail()
    time.sleep(8)  # the restored source is checked and opened to its users
    quiet_until = dt.datetime.now(dt.UTC)
    with heartbeat_running(edges):
        time.sleep(3)
    edges.wait_archived(c.switch_wal())
    before = repository_files(edges)
    target = quiet_until - dt.timedelta(seconds=4)  # after the fork, before timeline 2 beats
    code, record = verify(
        edges, "--kind", "physical", "--pitr", target.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    beat = check_of(record, "heartbeat")
    print("target after the fork:", record["verdict"], beat)
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert beat["verdict"] == "passed" and "quiet_span" in beat["evidence"]
    assert dt.datetime.fromisoformat(beat["evidence"]["window_end"]) <= fork_at
    assert repository_files(edges) == before


# -- 4. a sandbox that runs out of disk -------------------------------------------------


def test_a_logical_restore_out_of_disk_is_an_error_naming_where_and_how_much(
    edges: Setup,
) -> None:
    """The dump is small (its rows compress well) but the restored table is not: the
    sandbox's filesystem fills while pg_restore loads it. PostgreSQL's "could not extend
    file" (and the row counts that follow from it) is no evidence of damage."""
    c = edges.cluster
    c.sql("create database big")
    c.sql("create table wide (id int, filler text)", dbname="big")
    c.sql(
        "insert into wide select g, repeat('a', 200) from generate_series(1, 400000) g",
        dbname="big",
    )
    edges.pgproof("backup", "logical", check=True)
    before = repository_files(edges)
    with small_tmpfs("80m") as disk:
        edges.edit_config(lambda d: d.setdefault("verifier", {}).update(workdir=str(disk)))
        try:
            code, record = verify(edges, "--kind", "logical")
        finally:
            edges.edit_config(lambda d: d["verifier"].pop("workdir"))
        print("out of disk:", record["verdict"], record["cause"])
        assert code == 1 and record["verdict"] == "error", record
        cause = record["cause"]
        assert "ran out of disk space" in cause and str(disk) in cause
        assert "MiB free" in cause and "restores to about" in cause
        assert "verifier.workdir" in cause
        assert not any(ch["verdict"] == "failed" for ch in record["checks"]), record["checks"]
        assert list(disk.glob("pgproof-sandbox-*")) == []  # removed, even so
    assert repository_files(edges) == before
    c.sql("drop database big")


# -- 5. a manifest that exists and cannot be read is damage ----------------------------


@pytest.fixture
def encrypted() -> Iterator[Setup]:
    """A source whose filesystem repository encrypts every object (a master key file)."""
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None, archive=False)
    try:
        key = setup.config_path.parent / "master.key"
        subprocess.run(
            [PGPROOF, "keys", "generate", "--type", "master", "--out", str(key)], check=True
        )
        setup.edit_config(
            lambda doc: doc["repositories"][0].update(encryption={"key_file": str(key)})
        )
        yield setup
    finally:
        destroy_setup(setup)


def test_a_swapped_manifest_fails_the_test_of_that_backup_and_of_latest(
    encrypted: Setup,
) -> None:
    """A bucket writer puts an older backup's manifest object under the newest backup's
    name: it does not authenticate there, so the newest backup is damaged. Neither
    `--backup <it>` nor `latest` may answer "no backup" or quietly test the older one."""
    s = encrypted
    s.cluster.sql("create table orders (id int primary key)")
    s.cluster.sql("insert into orders select generate_series(1, 100)")
    older = s.pgproof("backup", "logical", check=True).stdout.strip()
    time.sleep(1.1)  # backup ids are made per second
    newest = s.pgproof("backup", "logical", check=True).stdout.strip()
    backups = s.repo_dir / "main" / "backups"
    shutil.copyfile(backups / older / "manifest.json", backups / newest / "manifest.json")
    before = repository_files(s)

    for args in (("--backup", newest), ()):
        code, record = verify(s, "--kind", "logical", *args)
        print("swapped manifest", args, record["verdict"], record["cause"])
        assert code == 1 and record["verdict"] == "failed", record
        assert record["backup_id"] == newest
        assert f"main/backups/{newest}/manifest.json" in record["cause"]
        assert "decrypt-failed" in record["cause"]
    stored = sorted((s.repo_dir / "main" / "results").glob("*.json"))
    assert len(stored) == 2  # each restore test left its record
    checked = s.pgproof("check", "--json")
    assert checked.returncode == 1 and f"{newest}/manifest.json" in checked.stdout
    # the older backup is still tested by name, and passes
    code, record = verify(s, "--kind", "logical", "--backup", older)
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    assert repository_files(s) == before


def test_a_garbage_key_registry_leaves_only_its_repository_out(encrypted: Setup) -> None:
    """A bucket writer replaces `<target>/jobs/keys.json` of one encrypted repository with
    garbage: that repository is left out of the restore test (named), the other is still
    tested and passes, and `check` names the registry."""
    s = encrypted
    second = s.repo_dir.parent / "second-repo"
    second.mkdir()

    def add_second(doc: dict[str, Any]) -> None:
        first = doc["repositories"][0]
        doc["repositories"].append({**first, "name": "second", "path": str(second)})
        doc["targets"][0]["repositories"].append("second")

    s.edit_config(add_second)
    s.cluster.sql("create table orders (id int primary key)")
    s.cluster.sql("insert into orders select generate_series(1, 100)")
    backup_id = s.pgproof("backup", "logical", check=True).stdout.strip()
    registry = s.repo_dir / "main" / "jobs" / "keys.json"
    assert registry.exists() and (second / "main" / "jobs" / "keys.json").exists()
    registry.write_bytes(b"\x00garbage from a bucket writer")
    before = repository_files(s)
    proc = s.pgproof("verify", "--kind", "logical", "--json")
    print("garbage registry:", proc.returncode, proc.stderr.strip())
    record = load_json(proc.stdout)["results"][0]
    assert proc.returncode == 0 and record["verdict"] == "passed", record["cause"]
    assert record["backup_id"] == backup_id and record["backup"]["repository"] == "second"
    assert "repository local left out of the restore test" in proc.stderr
    assert "main/jobs/keys.json is not a key registry" in proc.stderr
    assert repository_files(s) == before
    assert registry.read_bytes() == b"\x00garbage from a bucket writer"
    checked = s.pgproof("check", "--json")
    assert checked.returncode == 1 and "keys.json is not a key registry" in checked.stdout


# -- 3. a backup removed while it is being tested -----------------------------------------


def test_a_backup_removed_mid_test_is_an_error_and_a_leased_one_is_kept(edges: Setup) -> None:
    """The restore test of an older physical backup holds a lease in the repository while
    it runs: retention (the CLI's, in another process, as on the backup host) keeps that
    backup and its WAL. A retention that cannot see the lease (an older pgproof, a host
    whose lease was refused) deletes it mid-test: the verdict is an error naming the
    removal, never failed, and only retention's own deletions happened."""
    c = edges.cluster
    older = edges.pgproof("backup", "physical", check=True).stdout.strip()
    c.sql("create table if not exists churn (id int)")
    for _ in range(3):
        c.sql("insert into churn select generate_series(1, 20000)")
        edges.wait_archived(c.switch_wal())
    newer = edges.pgproof("backup", "physical", check=True).stdout.strip()
    edges.wait_archived(c.switch_wal())
    edges.edit_config(lambda d: d["targets"][0].update(retention={"full_backups": 1}))
    cfg = pgconfig.load(str(edges.config_path))
    target = cfg.targets[0]
    request = job.VerifyRequest(target=target.settings, kind="physical", backup_id=older)
    seen: dict[str, Any] = {}

    def retention_meanwhile(restore: job.RestoreJob) -> None:
        leased = sorted((edges.repo_dir / "main" / "leases").glob("*.json"))
        seen["lease"] = load_json(leased[0].read_text()) if len(leased) == 1 else leased
        cli = edges.pgproof("retention", "--dry-run", "--json", check=True)
        seen["cli"] = load_json(cli.stdout)["retention"][0]
        seen["before"] = repository_files(edges)
        # retention blind to the lease: what the issue saw
        blind = retention.plan(restore.repo, "main", target.settings.retention)
        retention.apply(restore.repo, "main", blind)
        seen["deleted"] = blind
        run_physical(restore)

    repos = open_all(target.settings.repositories)
    try:
        record = run.verify(
            request,
            repos,
            Runner(),
            "test",
            restore_tests={"physical": retention_meanwhile, "logical": run_logical},
        )
    finally:
        for repo in repos:
            repo.close()
        edges.edit_config(lambda d: d["targets"][0].pop("retention"))
    lease, cli, blind = seen["lease"], seen["cli"], seen["deleted"]
    print("lease:", lease, "\nretention with the lease:", cli)
    print("removed mid-test:", record.verdict, record.cause)
    assert lease["backup_id"] == older and lease["target"] == "main", lease
    assert older in cli["keep"] and older not in cli["delete_backups"]
    assert older in cli["leased"] and "under restore test" in cli["leased"][older]
    assert older in blind.delete_backups and blind.delete_wal
    assert record.verdict == "error", record.cause
    assert f"backup {older} was removed from repository" in record.cause
    assert "retention on another host" in record.cause
    assert not list((edges.repo_dir / "main" / "leases").glob("*.json"))  # released
    deleted = blind.delete_backups + blind.delete_incomplete  # other tests' backups too
    gone = {k for k in seen["before"] if any(f"/backups/{b}/" in k for b in deleted)}
    gone |= set(blind.delete_wal)
    kept = {
        k: v
        for k, v in seen["before"].items()
        if k.split(".pgproof-meta")[0] not in gone and not k.startswith("main/leases")
    }
    assert repository_files(edges) == kept  # a metadata sidecar goes with its object
    assert newer in (p.name for p in (edges.repo_dir / "main" / "backups").iterdir())


def test_a_truncated_manifest_fails_naming_it(edges: Setup) -> None:
    backup_id = edges.pgproof("backup", "logical", check=True).stdout.strip()
    manifest = edges.repo_dir / "main" / "backups" / backup_id / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    before = repository_files(edges)
    code, record = verify(edges, "--kind", "logical")
    print("truncated manifest:", record["verdict"], record["cause"])
    assert code == 1 and record["verdict"] == "failed" and record["backup_id"] == backup_id
    assert f"{backup_id}/manifest.json" in record["cause"]
    assert repository_files(edges) == before
    manifest.unlink()  # what retention's deletion leaves: the next tests see older backups
    shutil.rmtree(manifest.parent)
