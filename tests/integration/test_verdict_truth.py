"""Each thing the new checks claim to see, broken on purpose, gives the verdict and names the
cause; and what is not damage (a quiet database, a heartbeat never started) is not failed.

Damage to a restored copy is made through the one seam every restore step goes through:
the runner, which here applies SQL to the sandbox right after pg_restore recreated a
database (as a bug in a restore would), before any check runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

from pgproof import config as pgconfig
from pgproof.backups import catalog, pgbin
from pgproof.backups.runner import CommandResult, Runner
from pgproof.backups.storage.factory import open_all
from pgproof.verifier import job, run
from pgproof.verifier.isolation import DEFAULT_SANDBOX_USER
from pgproof.verifier.processsandbox import ProcessSandbox
from pgproof.verifier.records import ResultRecord
from tests.integration.helpers import (
    backup_under_heartbeat,
    heartbeat_running,
    load_json,
    repos_of,
)
from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.pgcluster import available_majors

pytestmark = pytest.mark.integration


class TamperingRunner(Runner):
    """Runs commands as usual; after pg_restore recreated ``database``, runs ``statements``
    in it (once) as the sandbox's superuser."""

    def __init__(self, database: str, statements: Sequence[str]):
        super().__init__(postgres_user=DEFAULT_SANDBOX_USER)  # the sandbox's runner itself
        self.database, self.statements, self.done = database, list(statements), False

    def run(self, argv: list[str], **kw: Any) -> CommandResult:
        result = super().run(argv, **kw)
        if os.path.basename(argv[0]) == "pg_restore" and not self.done:
            target = next(a for a in argv if a.startswith("--dbname="))[len("--dbname=") :]
            params = pg_conninfo.conninfo_to_dict(target)
            params["dbname"] = self.database
            passfile = (kw.get("env") or {}).get("PGPASSFILE")
            try:
                with psycopg.connect(
                    pg_conninfo.make_conninfo("", **params), autocommit=True, passfile=passfile
                ) as conn:
                    for statement in self.statements:
                        conn.execute(statement.encode())
                self.done = True
            except psycopg.OperationalError:
                pass  # not restored yet: the next pg_restore
        return result


def verify_with(
    setup: Setup,
    runner: Runner,
    kind: str = "logical",
    sandbox: type[ProcessSandbox] | None = None,
    pitr: str | None = None,
) -> ResultRecord:
    """A restore test in this process, through the seams: ``runner`` runs every command,
    ``sandbox`` (a ProcessSandbox subclass) is the sandbox."""
    cfg = pgconfig.load(str(setup.config_path))
    target = cfg.targets[0]
    request = job.VerifyRequest(
        target=target.settings,
        kind=kind,  # type: ignore[arg-type]
        pitr=pitr,
        custom_checks=tuple((c.name, c.sql) for c in target.checks),
    )
    factory = None
    if sandbox is not None:
        box = sandbox
        factory = lambda major, runner: box(pgbin.find(major, runner), runner)  # noqa: E731
    repos = open_all(target.settings.repositories)
    try:
        return run.verify(request, repos, runner, "test", sandbox_factory=factory)
    finally:
        for repo in repos:
            repo.close()


def damaged(setup: Setup, database: str, *statements: str) -> ResultRecord:
    runner = TamperingRunner(database, statements)
    record = verify_with(setup, runner)
    assert runner.done, "the seam never ran"
    return record


def check(record: ResultRecord, name: str) -> Any:
    return next(c for c in record.checks if c.name == name)


@pytest.fixture(scope="module")
def shop() -> Iterator[Setup]:
    """One source and one logical backup for every test that breaks a restored copy (each
    restore test is independent and writes nothing but its record)."""
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None)
    try:
        c = setup.cluster
        c.sql("create role clerk login")
        c.sql("create database shop owner clerk")
        c.sql("alter database shop set work_mem = '8MB'")
        c.sql("comment on database shop is 'the shop'")
        c.sql("create table items (id int primary key, name text)", dbname="shop")
        c.sql(
            "insert into items select g, 'item ' || g from generate_series(1, 100) g",
            dbname="shop",
        )
        c.sql("select lo_from_bytea(0, 'one'), lo_from_bytea(0, 'two')", dbname="shop")
        c.sql("create database legacy encoding 'SQL_ASCII' locale 'C' template template0")
        c.sql("create table t (v text)", dbname="legacy")
        c.sql(
            "insert into t values (convert_from('\\x6361666520e9', 'SQL_ASCII'))",
            dbname="legacy",
        )
        setup.pgproof("backup", "logical", check=True)
        yield setup
    finally:
        destroy_setup(setup)


def test_untouched_restore_passes(shop: Setup) -> None:
    record = verify_with(shop, Runner())
    assert record.verdict == "passed", record.cause
    props = check(record, "database_properties")
    assert props.evidence["large_objects"] == 2


def test_a_lost_large_object_fails_naming_the_count(shop: Setup) -> None:
    record = damaged(shop, "shop", "select lo_unlink(min(oid)) from pg_largeobject_metadata")
    assert record.verdict == "failed"
    assert "shop: large_objects: 1, the source had 2" in check(record, "database_properties").detail


