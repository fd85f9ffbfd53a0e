"""The backups cron scripts leave, listed from a directory or an S3 prefix (a repository
opened only to be read: pgproof never writes there).

Three folders (``source:`` names them; defaults ``dumps/``, ``base/``, ``wal/``):

- dumps: custom-format (``.dump``, ``.backup``...) and plain (``.sql``) dumps, gzip'ed or not,
  and the ``pg_dumpall --globals-only`` file. Dumps whose names carry the same timestamp are
  one logical backup (one run of the script); a dump whose name has no timestamp is a backup
  of its own, timed by its mtime. Each backup takes the newest globals file not newer than it.
- base backups: one folder per ``pg_basebackup -Ft [-z]`` run (``base.tar[.gz]``,
  ``pg_wal.tar[.gz]``, ``<oid>.tar[.gz]`` tablespaces, ``backup_manifest``); its time from
  the folder's name, else from its newest file's mtime.
- WAL: segments and timeline history files as ``archive_command = 'cp %p ...'`` left them,
  plain or gzip'ed (``<name>.gz``).

``scan`` is the one reader; ``health`` is ``pgproof check`` of such a source.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from pgproof.backups import cronfiles, walarchive, walnames
from pgproof.backups.catalog import utc_iso
from pgproof.backups.errors import BackupError, SourceError
from pgproof.backups.health import HealthReport, RepoReport
from pgproof.backups.settings import FilesSettings
from pgproof.backups.storage.base import ObjectInfo, Repository
from pgproof.backups.storage.factory import opened
from pgproof.backups.tarscan import TarError, TarScanner

TimeSource = Literal["name", "mtime"]
BASE_NAMES = ("base.tar", "base.tar.gz")


def where(settings: FilesSettings) -> str:
    """The name such a source goes by in records, metrics and messages: ``files:<repo>``."""
    return f"files:{settings.repository.name}"


@dataclass(frozen=True)
class DumpFile:
    key: str
    name: str
    size: int
    mtime: float
    kind: cronfiles.DumpKind
    gzip: bool
    database: str  # from the name (a custom dump's header has the final word)


@dataclass(frozen=True)
class DumpSet:
    """One logical backup: the dumps of one run of the script."""

    id: str
    time: dt.datetime
    time_source: TimeSource
    dumps: tuple[DumpFile, ...]
    globals: DumpFile | None

    @property
    def size(self) -> int:
        return sum(d.size for d in self.dumps) + (self.globals.size if self.globals else 0)


@dataclass(frozen=True)
class BaseBackup:
    """One ``pg_basebackup -Ft`` folder."""

    id: str
    prefix: str
    time: dt.datetime
    time_source: TimeSource
    files: dict[str, ObjectInfo]  # name in the folder -> listing
    wal_range: cronfiles.WalRange | None  # from backup_manifest (None: none readable)
    system_identifier: str | None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def base(self) -> str | None:
        return next((n for n in BASE_NAMES if n in self.files), None)


@dataclass(frozen=True)
class Listing:
    dumps: tuple[DumpSet, ...]  # oldest first
    base_backups: tuple[BaseBackup, ...]  # oldest first
    wal: walarchive.ArchiveListing  # keys are the archive's own (plain or .gz)
    # base backup folders without a base archive (an interrupted pg_basebackup?)
    incomplete: list[str] = field(default_factory=list)


def _stamp_or_mtime(name: str, mtime: float, zone: ZoneInfo) -> tuple[dt.datetime, TimeSource]:
    found = cronfiles.stamp_of(name, zone)
    if found is not None:
        return found, "name"
    return dt.datetime.fromtimestamp(mtime, dt.UTC), "mtime"


def _dump_sets(
    settings: FilesSettings, infos: Iterable[ObjectInfo], zone: ZoneInfo
) -> list[DumpSet]:
    prefix = settings.dumps
    groups: dict[str, list[DumpFile]] = {}
    times: dict[str, tuple[dt.datetime, TimeSource]] = {}
    globals_files: list[tuple[dt.datetime, DumpFile]] = []
    for info in infos:
        rel = info.key[len(prefix) :]
        name = rel.rsplit("/", 1)[-1]
        kind = cronfiles.dump_kind(name, settings.globals_pattern)
        if kind is None:
            continue
        found = cronfiles.stem_of(name)
        assert found is not None
        dump = DumpFile(
            info.key, name, info.size, info.mtime, kind, found[1], cronfiles.database_of(name)
        )
        moment, source = _stamp_or_mtime(name, info.mtime, zone)
        if kind == "globals":
            globals_files.append((moment, dump))
            continue
        group = (
            f"logical-{moment.strftime('%Y%m%dT%H%M%SZ')}"
            if source == "name"
            else f"logical-{found[0]}"
        )
        if group in groups and source == "mtime":
            group = f"logical-{rel}"  # two files of the same stem in different folders
        groups.setdefault(group, []).append(dump)
        previous = times.get(group)
        times[group] = (moment, source) if previous is None else max(previous, (moment, source))
    globals_files.sort(key=lambda g: g[0])
    sets = []
    for group, dumps in groups.items():
        moment, source = times[group]
        chosen = None
        for when, g in globals_files:
            if when <= moment + dt.timedelta(minutes=1):  # written just before or with them
                chosen = g
        sets.append(
            DumpSet(group, moment, source, tuple(sorted(dumps, key=lambda d: d.key)), chosen)
        )
    return sorted(sets, key=lambda s: (s.time, s.id))


def _base_backups(
    repo: Repository, settings: FilesSettings, infos: Iterable[ObjectInfo], zone: ZoneInfo
) -> tuple[list[BaseBackup], list[str]]:
    prefix = settings.base_backups
    folders: dict[str, dict[str, ObjectInfo]] = {}
    incomplete = []
    for info in infos:
        rel = info.key[len(prefix) :]
        folder, _, name = rel.rpartition("/")
        if folder and "/" not in folder:  # files beside the folders are not backups
            folders.setdefault(folder, {})[name] = info
    found = []
    for folder, files in folders.items():
        if not any(n in files for n in BASE_NAMES):
            incomplete.append(folder)
            continue
        newest = max(f.mtime for f in files.values())
        moment, source = _stamp_or_mtime(folder, newest, zone)
        wal_range, sysid = None, None
        if "backup_manifest" in files:
            try:
                wal_range, sysid = cronfiles.parse_backup_manifest(
                    repo.read_bytes(files["backup_manifest"].key)
                )
            except ValueError:
                pass  # the restore test says so (it needs the manifest to check the files)
        found.append(
            BaseBackup(folder, prefix + folder + "/", moment, source, files, wal_range, sysid)
        )
    return sorted(found, key=lambda b: (b.time, b.id)), sorted(incomplete)


def wal_listing(
    infos: Iterable[ObjectInfo], prefix: str, segment_size: int
) -> walarchive.ArchiveListing:
    """The archive as ``cp %p`` (and maybe gzip) left it: ``<name>`` or ``<name>.gz``."""
    return walarchive.listing_of(infos, prefix, segment_size, (cronfiles.GZIP_SUFFIX,))


def scan(
    repo: Repository, settings: FilesSettings, segment_size: int = walnames.DEFAULT_SEGMENT_SIZE
) -> Listing:
    """Everything the source holds, as the layout explains it (nothing is read but listings
    and each base backup's ``backup_manifest``)."""
    zone = ZoneInfo(settings.timezone)
    try:
        dumps = _dump_sets(settings, repo.listing(settings.dumps), zone)
        bases, incomplete = _base_backups(
            repo, settings, list(repo.listing(settings.base_backups)), zone
        )
        wal = wal_listing(repo.listing(settings.wal), settings.wal, segment_size)
    except BackupError as exc:
        raise SourceError(f"{where(settings)}: cannot list {repo.describe()}: {exc}") from None
    return Listing(tuple(dumps), tuple(bases), wal, incomplete)


def gunzipped(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """The bytes of a gzip stream (several members allowed, as ``cat a.gz b.gz`` makes);
    ``DamagedFile`` naming ``what`` when it is empty, cut short or its CRC does not match."""
    inflater = zlib.decompressobj(wbits=31)
    pending = False  # a member has started and not ended
    seen = False
    for chunk in chunks:
        while chunk:
            pending = seen = True
            try:
                out = inflater.decompress(chunk)
            except zlib.error as exc:
                raise DamagedFile(f"{what} does not decompress: {exc}") from None
            if out:
                yield out
            if not inflater.eof:
                break
            pending = False
            chunk = inflater.unused_data
            inflater = zlib.decompressobj(wbits=31)
    if pending:
        raise DamagedFile(f"{what} is truncated (the gzip stream ends before its end mark)")
    if not seen:
        raise DamagedFile(f"{what} is empty")


class DamagedFile(SourceError):
    """A file of the source whose bytes are evidence of damage (truncated, bad CRC)."""


def read_plain(repo: Repository, key: str, compressed: bool) -> Iterator[bytes]:
    chunks = repo.read(key)
    return gunzipped(chunks, key) if compressed else chunks


def head_of_tar(repo: Repository, key: str, wanted: set[str], compressed: bool) -> dict[str, bytes]:
    """The wanted members of a tar (stops reading once all are found)."""
    scanner = TarScanner(wanted, max_member=1 << 20)
    try:
        for chunk in read_plain(repo, key, compressed):
            scanner.feed(chunk)
            if wanted <= scanner.captured.keys() or scanner.finished:
                break
    except TarError as exc:
        raise DamagedFile(f"{key} is not a readable tar archive: {exc}") from None
    return scanner.captured


def read_label(
    repo: Repository, backup: BaseBackup, listing: Listing, zone: ZoneInfo
) -> tuple[int, cronfiles.BackupLabel]:
    """The release and ``backup_label`` of a base backup: the label is the base archive's
    first member; the release is read from the first page of the backup's start segment in
    the archive (cheap), else from ``PG_VERSION`` in the base archive."""
    base = backup.base
    assert base is not None
    compressed = base.endswith(cronfiles.GZIP_SUFFIX)
    key = backup.files[base].key
    head = head_of_tar(repo, key, {"backup_label"}, compressed)
    if "backup_label" not in head:
        raise DamagedFile(f"{key} has no backup_label: not a pg_basebackup archive")
    try:
        label = cronfiles.parse_backup_label(head["backup_label"].decode(), zone)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{key}: {exc}") from None
    seg = walnames.DEFAULT_SEGMENT_SIZE
    seg_key = listing.wal.segments.get(walnames.parse_segment_name(label.start_segment, seg))
    if seg_key is not None:
        try:
            first = next(iter(read_plain(repo, seg_key, seg_key.endswith(".gz"))), b"")
        except BackupError:
            first = b""
        major = walnames.major_of_segment(first)
        if major is not None:
            return major, label
    version = head_of_tar(repo, key, {"PG_VERSION"}, compressed).get("PG_VERSION", b"")
    major = cronfiles.major_of(version.decode(errors="replace").strip())
    if not major:
        raise DamagedFile(f"{key} has no PG_VERSION: not a data directory's archive")
    return major, label


def health(
    settings: FilesSettings,
    target: str,
    max_backup_age_seconds: float,
    now: dt.datetime | None = None,
    verify: bool = True,
) -> HealthReport:
    """``pgproof check`` of a files source, without restoring: what it holds, the newest
    backup's age, each base backup's WAL in the archive (from its manifest's range to the
    newest segment, gaps named) and, with ``verify``, every gzip'ed file read to its end
    (truncation and CRC) and every base backup's files against its backup_manifest's list."""
    now = now or dt.datetime.now(dt.UTC)
    named = where(settings)
    report = RepoReport(named, "")
    problems: list[str] = []
    try:
        with opened([settings.repository], quick=True) as repos:
            repo = repos[0]
            report.location = repo.describe()
            listing = scan(repo, settings)
            if verify:
                problems += _read_through(repo, listing)
    except BackupError as exc:
        report.reachable = False
        return HealthReport(target, [report], [f"{named}: {exc}"], utc_iso(now))
    report.incomplete = [f"{settings.base_backups}{f}" for f in listing.incomplete]
    for s in listing.dumps:
        report.backups.append(
            {
                "id": s.id,
                "kind": "logical",
                "state": "complete",
                "size_bytes": s.size,
                "started_at": utc_iso(s.time),
                "finished_at": utc_iso(s.time),
                "time_from": s.time_source,
                "databases": [d.database for d in s.dumps],
                "files": [d.key for d in s.dumps] + ([s.globals.key] if s.globals else []),
            }
        )
    for b in listing.base_backups:
        row: dict[str, object] = {
            "id": b.id,
            "kind": "physical",
            "state": "complete",
            "size_bytes": b.size,
            "started_at": utc_iso(b.time),
            "finished_at": utc_iso(b.time),
            "time_from": b.time_source,
        }
        if b.wal_range is not None:
            seg = walnames.DEFAULT_SEGMENT_SIZE
            start = walnames.parse_lsn(b.wal_range.start_lsn)
            stop = walnames.parse_lsn(b.wal_range.stop_lsn)
            row["start_wal"] = walnames.segment_name(b.wal_range.timeline, start // seg, seg)
            row["stop_wal"] = walnames.segment_name(
                b.wal_range.timeline, walnames.stop_segment(stop, seg), seg
            )
        elif "backup_manifest" in b.files:  # absent: made with --no-manifest, nothing to say
            problems.append(f"{named}: base backup {b.id}: its backup_manifest does not read")
        report.backups.append(row)
        problems += _wal_problems(named, b, row, listing)
    if listing.wal.segments:
        names = sorted(k.rsplit("/", 1)[-1][:24] for k in listing.wal.segments.values())
        report.wal = {"first": names[0], "last": names[-1], "segments": len(names)}
    everything = [(s.time, s.id) for s in listing.dumps] + [
        (b.time, b.id) for b in listing.base_backups
    ]
    if not everything:
        problems.append(
            f"{named}: no backup (dumps in {settings.dumps or '/'}, base backups in "
            f"{settings.base_backups or '/'})"
        )
    else:
        moment, newest = max(everything)
        age = (now - moment).total_seconds()
        if age > max_backup_age_seconds:
            problems.append(
                f"{named}: the newest backup {newest} is {age / 3600:.1f} h old "
                f"(limit {max_backup_age_seconds / 3600:.1f} h)"
            )
    report.problems = problems
    return HealthReport(target, [report], problems, utc_iso(now))


def _wal_problems(
    named: str, backup: BaseBackup, row: dict[str, object], listing: Listing
) -> list[str]:
    """A base backup without ``pg_wal.tar`` needs its WAL in the archive; with it, it is
    consistent alone and the archive only takes it further (a gap there is still named)."""
    start, stop = row.get("start_wal"), row.get("stop_wal")
    if not isinstance(start, str) or not isinstance(stop, str):
        return []
    seg = walnames.DEFAULT_SEGMENT_SIZE
    carries_wal = any(n.startswith("pg_wal.tar") for n in backup.files)
    report = walnames.check_continuity(
        set(listing.wal.segments), {}, walnames.parse_segment_name(start, seg), seg
    )
    problems = []
    if report.missing and not carries_wal:
        problems.append(
            f"{named}: base backup {backup.id}: WAL segment {report.missing[0]} is missing "
            f"from the archive ({len(report.missing)} missing)"
        )
    last = report.last
    if not carries_wal and not walnames.archive_reaches(last, stop, seg):
        problems.append(
            f"{named}: base backup {backup.id}: its WAL up to {stop} is not archived "
            f"(the archive ends at {last or 'nothing'}) and it has no pg_wal.tar"
        )
    return problems


def _read_through(repo: Repository, listing: Listing) -> list[str]:
    """Every gzip'ed file decompressed to its end; every file a backup_manifest lists for the
    archives present."""
    problems = []
    keys = [d.key for s in listing.dumps for d in s.dumps]
    keys += sorted({s.globals.key for s in listing.dumps if s.globals})
    keys += [f.key for b in listing.base_backups for f in b.files.values()]
    keys += list(listing.wal.segments.values())
    for key in keys:
        if not key.endswith(cronfiles.GZIP_SUFFIX):
            continue
        try:
            for _ in gunzipped(repo.read(key), key):
                pass
        except DamagedFile as exc:
            problems.append(str(exc))
    return problems
