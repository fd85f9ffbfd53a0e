"""Logical backups: globals with pg_dumpall, each database with pg_dump at an exported snapshot.

Each database is dumped inside a REPEATABLE READ transaction whose snapshot is exported and
handed to ``pg_dump --snapshot``; the same transaction counts the rows of every table, so the
counts in the manifest are exactly what the dump holds. The newest installed pg_dump that is
at least the server's major is used (it reads older servers), which makes zstd available.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from psycopg import sql

from pgproof.backups import catalog, compression, dbprops, ids, pgbin
from pgproof.backups.errors import BinaryNotFound, CommandError, SourceError
from pgproof.backups.fanout import fan_out
from pgproof.backups.jobs import (
    BackupJob,
    BackupOutcome,
    RepoSet,
    commit,
    read_pipe,
    remove_partial,
)
from pgproof.backups.progress import counted
from pgproof.backups.settings import LogicalSettings
from pgproof.backups.source import SourceInfo

_TABLES = """
select n.nspname, c.relname
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and c.relpersistence <> 't'
  and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_(toast|temp_)'
  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                  and d.objid = c.oid and d.deptype = 'e')
order by 1, 2
"""


def pg_dump_compression(spec: str, dump_major: int) -> tuple[str, str]:
    """(argument for pg_dump -Z, what the manifest records); zstd/lz4 need pg_dump >= 16."""
    method, level = compression.parse_method(spec)
    if method in ("zstd", "lz4") and dump_major < 16:
        method, level = "gzip", 1
    if method == "none":
        return "0", "none"
    arg = method if level is None else f"{method}:{level}"
    return arg, arg


def count_rows(conn: Any) -> list[catalog.TableCount]:
    counts = []
    for schema, table in conn.execute(_TABLES).fetchall():
        query = sql.SQL("select count(*) from only {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts.append(catalog.TableCount(schema, table, int(row[0])))
    return counts


class LogicalBackup(BackupJob):
    _compression = "none"  # as pg_dump records it; set once the binaries are known

    @property
    def settings(self) -> LogicalSettings:
        return self.target.logical

    def _binaries(self, info: SourceInfo) -> pgbin.PgBinaries:
        if self.target.pg_bin_dir:
            found = pgbin.find_at_least(info.major, self.runner, self.target.pg_bin_dir)
            if found.major < info.major:
                raise BinaryNotFound(f"pg_dump {found.version} cannot dump a {info.major} server")
            return found
        return pgbin.find_at_least(info.major, self.runner)

    def run(self) -> BackupOutcome:
        info = self.source.info()
        bins = self._binaries(info)
        z_arg, z_recorded = pg_dump_compression(self.settings.compression, bins.major)
        self._compression = z_recorded
        started = dt.datetime.now(dt.UTC)
        backup_id = ids.new_backup_id("logical", started)
        prefix = catalog.backup_prefix(self.target.name, backup_id)
        repos = RepoSet(list(self.repos))
        files: list[catalog.BackupFile] = []
        dumps: list[catalog.DatabaseDump] = []
        roles = None
        try:
            wanted = self._databases()
            with self.source.libpq_env() as env:
                if self.settings.globals:
                    before = self._roles()
                    files.append(self._globals(bins, env, prefix, repos))
                    after = self._roles()
                    roles = after if after == before else None  # changed meanwhile: unknown
                for name, oid in wanted:
                    dump, dump_files = self._database(bins, env, prefix, repos, name, oid, z_arg)
                    dumps.append(dump)
                    files += dump_files
            manifest = catalog.Manifest(
                id=backup_id,
                kind="logical",
                target=self.target.name,
                system_identifier=info.system_identifier,
                pg_version=info.server_version,
                pg_version_num=info.server_version_num,
                started_at=catalog.utc_iso(started),
                finished_at=catalog.utc_iso(dt.datetime.now(dt.UTC)),
                compression=z_recorded,
                files=tuple(files),
                tools={"pg_dump": bins.version, "pg_dumpall": bins.version},
                pgproof_version=self.version,
                repositories=tuple(r.name for r in repos.active),
                wal_segment_size=info.wal_segment_size,
                data_checksums=info.data_checksums,
                databases=tuple(dumps),
                roles=roles,
                superuser=info.superuser,
                data_bytes=sum(d.size_bytes or 0 for d in dumps),
            )
            return commit(self.repos, repos, manifest)
        except BaseException:
            remove_partial(self.repos, self.target.name, backup_id)
            raise

    def _databases(self) -> list[tuple[str, int]]:
        available = self.source.databases()
        if not self.settings.databases:
            return available
        by_name = dict(available)
        missing = [d for d in self.settings.databases if d not in by_name]
        if missing:
            raise SourceError(f"databases not found on the source: {', '.join(missing)}")
        return [(d, by_name[d]) for d in self.settings.databases]

    def _roles(self) -> tuple[dbprops.RoleInfo, ...]:
        with self.source.connect() as conn, self.source.errors("reading roles"):
            return dbprops.read_roles(conn)

    def _globals(
        self, bins: pgbin.PgBinaries, env: dict[str, str], prefix: str, repos: RepoSet
    ) -> catalog.BackupFile:
        argv = [bins.path("pg_dumpall"), "--globals-only", f"--dbname={self.source.conninfo()}"]
        if self.settings.no_role_passwords:
            argv.append("--no-role-passwords")
        name = "globals.sql.zst"
        self.progress.start("globals")
        with self.runner.stream(
            argv, env=env, timeout=self.settings.timeout_seconds, as_postgres=True
        ) as cmd:
            data = compression.zstd_compress(counted(read_pipe(cmd.stdout), self.progress), 3)
            result = fan_out(repos.active, prefix + name, data)
        self.progress.done()
        repos.absorb(result)
        return catalog.BackupFile(name, result.size, result.sha256, "globals", "zstd:3")

    def _database(
        self,
        bins: pgbin.PgBinaries,
        env: dict[str, str],
        prefix: str,
        repos: RepoSet,
        name: str,
        oid: int,
        z_arg: str,
    ) -> tuple[catalog.DatabaseDump, list[catalog.BackupFile]]:
        """One database at an exported snapshot; every failure names the database."""
        conn = self.source.connect(name, autocommit=False)
        counts: list[catalog.TableCount] = []
        errors: list[BaseException] = []

        def count() -> None:
            try:
                counts.extend(count_rows(conn))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        try:
            with self.source.errors(f"dumping database {name}"):
                conn.execute("set transaction isolation level repeatable read, read only")
                # counts that row security would filter must fail as pg_dump does, not shrink
                conn.execute("set local row_security = off")
                snapshot_row = conn.execute("select pg_export_snapshot()").fetchone()
                assert snapshot_row is not None
                properties = dbprops.read_properties(conn)
                size_row = conn.execute("select pg_database_size(current_database())").fetchone()
                counter = threading.Thread(target=count, name=f"count-{name}", daemon=True)
                counter.start()
                base = [
                    f"--dbname={self.source.conninfo(name)}",
                    f"--snapshot={snapshot_row[0]}",
                    f"--compress={z_arg}",
                ]
                self.progress.start(f"database {name}", int(size_row[0]) if size_row else None)
                try:
                    if self.settings.jobs > 1:
                        files = self._directory_dump(bins, env, prefix, repos, base, oid)
                        fmt = "directory"
                    else:
                        files = [self._custom_dump(bins, env, prefix, repos, base, oid)]
                        fmt = "custom"
                finally:
                    counter.join()
                self.progress.done()
                if errors:
                    raise SourceError(f"counting rows of {name} failed: {errors[0]}")
        except CommandError as exc:
            raise SourceError(f"dumping database {name}: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
            conn.close()
        files = [dataclasses.replace(f, database=name) for f in files]
        entry = catalog.DatabaseDump(
            name,
            files[0].name.split("/")[0],
            fmt,
            tuple(counts),
            properties,
            int(size_row[0]) if size_row else None,
        )
        return entry, files

    def _custom_dump(
        self,
        bins: pgbin.PgBinaries,
        env: dict[str, str],
        prefix: str,
        repos: RepoSet,
        base: list[str],
        oid: int,
    ) -> catalog.BackupFile:
        name = f"db-{oid}.dump"
        argv = [bins.path("pg_dump"), "--format=custom", *base]
        with self.runner.stream(
            argv, env=env, timeout=self.settings.timeout_seconds, as_postgres=True
        ) as cmd:
            result = fan_out(
                repos.active, prefix + name, counted(read_pipe(cmd.stdout), self.progress)
            )
        repos.absorb(result)
        return catalog.BackupFile(name, result.size, result.sha256, "database", self._compression)

    def _directory_dump(
        self,
        bins: pgbin.PgBinaries,
        env: dict[str, str],
        prefix: str,
        repos: RepoSet,
        base: list[str],
        oid: int,
    ) -> list[catalog.BackupFile]:
        spool = Path(tempfile.mkdtemp(prefix="pgproof-dump-"))
        try:
            ident = self.runner.postgres_identity()
            if ident is not None:
                os.chown(spool, ident.uid, ident.gid)
            out = spool / "dump"
            argv = [
                bins.path("pg_dump"),
                "--format=directory",
                f"--jobs={self.settings.jobs}",
                f"--file={out}",
                *base,
            ]
            self.runner.run(argv, env=env, timeout=self.settings.timeout_seconds, as_postgres=True)
            files = []
            for path in sorted(out.iterdir()):
                name = f"db-{oid}/{path.name}"
                with path.open("rb") as fh:
                    result = fan_out(
                        repos.active, prefix + name, counted(read_pipe(fh), self.progress)
                    )
                repos.absorb(result)
                files.append(
                    catalog.BackupFile(
                        name, result.size, result.sha256, "database", self._compression
                    )
                )
            return files
        finally:
            shutil.rmtree(spool, ignore_errors=True)