def test_a_lost_database_setting_fails_naming_it(shop: Setup) -> None:
    record = damaged(shop, "shop", "alter database shop reset work_mem")
    result = check(record, "database_properties")
    assert (
        result.verdict == "failed"
        and "settings: [], the source had [work_mem=8MB]" in result.detail
    )


def test_a_changed_owner_and_comment_fail(shop: Setup) -> None:
    record = damaged(
        shop, "shop", "alter database shop owner to postgres", "comment on database shop is null"
    )
    details = check(record, "database_properties").evidence["differences"]
    assert any("owner: 'postgres', the source had 'clerk'" in d for d in details)
    assert any("comment: None, the source had 'the shop'" in d for d in details)


def test_a_lost_role_attribute_fails_the_roles_check(shop: Setup) -> None:
    record = damaged(shop, "shop", "alter role clerk nologin")
    result = check(record, "roles")
    assert result.verdict == "failed"
    assert "role clerk: attributes [], the source had [login]" in result.detail


def test_a_lost_row_fails_row_counts(shop: Setup) -> None:
    record = damaged(shop, "shop", "delete from items where id = 7")
    assert "shop.public.items: 99 rows, dump had 100" in check(record, "row_counts").detail


class RestoresIntoUtf8(Runner):
    """The old way: the first database (``legacy``, SQL_ASCII) is restored into a database
    created as UTF8 instead of as its dump describes it."""

    done = False

    def __init__(self) -> None:
        super().__init__(postgres_user=DEFAULT_SANDBOX_USER)  # the sandbox's runner itself

    def run(self, argv: list[str], **kw: Any) -> CommandResult:
        result = super().run(argv, **kw)
        if os.path.basename(argv[0]) != "pg_restore" or self.done:
            return result
        self.done = True
        target = next(a for a in argv if a.startswith("--dbname="))[len("--dbname=") :]
        params = pg_conninfo.conninfo_to_dict(target)
        passfile = (kw.get("env") or {}).get("PGPASSFILE")
        with psycopg.connect(
            pg_conninfo.make_conninfo("", **params), autocommit=True, passfile=passfile
        ) as conn:
            conn.execute("drop database legacy")
            conn.execute("create database legacy encoding 'UTF8' locale 'C' template template0")
        params["dbname"] = "legacy"
        again = [argv[0], f"--dbname={pg_conninfo.make_conninfo('', **params)}", argv[-1]]
        return super().run(again, **kw)


def test_a_sql_ascii_database_restored_as_utf8_is_caught(shop: Setup) -> None:
    """Restored into UTF8 with the dump's SQL_ASCII client encoding, the byte 0xE9 goes in
    unconverted and unchecked: no restore error, the same row count, and a database that is
    not the source's (invalid UTF8 in a UTF8 database). The encoding check names it."""
    runner = RestoresIntoUtf8()
    record = verify_with(shop, runner)
    assert runner.done and record.verdict == "failed"
    assert check(record, "restore_errors").verdict == "passed"  # silent: why the check exists
    assert check(record, "row_counts").verdict == "passed"
    props = check(record, "database_properties")
    assert props.verdict == "failed"
    assert "legacy: encoding: 'UTF8', the source had 'SQL_ASCII'" in props.evidence["differences"]


def test_a_dump_pg_restore_cannot_recreate_fails_naming_statement_and_object(
    fs_only15: Setup,
) -> None:
    """A check constraint calling a function that reads another table without a schema: the
    data of ``guarded`` cannot be restored (search_path is empty during a restore)."""
    c = fs_only15.cluster
    c.sql("create table limits (v int)")
    c.sql("insert into limits values (100)")
    c.sql(
        "create function under_limit(int) returns boolean language sql"
        " as 'select $1 < (select v from limits)'"
    )
    c.sql("create table guarded (x int check (under_limit(x)))")
    c.sql("insert into guarded values (5)")
    fs_only15.pgproof("backup", "logical", check=True)
    before = sorted(p for p in fs_only15.repo_dir.rglob("*") if "results" not in p.parts)
    proc = fs_only15.pgproof("verify", "--kind", "logical", "--json")
    record = load_json(proc.stdout)["results"][0]
    assert proc.returncode == 1 and record["verdict"] == "failed"
    errors = next(c for c in record["checks"] if c["name"] == "restore_errors")
    first = errors["evidence"]["errors"][0]
    assert 'COPY failed for table "guarded": ERROR:  relation "limits" does not exist' in first
    assert 'SQL function "under_limit"' in first  # the context names the function
    rows = next(c for c in record["checks"] if c["name"] == "row_counts")
    assert "postgres.public.guarded: 0 rows, dump had 1" in rows["detail"]
    after = sorted(p for p in fs_only15.repo_dir.rglob("*") if "results" not in p.parts)
    assert after == before  # nothing in the repository changed but the record


