"""End to end, on every installed PostgreSQL major: a cluster archiving through
``pgproof wal-push`` into a filesystem and an S3 repository, logical and physical backups,
then ``check`` reports healthy."""

from __future__ import annotations

import os

import pytest

from pgproof.backups import catalog
from tests.integration.helpers import all_keys, complete_ids, load_json, repos_of, seed
from tests.support.fixtures import Setup

pytestmark = pytest.mark.integration


def test_backups_land_in_both_repositories_and_check_is_healthy(setup_matrix: Setup) -> None:
    s = setup_matrix
    seed(s)
    s.cluster.switch_wal()

    logical = load_json(s.pgproof("backup", "logical", "--json", check=True).stdout)
    assert logical["ok"] and logical["stored_in"] == ["local", "offsite"]
    physical = load_json(s.pgproof("backup", "physical", "--json", check=True).stdout)
    assert physical["ok"] and physical["stored_in"] == ["local", "offsite"]
    s.cluster.sql("insert into orders (note) values ('after the backup')")
    s.cluster.switch_wal()

    for repo in repos_of(s):
        ids = complete_ids(repo)
        assert ids == sorted([logical["backup_id"], physical["backup_id"]])
        lg = catalog.read_manifest(repo, "main", logical["backup_id"])
        counts = {(d.name, t.table): t.rows for d in lg.databases for t in d.tables}
        assert counts[("postgres", "orders")] == 1000
        assert counts[("app", "items")] == 250
        assert {f.role for f in lg.files} == {"globals", "database"}
        ph = catalog.read_manifest(repo, "main", physical["backup_id"])
        assert ph.start_lsn and ph.stop_lsn and ph.timeline == 1
        assert ph.system_identifier == lg.system_identifier
        assert ph.pg_version_num // 10000 == s.cluster.major
        wal = [k for k in all_keys(repo) if "/wal/" in k]
        assert any(k.endswith(".backup") for k in wal)
        assert ph.stop_wal is not None and any(ph.stop_wal in k for k in wal)

    check = s.pgproof("check", "--json")
    report = load_json(check.stdout)
    assert check.returncode == 0, report["targets"][0]["problems"]
    assert report["healthy"] is True
    listed = load_json(s.pgproof("list", "--json", check=True).stdout)["backups"]
    assert {(b["repository"], b["kind"], b["state"]) for b in listed} == {
        (r, k, "complete") for r in ("local", "offsite") for k in ("logical", "physical")
    }


def test_async_archiving_keeps_up_and_backups_work(setup15: Setup) -> None:
    s = setup15
    spool = s.config_path.parent / "spool"
    spool.mkdir()
    os.chown(spool, s.repo_dir.stat().st_uid, s.repo_dir.stat().st_gid)
    s.edit_config(lambda d: d["targets"][0].update(wal={"async": True, "spool_dir": str(spool)}))
    names = []
    for i in range(8):
        s.cluster.sql(f"create table a{i} as select g from generate_series(1, 20000) g")
        names.append(s.cluster.switch_wal())
    s.wait_archived(names[-1])
    physical = load_json(s.pgproof("backup", "physical", "--json", check=True).stdout)
    assert physical["stored_in"] == ["local", "offsite"]
    for repo in repos_of(s):
        keys = all_keys(repo)
        for name in names:
            assert f"main/wal/{name}.zst" in keys, (repo.name, name)
    assert s.pgproof("check").returncode == 0
    archiver = s.cluster.sql("select archived_count, failed_count from pg_stat_archiver")[0]
    assert archiver[0] >= len(names) and archiver[1] == 0
    assert list((spool / "main" / "error").iterdir()) == []
