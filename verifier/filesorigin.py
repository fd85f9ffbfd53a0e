"""The files cron scripts leave (``backups.filesource``), restore-tested like pgproof's own
backups.

Logical: each dump of the chosen run is read out of the source (gunzip'ed here: a truncated
or corrupt ``.gz`` is damage, named), sniffed (custom format or plain SQL, whatever the name
says), and restored as the dump describes its database (``pg_restore --create``; a plain dump
through psql), the globals file first. Physical: ``base.tar[.gz]`` and tablespaces extracted
into the sandbox (members filtered), ``pg_verifybackup`` against the folder's
``backup_manifest``, WAL from ``pg_wal.tar`` and the archive folder (plain or gzip'ed),
continuity and the cluster's system identifier checked before replay. The source is only
read.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from pgproof.backups import catalog, cronfiles, filesource, walarchive, walnames
from pgproof.backups.errors import BackupError, SourceError
from pgproof.backups.filesource import BaseBackup, DamagedFile, DumpFile, DumpSet, Listing
from pgproof.backups.kinds import Kind
from pgproof.backups.runner import Runner
from pgproof.backups.settings import FilesSettings
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.factory import open_repository
from pgproof.verifier import basefiles, physicalchecks
from pgproof.verifier.errors import NoBackup, RestoreFailed
from pgproof.verifier.extract import extract, in_thread
from pgproof.verifier.foreign import described
from pgproof.verifier.job import RestoreJob
from pgproof.verifier.records import CheckResult
from pgproof.verifier.walprefetch import Prefetched, plan

FETCH_WORKERS = 4
HEAD_BYTES = 64 * 1024  # enough of a dump for its header
_TABLESPACE = re.compile(r"^(\d+)\.tar(?:\.gz)?$")


def _compressed(key: str) -> bool:
    return key.endswith(cronfiles.GZIP_SUFFIX)


def _head(repo: Repository, key: str) -> bytes:
    """The first bytes of a file (decompressed); DamagedFile when even those do not read."""
    out = bytearray()
    chunks: Iterator[bytes] = filesource.read_plain(repo, key, _compressed(key))
    try:
        for chunk in chunks:
            out += chunk
            if len(out) >= HEAD_BYTES:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class _DumpHead:
    format: str  # custom | plain | plain-create
    database: str
    server_version: str
    dump_version: str


def _sniff(dump: DumpFile, head: bytes) -> _DumpHead:
    if head.startswith(cronfiles.CUSTOM_MAGIC):
        try:
            h = cronfiles.parse_custom_header(head)
        except cronfiles.NotACustomDump as exc:
            raise DamagedFile(f"{dump.key}: {exc}") from None
        return _DumpHead("custom", h.database or dump.database, h.server_version, h.dump_version)
    if head.startswith(b"PGDMP"):
        raise DamagedFile(f"{dump.key}: unreadable custom-format header")
    text = head.decode("utf-8", "replace")
    if "\0" in text or not text.strip():
        raise DamagedFile(f"{dump.key} is neither a custom-format archive nor a SQL script")
    p = cronfiles.parse_plain_header(text)
    return _DumpHead(
        "plain-create" if p.creates_database else "plain",
        dump.database,
        p.server_version,
        p.dump_version,
    )


class FilesOrigin:
    kind = "files"

    def __init__(self, settings: FilesSettings, runner: Runner):
        self.settings = settings
        self.runner = runner
        self.repo = open_repository(settings.repository)
        self.listing: Listing | None = None
        self.chosen_base: BaseBackup | None = None
        self.chosen_dumps: DumpSet | None = None

    def close(self) -> None:
        self.repo.close()

    @property
    def where(self) -> str:
        return filesource.where(self.settings)

    # --- choosing -------------------------------------------------------------------------

    def choose(self, target: str, kind: Kind, backup_id: str | None) -> catalog.Manifest:
        self.listing = filesource.scan(self.repo, self.settings)
        if kind == "logical":
            sets = [s for s in self.listing.dumps if backup_id in (None, s.id)]
            if not sets:
                what = f"dump set {backup_id}" if backup_id else "dump"
                raise NoBackup(f"no {what} in {self.where}", kind, backup_id)
            self.chosen_dumps = sets[-1]
            return self._logical_manifest(target, sets[-1])
        bases = [b for b in self.listing.base_backups if backup_id in (None, b.id)]
        if not bases:
            what = f"base backup {backup_id}" if backup_id else "base backup"
            raise NoBackup(f"no {what} in {self.where}", kind, backup_id)
        self.chosen_base = bases[-1]
        return self._physical_manifest(target, bases[-1])

    def _logical_manifest(self, target: str, chosen: DumpSet) -> catalog.Manifest:
        heads: list[_DumpHead | None] = []
        for dump in chosen.dumps:
            try:
                heads.append(_sniff(dump, _head(self.repo, dump.key)))
            except DamagedFile:
                heads.append(None)  # fetch_dumps names the damage: a failed restore test
            except BackupError as exc:
                raise SourceError(f"{self.where}: cannot read {dump.key}: {exc}") from None
        versions = [h.server_version for h in heads if h and h.server_version]
        dumpers = [h.dump_version for h in heads if h and h.dump_version]
        server = max(versions, key=cronfiles.major_of, default="")
        major = cronfiles.major_of(server) or _newest_installed(self.runner)
        return catalog.Manifest(
            id=chosen.id,
            kind="logical",
            target=target,
            started_at=catalog.utc_iso(chosen.time),
            finished_at=catalog.utc_iso(chosen.time),
            pgproof_version="",
            repositories=(self.where,),
            wal_segment_size=walnames.DEFAULT_SEGMENT_SIZE,
            data_checksums=False,
            system_identifier="",
            pg_version=server.split(" ")[0] or str(major),
            pg_version_num=major * 10000,
            compression="gzip" if any(d.gzip for d in chosen.dumps) else "none",
            files=(),
            tools={"pg_dump": max(dumpers, key=cronfiles.major_of, default=str(major))},
            extra={
                "source": self.where,
                "time_from": chosen.time_source,
                "files": [d.key for d in chosen.dumps]
                + ([chosen.globals.key] if chosen.globals else []),
                "stored_bytes": chosen.size,
            },
        )

    def _physical_manifest(self, target: str, chosen: BaseBackup) -> catalog.Manifest:
        assert self.listing is not None
        if chosen.base is None:
            raise NoBackup(f"base backup {chosen.id} has no base.tar", "physical", chosen.id)
        label: cronfiles.BackupLabel | None = None
        major, start_wal, timeline = 0, "", 1
        try:
            major, label = filesource.read_label(
                self.repo, chosen, self.listing, ZoneInfo(self.settings.timezone)
            )
            start_wal, timeline = label.start_segment, label.timeline
        except DamagedFile:
            pass  # fetch names the damage: a failed restore test
        except BackupError as exc:
            raise SourceError(f"{self.where}: {exc}") from None
        # the backup's own start (backup_label) and end (its files' newest mtime: the last
        # one is written when it ends) bound the PITR window, not the folder's name
        started = label.started if label and label.started else chosen.time
        newest = dt.datetime.fromtimestamp(max(f.mtime for f in chosen.files.values()), dt.UTC)
        finished = max(started, newest)
        seg = walnames.DEFAULT_SEGMENT_SIZE
        wal_range = chosen.wal_range
        start_lsn = wal_range.start_lsn if wal_range else None
        stop_lsn = wal_range.stop_lsn if wal_range else None
        if start_lsn is None and start_wal:
            first = walnames.parse_segment_name(start_wal, seg)[1] * seg
            start_lsn = stop_lsn = walnames.format_lsn(first)
        stop_wal = (
            walnames.segment_name(
                timeline, walnames.stop_segment(walnames.parse_lsn(stop_lsn), seg), seg
            )
            if stop_lsn
            else None
        )
        major = major or _newest_installed(self.runner)  # a damaged label: fetch names it
        return catalog.Manifest(
            id=chosen.id,
            kind="physical",
            target=target,
            started_at=catalog.utc_iso(started),
            finished_at=catalog.utc_iso(finished),
            pgproof_version="",
            repositories=(self.where,),
            wal_segment_size=walnames.DEFAULT_SEGMENT_SIZE,  # pg_controldata says, once restored
            data_checksums=False,
            system_identifier=chosen.system_identifier or "",
            pg_version=str(major),
            pg_version_num=major * 10000,
            compression="gzip" if _compressed(chosen.base) else "none",
            files=(),
            tools={"pg_basebackup": str(major)},
            start_lsn=start_lsn,
            stop_lsn=stop_lsn,
            timeline=timeline,
            start_wal=start_wal or None,
            stop_wal=stop_wal,
            extra={
                "source": self.where,
                "time_from": "backup_label" if label and label.started else chosen.time_source,
                "listed_time_from": chosen.time_source,
                "folder": chosen.prefix,
                "files": sorted(f.key for f in chosen.files.values()),
                "stored_bytes": chosen.size,
                "unreadable_label": not start_wal,
            },
        )

    # --- logical --------------------------------------------------------------------------

    def fetch_dumps(self, job: RestoreJob) -> tuple[catalog.Manifest, Path, int]:
        chosen = self.chosen_dumps
        assert chosen is not None
        folder = job.sandbox.work_dir / "backup"
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        dumps = []
        files = []
        for i, dump in enumerate(chosen.dumps):
            local = folder / f"{i:03d}.dump"
            total += self._copy(dump.key, local)
            with local.open("rb") as fh:
                head = _sniff(dump, fh.read(HEAD_BYTES))
            name = f"{i:03d}.{'dump' if head.format == 'custom' else 'sql'}"
            local.rename(folder / name)
            dumps.append(catalog.DatabaseDump(head.database, name, head.format))
            size = (folder / name).stat().st_size
            files.append(catalog.BackupFile(name, size, "", "database", database=head.database))
        if chosen.globals is not None:
            total += self._copy(chosen.globals.key, folder / "globals.sql")
            files.append(catalog.BackupFile("globals.sql", 0, "", "globals"))
        names = [d.name for d in dumps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SourceError(
                f"{self.where}: dump set {chosen.id} holds several dumps of database "
                f"{twice[0]}: name the files so that each run has one per database"
            )
        owner = job.runner.postgres_identity()
        if owner is not None:
            basefiles.chown_tree(folder, owner.uid, owner.gid)
        manifest = dataclasses.replace(job.manifest, databases=tuple(dumps), files=tuple(files))
        return manifest, folder, total

    def _copy(self, key: str, dest: Path) -> int:
        """A file of the source, decompressed; returns the bytes read from the source."""
        stored = 0

        def counted() -> Iterator[bytes]:
            nonlocal stored
            for chunk in self.repo.read(key):
                stored += len(chunk)
                yield chunk

        chunks = filesource.gunzipped(counted(), key) if _compressed(key) else counted()
        try:
            with dest.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
        except DamagedFile as exc:
            raise RestoreFailed(str(exc)) from None
        except BackupError as exc:
            raise SourceError(f"{self.where}: cannot read {key}: {exc}") from None
        return stored

    # --- physical -------------------------------------------------------------------------

    def fetch(self, job: RestoreJob) -> tuple[catalog.Manifest, Prefetched | None]:
        chosen, listing = self.chosen_base, self.listing
        assert chosen is not None and chosen.base is not None and listing is not None
        manifest, sandbox = job.manifest, job.sandbox
        if manifest.extra.get("unreadable_label"):
            key = chosen.files[chosen.base].key
            self._extract(key, sandbox.data_dir)  # names the damage if that is the cause
            raise RestoreFailed(f"{key} has no readable backup_label: not a base backup")
        self._extract(chosen.files[chosen.base].key, sandbox.data_dir)
        size = chosen.files[chosen.base].size
        size += self._tablespaces(job, chosen)
        if "backup_manifest" in chosen.files:
            self._copy(chosen.files["backup_manifest"].key, sandbox.data_dir / "backup_manifest")
        carried = sandbox.work_dir / "pg_wal_of_backup"
        wal_tar = next((n for n in chosen.files if n.startswith("pg_wal.tar")), None)
        if wal_tar is not None:
            self._extract(chosen.files[wal_tar].key, carried)
            size += chosen.files[wal_tar].size
        owner = job.runner.postgres_identity()
        if owner is not None:
            basefiles.chown_tree(sandbox.data_dir, owner.uid, owner.gid)
            if basefiles.tablespace_root(sandbox).exists():
                basefiles.chown_tree(basefiles.tablespace_root(sandbox), owner.uid, owner.gid)
        manifest = described(job, manifest)
        wal = self._wal(job, manifest, listing, carried)
        job.findings.bytes_restored = size + wal.bytes
        return manifest, wal

    def _extract(self, key: str, dest: Path) -> None:
        chunks = filesource.read_plain(self.repo, key, _compressed(key))
        try:
            extract(in_thread(chunks), dest)
        except DamagedFile as exc:
            raise RestoreFailed(str(exc)) from None
        except RestoreFailed as exc:
            raise RestoreFailed(f"{key}: {exc}") from None
        except BackupError as exc:
            raise SourceError(f"{self.where}: cannot read {key}: {exc}") from None

    def _tablespaces(self, job: RestoreJob, chosen: BaseBackup) -> int:
        """``<oid>.tar[.gz]`` extracted inside the sandbox and linked from pg_tblspc."""
        size = 0
        for name, info in sorted(chosen.files.items()):
            match = _TABLESPACE.match(name)
            if not match:
                continue
            dest = basefiles.tablespace_root(job.sandbox) / match.group(1)
            dest.parent.mkdir(mode=0o700, exist_ok=True)
            self._extract(info.key, dest)
            link = job.sandbox.data_dir / "pg_tblspc" / match.group(1)
            link.parent.mkdir(mode=0o700, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(dest)
            size += info.size
        return size

    def _wal(
        self, job: RestoreJob, manifest: catalog.Manifest, listing: Listing, carried: Path
    ) -> Prefetched:
        """The archive's segments (and those the backup carries in pg_wal.tar, for what the
        archive lacks) from the backup's start along the timeline path: a gap fails by name
        before replay, as a segment of another cluster does."""
        seg = manifest.wal_segment_size
        archive = (
            filesource.wal_listing(self.repo.listing(self.settings.wal), self.settings.wal, seg)
            if seg != walnames.DEFAULT_SEGMENT_SIZE
            else listing.wal
        )
        local: dict[str, Path] = {}
        if carried.is_dir():
            for path in carried.rglob("*"):
                try:
                    if path.is_file() and walnames.classify(path.name) in (
                        walnames.WalKind.SEGMENT,
                        walnames.WalKind.HISTORY,
                    ):
                        local[path.name] = path
                except ValueError:
                    continue
        segments = dict(archive.segments)
        histories_keys = dict(archive.histories)
        for name in local:
            if walnames.classify(name) is walnames.WalKind.SEGMENT:
                segments.setdefault(walnames.parse_segment_name(name, seg), f"local:{name}")
            else:
                histories_keys.setdefault(walnames.timeline_of(name), f"local:{name}")
        merged = walarchive.ArchiveListing(segments, histories_keys, [], None)
        directory = job.sandbox.work_dir / "wal"
        directory.mkdir(parents=True, exist_ok=True)

        def get(key: str, dest: Path) -> int:
            if key.startswith("local:"):
                os.replace(local[key[len("local:") :]], dest)
                return dest.stat().st_size
            self._copy(key, dest)
            return dest.stat().st_size

        histories = {}
        for tli, key in histories_keys.items():
            name = walnames.history_name(tli)
            get(key, directory / name)
            try:
                histories[tli] = walnames.parse_history((directory / name).read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise RestoreFailed(f"timeline history {name} is unreadable: {exc}") from None
        names, last = plan(merged, histories, manifest)
        sysid = int(manifest.system_identifier)

        def fetch_one(name: str) -> int:
            dest = directory / name
            size = get(segments[walnames.parse_segment_name(name, seg)], dest)
            with dest.open("rb") as fh:
                try:
                    header = walnames.parse_segment_header(fh.read(8192))
                except ValueError as exc:
                    raise RestoreFailed(f"WAL segment {name}: {exc}") from None
            if header.system_identifier != sysid:
                raise RestoreFailed(
                    f"WAL segment {name} belongs to another cluster (system identifier "
                    f"{header.system_identifier}, the backup's is {sysid})"
                )
            return size

        with concurrent.futures.ThreadPoolExecutor(FETCH_WORKERS) as pool:
            sizes = list(pool.map(fetch_one, names))
        owner = job.runner.postgres_identity()
        if owner is not None:
            basefiles.chown_tree(directory, owner.uid, owner.gid)
        return Prefetched(
            directory,
            names,
            [walnames.history_name(t) for t in sorted(histories)],
            last,
            sum(sizes),
        )

    def integrity(self, job: RestoreJob, wal_included: bool) -> CheckResult:
        """pg_verifybackup against the folder's backup_manifest (pg_basebackup writes one
        unless told ``--no-manifest``: then the check does not apply, and says so)."""
        if not (job.sandbox.data_dir / "backup_manifest").exists():
            return CheckResult(
                "verifybackup",
                "passed",
                "not applicable: the base backup has no backup_manifest (pg_basebackup "
                "--no-manifest); WAL replay and the checks below judge its files",
                {"applicable": False},
            )
        return physicalchecks.verifybackup(job.sandbox, False)


def _newest_installed(runner: Runner) -> int:
    from pgproof.backups import pgbin

    majors = pgbin.installed_majors()
    return max(majors) if majors else 15
