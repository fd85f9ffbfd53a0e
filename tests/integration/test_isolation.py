"""A restore test never touches production: tablespaces restored inside the sandbox, a
dedicated OS user that cannot write production's files, and the refusal to share a user
that owns a cluster. Production is stopped while each restore test runs, so that any
change to its data directory or tablespaces is pgproof's doing: inotify records every
write, and every byte is compared afterwards."""

from __future__ import annotations

import hashlib
import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgproof.backups.runner import Runner
from pgproof.verifier import isolation
from pgproof.verifier.errors import SandboxUserError
from tests.integration.helpers import load_json, repos_of
from tests.support.fixtures import Setup
from tests.support.inotify import Watch
from tests.support.pgcluster import private_dir

pytestmark = pytest.mark.integration


def tree_digest(*roots: Path) -> dict[str, str]:
    """Every file, directory and link under the roots: content hash, mode and owner."""
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                what = f"{st.st_mode:o} {st.st_uid}:{st.st_gid}"
                if os.path.islink(path):
                    what += " -> " + os.readlink(path)
                elif os.path.isfile(path):
                    what += " " + hashlib.sha256(Path(path).read_bytes()).hexdigest()
                out[path] = what
    return out


def verify(setup: Setup) -> tuple[int, dict[str, Any]]:
    proc = setup.pgproof("verify", "--kind", "physical", "--json", timeout=900)
    return proc.returncode, load_json(proc.stdout) if proc.stdout else {}


def tablespace_dir(setup: Setup, name: str) -> Path:
    path = private_dir(f"pgproof-ts-{name}-")
    setup.cluster.sql(f"create tablespace {name} location '{path}'")
    return path


@pytest.fixture
def with_tablespaces(setup15: Setup) -> Iterator[tuple[Setup, list[Path]]]:
    """A source with two tablespaces: tables and an index in one, a database whose default
    tablespace is the other."""
    s = setup15
    s.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    fast, cold = tablespace_dir(s, "fast"), tablespace_dir(s, "cold")
    s.cluster.sql(
        "create table orders tablespace fast as "
        "select g as id, md5(g::text) as note from generate_series(1, 20000) g"
    )
    s.cluster.sql("create index orders_note on orders (note) tablespace cold")
    s.cluster.sql("create database archive tablespace cold")
    s.cluster.sql(
        "create table old as select g, repeat('x', 500) as pad from generate_series(1, 3000) g",
        dbname="archive",
    )
    yield s, [fast, cold]


def quiesced(setup: Setup) -> None:
    """Everything archived, then production stopped: from here on, nothing may change it."""
    setup.wait_archived(setup.cluster.switch_wal())
    setup.cluster.stop()


def test_physical_backup_with_tablespaces_restores_inside_the_sandbox(
    with_tablespaces: tuple[Setup, list[Path]],
) -> None:
    s, spaces = with_tablespaces
    spaces.append(tablespace_dir(s, "gone"))
    backup_id = s.pgproof("backup", "physical", check=True).stdout.strip()
    for repo in repos_of(s):
        keys = [i.key for i in repo.listing(f"main/backups/{backup_id}/")]
        assert sum("tablespace-" in k for k in keys) == 3, keys
    # after the backup: rows into both tablespaces, an index rebuilt, one tablespace dropped
    s.cluster.sql("insert into orders select g, md5(g::text) from generate_series(20001, 25000) g")
    s.cluster.sql("reindex index orders_note")
    s.cluster.sql("drop tablespace gone")
    quiesced(s)
    before = tree_digest(s.cluster.datadir, *spaces)
    with Watch(s.cluster.datadir, *spaces) as watch:
        code, doc = verify(s)
    record = doc["results"][0]
    assert watch.events == [], watch.events[:10]
    assert tree_digest(s.cluster.datadir, *spaces) == before
    assert code == 0 and record["verdict"] == "passed", record["cause"]
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["amcheck"]["verdict"] == "passed"


