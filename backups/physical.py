"""Physical backups: pg_basebackup's tar stream, compressed and stored while it arrives.

pg_basebackup writes ``base.tar`` (with its ``backup_manifest`` injected, so the backup is
pg_verifybackup-compatible) to a pipe; pgproof reads it once: a tar scanner keeps
``backup_label`` and ``backup_manifest`` (start/stop LSN, timeline), zstd compresses it on
all cores, and every repository receives the same bytes. WAL comes from the archive
(``-X none``, the server waits until the backup's WAL is archived, then pgproof confirms the
segments are in every repository); a source without archiving gets ``-X fetch`` instead.

A source with tablespaces besides pg_default/pg_global cannot be streamed as one tar:
pg_basebackup writes ``<oid>.tar`` per tablespace and ``base.tar`` into a staging directory,
and each is read while it is written (``backups.stagedtar``), compressed and stored the same
way as ``tablespace-<oid>.tar.zst``; the manifest lists each with its name and location as
the backup's own ``tablespace_map`` gives it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgproof.backups import catalog, compression, ids, pgbin, stagedtar, walarchive, walnames
from pgproof.backups.errors import BackupError, BackupFailed, BinaryNotFound, CatalogError
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
from pgproof.backups.settings import PhysicalSettings
from pgproof.backups.source import SourceInfo
from pgproof.backups.tarscan import TarScanner

_LABEL_START = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.I)
_LABEL_TLI = re.compile(r"START TIMELINE: (\d+)")
_LABEL_TIME = re.compile(r"START TIME: (.+)")


@dataclass(frozen=True)
class BackupPoints:
    start_lsn: int
    stop_lsn: int
    timeline: int
    stop_timeline: int
    start_time: str


def data_size(backup_manifest: bytes) -> int | None:
    """The bytes of every file backup_manifest lists (what a restore writes before WAL)."""
    try:
        return sum(int(f["Size"]) for f in json.loads(backup_manifest)["Files"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_points(backup_label: bytes, backup_manifest: bytes) -> BackupPoints:
    """Start from backup_label; stop and timelines from the manifest's WAL-Ranges."""
    label = backup_label.decode("utf-8", "replace")
    start = _LABEL_START.search(label)
    tli = _LABEL_TLI.search(label)
    when = _LABEL_TIME.search(label)
    if not (start and tli):
        raise CatalogError("backup_label lacks START WAL LOCATION / START TIMELINE")
    try:
        ranges = json.loads(backup_manifest)["WAL-Ranges"]
        last = ranges[-1]  # the start and its timeline come from backup_label
        stop = walnames.parse_lsn(last["End-LSN"])
        stop_tli = int(last["Timeline"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CatalogError(f"backup_manifest has no usable WAL-Ranges: {exc}") from None
    return BackupPoints(
        walnames.parse_lsn(start.group(1)),
        stop,
        int(tli.group(1)),
        stop_tli,
        when.group(1).strip() if when else "",
    )


def _scanned(chunks: Iterable[bytes], scanner: TarScanner) -> Iterator[bytes]:
    for chunk in chunks:
        scanner.feed(chunk)
        yield chunk


def _seen(chunks: Iterable[bytes], hook: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        hook(len(chunk))
        yield chunk


def parse_tablespace_map(text: bytes) -> dict[int, str]:
    """``tablespace_map`` (``<oid> <location>`` per line; PostgreSQL puts a backslash before
    a backslash, CR or LF in the location) -> oid -> location."""
    out: dict[int, str] = {}
    line: list[str] = []
    escaped = False
    for ch in text.decode("utf-8", "surrogateescape") + "\n":
        if escaped:
            line.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            entry = "".join(line)
            line = []
            if not entry.strip():
                continue
            oid, sep, location = entry.partition(" ")
            if not sep or not oid.isdigit():
                raise CatalogError(f"tablespace_map: unreadable line {entry[:120]!r}")
            out[int(oid)] = location
        else:
            line.append(ch)
    return out


def _tablespaces(
    files: Iterable[catalog.BackupFile], locations: dict[int, str], names: dict[int, str]
) -> tuple[catalog.Tablespace, ...]:
    """The manifest's tablespaces: every archive pg_basebackup wrote must be in the
    backup's tablespace_map and the other way round."""
    archived = {
        int(f.name.split("-", 1)[1].split(".", 1)[0]): f.name
        for f in files
        if f.role == "tablespace"
    }
    if set(archived) != set(locations):
        raise BackupFailed(
            f"the backup's tablespace_map names tablespaces {sorted(locations)} but "
            f"pg_basebackup archived {sorted(archived)}"
        )
    return tuple(
        catalog.Tablespace(oid, names.get(oid, str(oid)), locations[oid], archived[oid])
        for oid in sorted(archived)
    )


class _Store:
    """Compresses each archive as it arrives and sends the same bytes to every repository."""

    def __init__(self, repos: RepoSet, prefix: str, method: str, level: int | None, threads: int):
        self.repos = repos
        self.prefix = prefix
        self.method = method
        self.level = level or 3
        self.threads = threads or -1
        self.files: list[catalog.BackupFile] = []

    @property
    def compression(self) -> str:
        return "none" if self.method == "none" else f"zstd:{self.level}"

    def add(self, name: str, chunks: Iterable[bytes], role: str) -> None:
        stream = chunks
        if self.method == "zstd":
            stream = compression.zstd_compress(chunks, self.level, self.threads)
            name += ".zst"
        result = fan_out(self.repos.active, self.prefix + name, stream)
        self.repos.absorb(result)
        self.files.append(
            catalog.BackupFile(name, result.size, result.sha256, role, self.compression)
        )


class PhysicalBackup(BackupJob):
    @property
    def settings(self) -> PhysicalSettings:
        return self.target.physical

    def _binaries(self, info: SourceInfo) -> pgbin.PgBinaries:
        try:
            return pgbin.find(info.major, self.runner, self.target.pg_bin_dir)
        except BinaryNotFound:
            return pgbin.find_at_least(info.major, self.runner)

    def _size_hint(self) -> int | None:
        try:
            with self.source.connect() as conn:
                row = conn.execute("select sum(pg_database_size(oid)) from pg_database").fetchone()
            return int(row[0]) if row and row[0] is not None else None
        except BackupError:
            return None

    def _tablespace_names(self) -> dict[int, str]:
        """Tablespaces besides pg_default and pg_global: oid -> name (their locations come
        from the backup's own tablespace_map, which is what the backup holds)."""
        with self.source.connect() as conn, self.source.errors("listing tablespaces"):
            rows = conn.execute(
                "select oid, spcname from pg_tablespace "
                "where spcname not in ('pg_default', 'pg_global')"
            ).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    def run(self) -> BackupOutcome:
        info = self.source.info()
        spaces = self._tablespace_names()
        bins = self._binaries(info)
        method, level = compression.parse_method(self.settings.compression)
        started = dt.datetime.now(dt.UTC)
        backup_id = ids.new_backup_id("physical", started)
        prefix = catalog.backup_prefix(self.target.name, backup_id)
        repos = RepoSet(list(self.repos))
        wal_mode = "none" if info.archive_mode != "off" else "fetch"
        argv = [
            bins.path("pg_basebackup"),
            f"--dbname={self.source.conninfo()}",
            "--format=tar",
            f"--wal-method={wal_mode}",
            f"--checkpoint={self.settings.checkpoint}",
            f"--label=pgproof {backup_id}",
            "--compress=none",
        ]
        if self.settings.max_rate:
            argv.append(f"--max-rate={self.settings.max_rate}")
        store = _Store(repos, prefix, method, level, self.settings.compression_threads)
        try:
            self.progress.start("base backup", self._size_hint())
            if spaces:
                label, tsmap, bb_manifest = self._staged(argv, store)
            else:
                label, tsmap, bb_manifest = self._streamed(argv, store)
            self.progress.done()
            points = parse_points(label, bb_manifest)
            side = fan_out(repos.active, prefix + "backup_manifest", [bb_manifest])
            repos.absorb(side)
            tablespaces = _tablespaces(store.files, parse_tablespace_map(tsmap), spaces)
            if wal_mode == "none":
                self._confirm_wal(repos, points, info.wal_segment_size)
            seg = info.wal_segment_size
            start_seg = walnames.lsn_segment(points.start_lsn, seg)
            stop_seg = walnames.stop_segment(points.stop_lsn, seg)
            manifest = catalog.Manifest(
                id=backup_id,
                kind="physical",
                target=self.target.name,
                system_identifier=info.system_identifier,
                pg_version=info.server_version,
                pg_version_num=info.server_version_num,
                started_at=catalog.utc_iso(started),
                finished_at=catalog.utc_iso(dt.datetime.now(dt.UTC)),
                compression=store.compression,
                files=(
                    *store.files,
                    catalog.BackupFile(
                        "backup_manifest", side.size, side.sha256, "backup_manifest"
                    ),
                ),
                tools={"pg_basebackup": bins.version},
                superuser=info.superuser,
                data_bytes=data_size(bb_manifest),
                pgproof_version=self.version,
                repositories=tuple(r.name for r in repos.active),
                wal_segment_size=seg,
                data_checksums=info.data_checksums,
                start_lsn=walnames.format_lsn(points.start_lsn),
                stop_lsn=walnames.format_lsn(points.stop_lsn),
                timeline=points.timeline,
                stop_timeline=points.stop_timeline,
                start_wal=walnames.segment_name(points.timeline, start_seg, seg),
                stop_wal=walnames.segment_name(points.stop_timeline, stop_seg, seg),
                wal_included=wal_mode == "fetch",
                tablespaces=tablespaces,
                extra={"backup_label_start_time": points.start_time},
            )
            return commit(self.repos, repos, manifest)
        except BaseException:
            remove_partial(self.repos, self.target.name, backup_id)
            raise

    def _stall_reason(self) -> str:
        # After the data, the server waits until the backup's WAL is archived before it sends
        # backup_manifest: with archiving broken it would wait for ever.
        return (
            f"sent nothing for {self.settings.wal_wait_seconds} s: the server is probably "
            "waiting for the backup's WAL to be archived (is archive_command failing? see "
            "the server log)"
        )

    def _streamed(self, argv: list[str], store: _Store) -> tuple[bytes, bytes, bytes]:
        """One tablespace: base.tar (backup_manifest injected) through a pipe, read once."""
        scanner = TarScanner({"backup_label", "backup_manifest", "tablespace_map"})
        with (
            self.source.libpq_env() as env,
            self.runner.stream(
                [*argv, "--pgdata=-"],
                env=env,
                timeout=self.settings.timeout_seconds,
                as_postgres=True,
            ) as cmd,
        ):
            seen = cmd.watch_stall(self.settings.wal_wait_seconds, self._stall_reason())
            raw = _scanned(_seen(counted(read_pipe(cmd.stdout), self.progress), seen), scanner)
            store.add("base.tar", raw, "base")
        if not scanner.finished or "backup_manifest" not in scanner.captured:
            raise BackupFailed("pg_basebackup's tar stream ended without backup_manifest")
        got = scanner.captured
        return got.get("backup_label", b""), got.get("tablespace_map", b""), got["backup_manifest"]

    def _staged(self, argv: list[str], store: _Store) -> tuple[bytes, bytes, bytes]:
        """Tablespaces: pg_basebackup writes <oid>.tar per tablespace and base.tar into a
        staging directory, each read while it is written (see backups.stagedtar)."""
        staging = Path(tempfile.mkdtemp(prefix="pgproof-basebackup-"))
        ident = self.runner.postgres_identity()
        if ident is not None:
            os.chown(staging, ident.uid, ident.gid)
        out = staging / "out"  # pg_basebackup wants a directory that does not exist yet
        scanner = TarScanner({"backup_label", "tablespace_map"})
        archives: list[stagedtar.Archive] = []
        try:
            with (
                self.source.libpq_env() as env,
                self.runner.stream(
                    [*argv, f"--pgdata={out}"],
                    env=env,
                    timeout=self.settings.timeout_seconds,
                    as_postgres=True,
                ) as cmd,
            ):
                seen = cmd.watch_stall(self.settings.wal_wait_seconds, self._stall_reason())
                throttle = stagedtar.Throttle(cmd.pid)
                for archive in stagedtar.follow_archives(out, cmd.running, throttle):
                    archives.append(archive)
                    chunks = _seen(counted(archive.chunks(), self.progress), seen)
                    if archive.name == "base.tar":
                        store.add("base.tar", _scanned(chunks, scanner), "base")
                    elif archive.name[:-4].isdigit():
                        store.add(f"tablespace-{archive.name}", chunks, "tablespace")
                    else:
                        raise BackupFailed(f"pg_basebackup wrote an unexpected {archive.name}")
            unfinished = [a.name for a in archives if not a.complete]
            if unfinished or "base.tar" not in [a.name for a in archives]:
                raise BackupFailed(
                    f"pg_basebackup exited before its archives were complete: "
                    f"{', '.join(unfinished) or 'no base.tar'}"
                )
            manifest_bytes = (out / "backup_manifest").read_bytes()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return (
            scanner.captured.get("backup_label", b""),
            scanner.captured.get("tablespace_map", b""),
            manifest_bytes,
        )

    def _confirm_wal(self, repos: RepoSet, points: BackupPoints, seg: int) -> None:
        """Every segment from start to stop must be archived in each repository."""
        needed = [
            walnames.segment_name(points.timeline, n, seg)
            for n in range(
                walnames.lsn_segment(points.start_lsn, seg),
                walnames.stop_segment(points.stop_lsn, seg) + 1,
            )
        ]
        deadline = time.monotonic() + self.settings.wal_wait_seconds
        for repo in list(repos.active):
            pending = list(needed)
            while pending:
                try:
                    pending = [
                        n for n in pending if not walarchive.exists(repo, self.target.name, n)
                    ]
                except BackupError as exc:
                    repos.drop(repo.name, str(exc))
                    break
                if not pending:
                    break
                if time.monotonic() > deadline:
                    repos.drop(
                        repo.name,
                        f"repository {repo.name!r}: WAL segment {pending[0]} needed by the backup "
                        f"was not archived within {self.settings.wal_wait_seconds} s "
                        "(is archive_command = 'pgproof wal-push %p'?)",
                    )
                    break
                time.sleep(0.5)
