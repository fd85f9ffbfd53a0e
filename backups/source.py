"""The source database: connecting, reading facts about it, and handing credentials to tools.

Passwords reach psycopg as a keyword argument and libpq tools through a 0600 passfile named
by PGPASSFILE (owned by the OS user the tool runs as); never through argv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo

from pgproof.backups.errors import SourceError
from pgproof.backups.redact import redact
from pgproof.backups.runner import Runner
from pgproof.backups.settings import SourceSettings


@dataclass(frozen=True)
class SourceInfo:
    server_version: str
    server_version_num: int
    system_identifier: str
    data_checksums: bool
    wal_segment_size: int
    timeline: int
    in_recovery: bool
    archive_mode: str
    current_database: str
    superuser: str  # the bootstrap superuser (role oid 10)

    @property
    def major(self) -> int:
        return self.server_version_num // 10000


def text_safe(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Make text come back as ``str`` on a SQL_ASCII database too.

    psycopg returns ``bytes`` for text on a SQL_ASCII connection (it cannot know the bytes'
    encoding). The server converts nothing from SQL_ASCII, so a LATIN1 client encoding maps
    every byte to one character and back: names and values round-trip exactly (shown as
    Latin-1), and the same applies to a restored copy, so both sides compare equal.
    """
    if conn.info.encoding == "ascii":
        autocommit = conn.autocommit
        conn.autocommit = True
        conn.execute("set client_encoding to 'LATIN1'")
        conn.autocommit = autocommit
    return conn


def _escape_pgpass(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class Source:
    def __init__(self, settings: SourceSettings, runner: Runner):
        self.settings = settings
        self._password = settings.password()
        self.runner = runner.with_secrets([self._password] if self._password else [])
        try:
            self._params = pg_conninfo.conninfo_to_dict(settings.conninfo)
        except psycopg.ProgrammingError as exc:
            raise SourceError(f"invalid conninfo: {redact(str(exc))}") from None
        if "password" in self._params:
            raise SourceError("conninfo must not contain a password; use password_env/_file")

    def conninfo(self, dbname: str | None = None) -> str:
        params: dict[str, Any] = dict(self._params)
        params.setdefault("connect_timeout", str(self.settings.connect_timeout))
        if dbname is not None:
            params["dbname"] = dbname
        return pg_conninfo.make_conninfo(**params)

    def describe(self) -> str:
        p = self._params
        return f"{p.get('host', 'local socket')}:{p.get('port', '5432')}/{p.get('dbname', '')}"

    def connect(
        self, dbname: str | None = None, autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        kwargs: dict[str, Any] = {"autocommit": autocommit, "application_name": "pgproof"}
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            return text_safe(psycopg.connect(self.conninfo(dbname), **kwargs))
        except psycopg.Error as exc:
            message = self.runner.redact(str(exc).strip().splitlines()[0] if str(exc) else "")
            raise SourceError(f"cannot connect to source {self.describe()}: {message}") from None

    def info(self) -> SourceInfo:
        with self.connect() as conn, self.errors("reading server facts"):
            row = conn.execute(
                "select current_setting('server_version'),"
                " current_setting('server_version_num')::int,"
                " (select system_identifier::text from pg_control_system()),"
                " current_setting('data_checksums') = 'on',"
                " (select setting::bigint from pg_settings where name = 'wal_segment_size'),"
                " (select timeline_id from pg_control_checkpoint()),"
                " pg_is_in_recovery(), current_setting('archive_mode'), current_database(),"
                " (select rolname from pg_roles where oid = 10)"
            ).fetchone()
        assert row is not None
        return SourceInfo(
            server_version=str(row[0]).split()[0],
            server_version_num=int(row[1]),
            system_identifier=str(row[2]),
            data_checksums=bool(row[3]),
            wal_segment_size=int(row[4]),
            timeline=int(row[5]),
            in_recovery=bool(row[6]),
            archive_mode=str(row[7]),
            current_database=str(row[8]),
            superuser=str(row[9]),
        )

    def databases(self) -> list[tuple[str, int]]:
        """(name, oid) of every database that accepts connections, templates excluded."""
        with self.connect() as conn, self.errors("listing databases"):
            rows = conn.execute(
                "select datname, oid::bigint from pg_database"
                " where datallowconn and not datistemplate order by datname"
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn psycopg errors met while ``doing`` something into SourceError."""
        try:
            yield
        except psycopg.Error as exc:
            message = self.runner.redact(str(exc).strip())
            raise SourceError(f"source {self.describe()}: {doing}: {message}") from None

    @contextlib.contextmanager
    def libpq_env(self) -> Iterator[dict[str, str]]:
        """Environment for libpq tools: PGPASSFILE (0600, private dir) when a password is set."""
        env = {"PGAPPNAME": "pgproof", "PGCONNECT_TIMEOUT": str(self.settings.connect_timeout)}
        if self._password is None:
            yield env
            return
        directory = tempfile.mkdtemp(prefix="pgproof-pass-")
        try:
            path = os.path.join(directory, "pgpass")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"*:*:*:*:{_escape_pgpass(self._password)}\n")
            ident = self.runner.postgres_identity()
            if ident is not None:
                os.chown(directory, ident.uid, ident.gid)
                os.chown(path, ident.uid, ident.gid)
            env["PGPASSFILE"] = path
            yield env
        finally:
            shutil.rmtree(directory, ignore_errors=True)
