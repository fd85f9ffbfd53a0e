"""Physical backups: pg_basebackup's tar stream, compressed and stored while it arrives.

pg_basebackup writes ``base.tar`` (with its ``backup_manifest`` injected, so the backup is
pg_verifybackup-compatible) to a pipe; pgproof reads it once: a tar scanner keeps
``backup_label`` and ``backup_manifest`` (start/stop LSN, timeline), zstd compresses it on
all cores, and every repository receives the same bytes. WAL comes from the archive
(``-X none``, the server waits until the backup's WAL is archived, then pgproof confirms the
segments are in every repository); a source without archiving gets ``-X fetch`` instead.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from backups import catalog, compression, pgbin, walarchive, walnames
from backups.errors import BackupError, BackupFailed, BinaryNotFound, CatalogError
from backups.fanout import fan_out
from backups.jobs import BackupOutcome, RepoSet, commit, read_pipe, remove_partial
from backups.progress import NullProgress, Progress, counted
from backups.runner import Runner
from backups.settings import TargetSettings
from backups.source import Source, SourceInfo
from backups.storage.base import Repository
from backups.tarscan import TarScanner

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


class PhysicalBackup:
    def __init__(
        self,
        target: TargetSettings,
        repos: Sequence[Repository],
        runner: Runner,
        pgproof_version: str,
        progress: Progress | None = None,
    ):
        self.target = target
        self.repos = list(repos)
        self.source = Source(target.source, runner)
        self.runner = self.source.runner
        self.version = pgproof_version
        self.progress = progress or NullProgress()
        self.settings = target.physical

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

    def _refuse_extra_tablespaces(self) -> None:
        with self.source.connect() as conn, self.source.errors("listing tablespaces"):
            rows = conn.execute(
                "select spcname from pg_tablespace where spcname not in ('pg_default', 'pg_global')"
            ).fetchall()
        if rows:
            names = ", ".join(str(r[0]) for r in rows)
            raise BackupFailed(
                f"the source has tablespaces outside the data directory ({names}); pgproof "
                "streams pg_basebackup's single tar and cannot back them up yet: use logical "
                "backups for this target"
            )

    def run(self) -> BackupOutcome:
        info = self.source.info()
        self._refuse_extra_tablespaces()
        bins = self._binaries(info)
        method, level = compression.parse_method(self.settings.compression)
        started = dt.datetime.now(dt.UTC)
        backup_id = catalog.new_backup_id("physical", started)
        prefix = catalog.backup_prefix(self.target.name, backup_id)
        repos = RepoSet(list(self.repos))
        wal_mode = "none" if info.archive_mode != "off" else "fetch"
        argv = [
            bins.path("pg_basebackup"),
            f"--dbname={self.source.conninfo()}",
            "--pgdata=-",
            "--format=tar",
            f"--wal-method={wal_mode}",
            f"--checkpoint={self.settings.checkpoint}",
            f"--label=pgproof {backup_id}",
            "--compress=none",
        ]
        if self.settings.max_rate:
            argv.append(f"--max-rate={self.settings.max_rate}")
        scanner = TarScanner({"backup_label", "backup_manifest"})
        data_name = "base.tar.zst" if method == "zstd" else "base.tar"
        try:
            self.progress.start("base backup", self._size_hint())
            with (
                self.source.libpq_env() as env,
                self.runner.stream(
                    argv, env=env, timeout=self.settings.timeout_seconds, as_postgres=True
                ) as cmd,
            ):
                # After the data, the server waits until the backup's WAL is archived before it
                # sends backup_manifest: with archiving broken it would wait for ever.
                seen = cmd.watch_stall(
                    self.settings.wal_wait_seconds,
                    f"sent nothing for {self.settings.wal_wait_seconds} s: the server is "
                    "probably waiting for the backup's WAL to be archived (is archive_command "
                    "failing? see the server log)",
                )
                raw = _scanned(_seen(counted(read_pipe(cmd.stdout), self.progress), seen), scanner)
                threads = self.settings.compression_threads or -1
                stream = (
                    compression.zstd_compress(raw, level or 3, threads) if method == "zstd" else raw
                )
                result = fan_out(repos.active, prefix + data_name, stream)
            self.progress.done()
            repos.absorb(result)
            if not scanner.finished or "backup_manifest" not in scanner.captured:
                raise BackupFailed("pg_basebackup's tar stream ended without backup_manifest")
            points = parse_points(
                scanner.captured.get("backup_label", b""), scanner.captured["backup_manifest"]
            )
            manifest_bytes = scanner.captured["backup_manifest"]
            side = fan_out(repos.active, prefix + "backup_manifest", [manifest_bytes])
            repos.absorb(side)
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
                compression="none" if method == "none" else f"zstd:{level or 3}",
                files=(
                    catalog.BackupFile(
                        data_name,
                        result.size,
                        result.sha256,
                        "base",
                        "none" if method == "none" else f"zstd:{level or 3}",
                    ),
                    catalog.BackupFile(
                        "backup_manifest", side.size, side.sha256, "backup_manifest"
                    ),
                ),
                tools={"pg_basebackup": bins.version},
                superuser=info.superuser,
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
                extra={"backup_label_start_time": points.start_time},
            )
            return commit(self.repos, repos, manifest)
        except BaseException:
            remove_partial(self.repos, self.target.name, backup_id)
            raise

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
