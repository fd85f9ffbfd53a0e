"""The source's archiver, read at scrape time over one kept connection per target.

``pg_stat_archiver`` gives the failure count and the last archival; the number of
``.ready`` files in ``pg_wal/archive_status`` (``pg_ls_archive_statusdir()``, superuser or
``pg_monitor``) is the backlog: unlike "seconds since the last archival" it does not alarm on a
quiet database, and it grows as soon as archiving falls behind or stops.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgproof.backups.errors import BackupError, SourceError
from pgproof.backups.redact import redact
from pgproof.backups.runner import Runner
from pgproof.backups.settings import SourceSettings
from pgproof.backups.source import Source
from pgproof.exporters.status import ArchiverStatus

_ARCHIVER = (
    "select current_setting('archive_mode'), archived_count, failed_count,"
    " extract(epoch from last_archived_time)::float8,"
    " extract(epoch from last_failed_time)::float8 from pg_stat_archiver"
)
_READY = "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'"


class SourceProbe:
    """Reads ``ArchiverStatus``; reconnects after any failure; never holds a transaction."""

    def __init__(self, settings: SourceSettings, timeout_seconds: float = 3.0):
        connect_timeout = max(2, int(timeout_seconds))
        self._settings = SourceSettings(
            settings.conninfo, settings.password_env, settings.password_file, connect_timeout
        )
        self._timeout_ms = int(timeout_seconds * 1000)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def read(self) -> ArchiverStatus:
        """The archiver's state now; BackupError (SourceError) when the source does not answer."""
        with self._lock:
            try:
                return self._read()
            except BackupError:
                self._drop()
                raise
            except psycopg.Error as exc:
                self._drop()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SourceError(f"reading the archiver status: {redact(first)}") from None

    def _read(self) -> ArchiverStatus:
        if self._conn is None or self._conn.closed:
            source = Source(self._settings, Runner())
            self._conn = source.connect()
            self._conn.execute(f"set statement_timeout = {self._timeout_ms}")
        row = self._conn.execute(_ARCHIVER).fetchone()
        assert row is not None
        ready: int | None = None
        ready_error = ""
        try:
            with self._conn.transaction():
                counted = self._conn.execute(_READY).fetchone()
            ready = int(counted[0]) if counted else 0
        except psycopg.errors.InsufficientPrivilege:
            ready_error = "cannot list pg_wal/archive_status: grant pg_monitor to the backup role"
        return ArchiverStatus(
            archive_mode=str(row[0]),
            archived_count=int(row[1]),
            failed_count=int(row[2]),
            last_archived=float(row[3]) if row[3] is not None else None,
            last_failed=float(row[4]) if row[4] is not None else None,
            ready_files=ready,
            ready_error=ready_error,
        )

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
