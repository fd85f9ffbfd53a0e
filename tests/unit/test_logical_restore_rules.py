"""Rules of the logical restore without a server: how errors are sorted and named, how the
globals dump is adapted to a sandbox, and how database properties and roles are compared."""

from __future__ import annotations

from pgproof.backups.dbprops import DatabaseProperties, RoleInfo, role_differences
from pgproof.verifier import logical

PG_RESTORE_STDERR = """\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 3391; 0 16402 TABLE DATA public t postgres
pg_restore: error: COPY failed for table "t": ERROR:  relation "limits" does not exist
LINE 1: select $1 < (select v from limits)
                                   ^
pg_restore: from TOC entry 215; 1259 16385 TABLE public spatial postgres
pg_restore: error: could not execute query: ERROR:  type "geometry" does not exist
Command was: CREATE TABLE public.spatial (
pg_restore: from TOC entry 2; 3079 16400 EXTENSION postgis
pg_restore: error: could not execute query: ERROR:  extension "postgis" is not available
DETAIL:  Could not open extension control file "/usr/share/postgresql/15/extension/postgis.control": No such file or directory.
Command was: CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: warning: errors ignored on restore: 4
"""


def test_errors_name_the_object_and_the_statement() -> None:
    found = logical.describe_errors(PG_RESTORE_STDERR)
    assert found[0].startswith('COPY failed for table "t": ERROR:  relation "limits"')
    assert found[0].endswith("[object: TABLE DATA public t postgres]")
    assert "[statement: CREATE TABLE public.spatial (]" in found[1]
    assert "[object: TABLE public spatial postgres]" in found[1]
    assert len(found) == 4


def test_a_missing_extension_is_what_the_sandbox_lacks_and_old_servers_ignore_new_settings() -> (
    None
):
    result = logical.LogicalRestore()
    logical._collect(result, "app", PG_RESTORE_STDERR, major=15)
    assert result.missing == ["extension postgis"]
    assert len(result.errors) == 3 and all(e.startswith("app: ") for e in result.errors)
    assert len(result.ignored) == 1 and "transaction_timeout" in result.ignored[0]
    on_17 = logical.LogicalRestore()
    logical._collect(on_17, "app", PG_RESTORE_STDERR, major=17)
    assert len(on_17.errors) == 4  # a 17 server knows the setting: an error there is real


def test_locales_and_libraries_the_sandbox_lacks_are_named() -> None:
    result = logical.LogicalRestore()
    stderr = (
        'psql:g.sql:9: ERROR:  invalid locale name: "de_DE.ISO-8859-1"\n'
        "pg_restore: error: could not execute query: ERROR:  could not access file "
        '"$libdir/pg_partman_bgw": No such file or directory\n'
        "pg_restore: error: could not execute query: ERROR:  ICU is not supported in this build\n"
    )
    logical._collect(result, "db", stderr, major=15)
    assert result.missing == ["locale de_DE.ISO-8859-1", "library pg_partman_bgw", "ICU support"]


GLOBALS = """\
SET default_transaction_read_only = off;
CREATE ROLE admin;
ALTER ROLE admin WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'md5abc';
CREATE ROLE "we""ird";
ALTER ROLE "we""ird" WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'x' VALID UNTIL '2030-01-01 00:00:00+00';
CREATE TABLESPACE fast OWNER admin LOCATION '/mnt/nvme/pg';
CREATE TABLESPACE "it's" OWNER app LOCATION '/srv/it''s';
"""


def test_the_sandbox_superuser_keeps_its_password_and_other_roles_keep_theirs() -> None:
    out = logical._own_superuser(GLOBALS, "admin")
    assert "CREATE ROLE admin;" not in out
    assert (
        "ALTER ROLE admin WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;"
        in out
    )
    assert "PASSWORD 'md5abc'" in out  # other roles are restored as they are
    quoted = logical._own_superuser(GLOBALS, 'we"ird')
    assert 'CREATE ROLE "we""ird";' not in quoted
    assert (
        """ALTER ROLE "we""ird" WITH NOSUPERUSER INHERIT LOGIN VALID UNTIL '2030-01-01 00:00:00+00';"""
        in quoted
    )


class _Box:
    def __init__(self, work: object) -> None:
        self.work_dir = work


def test_tablespaces_are_created_inside_the_sandbox(tmp_path: object) -> None:
    from pathlib import Path

    work = Path(str(tmp_path))
    result = logical.LogicalRestore()
    out = logical._sandbox_tablespaces(GLOBALS, _Box(work), result)  # type: ignore[arg-type]
    assert result.tablespaces == 2
    assert "/mnt/nvme" not in out and "/srv/" not in out
    assert f"CREATE TABLESPACE fast OWNER admin LOCATION '{work}/tablespaces/1';" in out
    assert f"""CREATE TABLESPACE "it's" OWNER app LOCATION '{work}/tablespaces/2';""" in out
    assert (work / "tablespaces" / "2").is_dir()


def props(**changes: object) -> DatabaseProperties:
    base = DatabaseProperties(
        encoding="SQL_ASCII",
        collate="C",
        ctype="C",
        locale_provider="c",
        locale=None,
        icu_rules=None,
        owner="app",
        connection_limit=50,
        acl=("=Tc/app", "app=CTc/app"),
        comment="shop",
        settings=("search_path=shop, public", "app: work_mem=16MB"),
        large_objects=5,
        large_object_bytes=1000,
        extensions=("hstore 1.8",),
    )
    return DatabaseProperties(**{**base.__dict__, **changes})


def test_database_property_differences_are_named() -> None:
    assert props().differences(props(extensions=())) == []  # extensions: checked before
    found = props().differences(
        props(encoding="UTF8", settings=("app: work_mem=16MB",), large_objects=4)
    )
    assert found == [
        "encoding: 'UTF8', the source had 'SQL_ASCII'",
        "settings: [app: work_mem=16MB], the source had [search_path=shop, public, app: work_mem=16MB]",
        "large_objects: 4, the source had 5",
    ]
    # bytes unknown on one side (pg_largeobject not readable by the backup role): not compared
    assert props().differences(props(large_object_bytes=None)) == []
    assert DatabaseProperties.from_dict(props().__dict__) == props()


def test_role_differences_are_named() -> None:
    source = (
        RoleInfo("app", ("login",), ("reader (admin)",), ("work_mem=1MB",)),
        RoleInfo("reader", (), (), ()),
    )
    assert role_differences(source, source) == []
    restored = (RoleInfo("app", ("login",), (), ("work_mem=1MB",)),)
    assert role_differences(source, restored) == [
        "role app: member of [], the source had [reader (admin)]",
        "role reader is missing",
    ]