@pytest.mark.parametrize("kind", ["logical", "physical"])
def test_a_missing_extension_is_an_error_naming_it(fs_only15: Setup, kind: str) -> None:
    fs_only15.cluster.sql("create extension hstore")
    fs_only15.cluster.sql("create table tagged (id int, tags hstore)")
    fs_only15.pgproof("backup", kind, check=True)

    class NoHstore(ProcessSandbox):
        """A sandbox host without hstore (as if contrib were not installed)."""

        def connect(self, dbname: str = "postgres", user: str | None = None) -> Any:
            conn = super().connect(dbname, user)
            conn.execute(
                "create or replace temp view pg_available_extensions as"
                " select * from pg_catalog.pg_available_extensions where name <> 'hstore'"
            )
            return conn

    record = verify_with(fs_only15, Runner(), kind, sandbox=NoHstore)
    assert record.verdict == "error", record.cause
    assert "lacks extension(s)" in record.cause and "hstore (database postgres)" in record.cause


# -- the heartbeat: not damage is not failed ----------------------------------------------


def physical(setup: Setup, *args: str) -> dict[str, Any]:
    proc = setup.pgproof("verify", "--kind", "physical", "--json", *args)
    assert proc.stdout, proc.stderr
    record: dict[str, Any] = load_json(proc.stdout)["results"][0]
    return record


def heartbeat_of(record: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in record["checks"] if c["name"] == "heartbeat")


def test_quiet_database_right_after_a_backup_passes(fs_only15: Setup) -> None:
    """archive_timeout = 0, nothing committed after the backup: the point reached is the
    backup's end, and the heartbeat beat while it was taken."""
    with heartbeat_running(fs_only15):
        time.sleep(2.5)
        fs_only15.pgproof("backup", "physical", check=True)
    record = physical(fs_only15, "--pitr", "latest")
    assert record["verdict"] == "passed", record["cause"]
    assert heartbeat_of(record)["verdict"] == "passed"


def test_heartbeat_never_started_is_an_error_naming_the_process(fs_only15: Setup) -> None:
    fs_only15.pgproof("backup", "physical", check=True)
    record = physical(fs_only15)
    assert record["verdict"] == "error"
    result = heartbeat_of(record)
    assert result["verdict"] == "error" and "pgproof heartbeat" in result["detail"]


def test_heartbeat_stopped_long_ago_is_an_error_not_a_failure(fs_only15: Setup) -> None:
    fs_only15.pgproof("heartbeat", "--once", check=True)
    time.sleep(8)  # beats every second, 5 s of slack: this one is stale
    fs_only15.cluster.sql("create table busy (x int)")
    fs_only15.pgproof("backup", "physical", check=True)
    for i in range(20):
        fs_only15.cluster.sql(f"insert into busy values ({i})")
    fs_only15.wait_archived(fs_only15.cluster.switch_wal())
    record = physical(fs_only15, "--pitr", "latest")
    result = heartbeat_of(record)
    assert result["verdict"] == "error", result
    assert "not beating" in result["detail"] and "pgproof heartbeat" in result["detail"]


def test_a_restored_copy_lacking_archived_beats_fails(fs_only15: Setup) -> None:
    """The restored row is set back after recovery (what a replay that lost the newest
    beats would leave): the archived WAL holds later beats, so this is damage."""
    backup_under_heartbeat(fs_only15, 3)

    class LosesBeats(ProcessSandbox):
        def start(self, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
            super().start(timeout, on_wait)  # recovery done, promoted
            with self.connect() as conn:
                conn.execute("update pgproof.heartbeat set beat_at = beat_at - interval '1 hour'")

    record = verify_with(fs_only15, Runner(), "physical", sandbox=LosesBeats, pitr="latest")
    result = check(record, "heartbeat")
    assert result.verdict == "failed", result
    assert "lacks" in result.detail and "archived WAL holds" in result.detail


def test_a_backup_role_that_is_not_superuser(fs_only15: Setup) -> None:
    """The database's owner backs it up: what it cannot read (pg_largeobject's bytes) is
    recorded as unknown, never guessed, and the restore test still passes."""
    c = fs_only15.cluster
    c.sql("create role dumper login")
    c.sql("create database owned owner dumper")
    c.sql("create table t (id int primary key)", dbname="owned")
    c.sql("insert into t select generate_series(1, 10)", dbname="owned")
    c.sql("alter table t owner to dumper", dbname="owned")
    c.sql("select lo_from_bytea(4242, 'abc')", dbname="owned")
    c.sql("alter large object 4242 owner to dumper", dbname="owned")
    fs_only15.edit_config(
        lambda d: d["targets"][0].update(
            conninfo=c.conninfo("owned", user="dumper"),
            logical={"databases": ["owned"], "no_role_passwords": True},
        )
    )
    fs_only15.pgproof("backup", "logical", check=True)
    repo = repos_of(fs_only15)[0]
    manifest = catalog.read_manifest(repo, "main", catalog.scan(repo, "main")[0].id)
    props = manifest.databases[0].properties
    assert props is not None and props.large_objects == 1
    assert props.large_object_bytes is None  # not readable by dumper: unknown, not 0
    record = verify_with(fs_only15, Runner())
    assert record.verdict == "passed", record.cause