def test_a_tablespace_created_in_the_replay_range_is_an_error_naming_it(
    with_tablespaces: tuple[Setup, list[Path]],
) -> None:
    s, spaces = with_tablespaces
    s.pgproof("backup", "physical", check=True)
    late = tablespace_dir(s, "late")
    s.cluster.sql("create table newer tablespace late as select g from generate_series(1, 100) g")
    quiesced(s)
    before = tree_digest(s.cluster.datadir, late, *spaces)
    with Watch(s.cluster.datadir, late, *spaces) as watch:
        code, doc = verify(s)
    record = doc["results"][0]
    assert watch.events == [], watch.events[:10]
    assert tree_digest(s.cluster.datadir, late, *spaces) == before
    assert code == 1 and record["verdict"] == "error", record
    assert "late" in record["cause"] or str(late) in record["cause"], record["cause"]
    assert "LSN" in record["cause"], record["cause"]


def test_the_sandbox_user_cannot_write_production_or_the_repository(
    with_tablespaces: tuple[Setup, list[Path]],
) -> None:
    """Superuser SQL inside the restored cluster tries to write production's data directory,
    a tablespace and the repository: the server (the sandbox's OS user) gets EACCES."""
    s, spaces = with_tablespaces
    targets = {
        "datadir": s.cluster.datadir / "pgproof-probe",
        "tablespace": spaces[0] / "pgproof-probe",
        "repository": s.repo_dir / "pgproof-probe",
    }
    s.edit_config(
        lambda d: d["targets"][0].update(
            checks=[
                {"name": name, "sql": f"copy (select 1) to '{path}'"}
                for name, path in targets.items()
            ]
            + [{"name": "read", "sql": f"select pg_read_file('{s.cluster.datadir}/PG_VERSION')"}]
        )
    )
    s.pgproof("backup", "physical", check=True)
    quiesced(s)
    before = tree_digest(s.cluster.datadir, s.repo_dir, *spaces)
    code, doc = verify(s)
    record = doc["results"][0]
    checks = {c["name"]: c for c in record["checks"]}
    for name, path in targets.items():
        detail = checks[f"custom:{name}"]["detail"]
        assert "Permission denied" in detail, (name, detail)
        assert not path.exists()
    assert "Permission denied" in checks["custom:read"]["detail"]
    after = tree_digest(s.cluster.datadir, s.repo_dir, *spaces)
    # the restore test's own record is the only thing that may appear (in the repository)
    assert {k: v for k, v in after.items() if "/results" not in k} == {
        k: v for k, v in before.items() if "/results" not in k
    }
    assert code == 1 and record["verdict"] == "failed"  # the probes are failed assertions
    assert {c["name"]: c["verdict"] for c in record["checks"]}["amcheck"] == "passed"


def test_a_sandbox_user_that_owns_a_running_cluster_is_refused(setup15: Setup) -> None:
    s = setup15
    s.edit_config(lambda d: d.setdefault("verifier", {}).update(sandbox_user="postgres"))
    s.pgproof("backup", "physical", check=True)
    code, doc = verify(s)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "error"
    assert "refusing to run a restore test as the sandbox user 'postgres'" in record["cause"]
    assert str(s.cluster.datadir) in record["cause"]
    assert "share_sandbox_user" in record["cause"]
    # accepted when the operator says so
    runner = isolation.sandbox_runner(Runner(), "postgres", share_allowed=True)
    assert runner.postgres_user == "postgres"


def test_sandbox_runner_refusals() -> None:
    with pytest.raises(SandboxUserError, match="does not exist"):
        isolation.sandbox_runner(Runner(), "pgproof-no-such-user", share_allowed=False)
    runner = isolation.sandbox_runner(Runner(), isolation.DEFAULT_SANDBOX_USER, False)
    ident = runner.postgres_identity()
    assert ident is not None and ident.uid == pwd.getpwnam(isolation.DEFAULT_SANDBOX_USER).pw_uid
