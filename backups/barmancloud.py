"""Backups ``barman-cloud-backup`` and ``barman-cloud-wal-archive`` keep in an object store
(the layout CloudNativePG's Barman Cloud plugin writes): ``<prefix>/<server>/base/<id>/``
(``backup.info``, ``data.tar[.gz]``, ``<oid>.tar``) and ``<prefix>/<server>/wals/``.

pgproof reads them with barman-cloud's own tools: ``barman-cloud-backup-list --format json``
for the backups, ``barman-cloud-restore`` for the files, ``barman-cloud-wal-restore`` for
each segment, the same path production would restore with. The WAL folder is listed with a
read-only S3 listing (barman-cloud has no command that lists it) so that a gap is named
before replay. Credentials reach the tools through their environment (``AWS_*``), never argv.
``parse_backups`` is pure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgproof.backups import walarchive, walnames
from pgproof.backups.catalog import utc_iso
from pgproof.backups.errors import BackupError, CommandError, SourceError
from pgproof.backups.health import HealthReport, RepoReport
from pgproof.backups.runner import Runner
from pgproof.backups.settings import BarmanCloudSettings
from pgproof.backups.storage.factory import opened

LIST = "barman-cloud-backup-list"
RESTORE = "barman-cloud-restore"
WAL_RESTORE = "barman-cloud-wal-restore"


@dataclass(frozen=True)
class Tablespace:
    name: str
    oid: int
    location: str


@dataclass(frozen=True)
class BarmanBackup:
    id: str
    status: str  # DONE | FAILED | STARTED ...
    started: dt.datetime
    finished: dt.datetime
    begin_wal: str | None
    end_wal: str | None
    begin_lsn: str | None
    end_lsn: str | None
    timeline: int
    system_identifier: str
    version: int  # server_version_num
    segment_size: int
    size: int  # the cluster's size at the backup (barman-cloud lists no stored size)
    data_checksums: bool
    tablespaces: tuple[Tablespace, ...]
    error: str | None


def _time(doc: Mapping[str, Any], key: str) -> dt.datetime:
    text = doc.get(f"{key}_iso")
    if isinstance(text, str):
        moment = dt.datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    raw = doc.get(key)
    if isinstance(raw, str):  # "Sun Nov 29 19:19:50 2026" (local time of the backing host)
        return dt.datetime.strptime(raw, "%a %b %d %H:%M:%S %Y").replace(tzinfo=dt.UTC)
    raise ValueError(f"no {key}")


def _backup(doc: Mapping[str, Any]) -> BarmanBackup:
    spaces = tuple(
        Tablespace(str(t[0]), int(t[1]), str(t[2]))
        if isinstance(t, list)
        else Tablespace(str(t["name"]), int(t["oid"]), str(t["location"]))
        for t in doc.get("tablespaces") or ()
    )
    return BarmanBackup(
        id=str(doc["backup_id"]),
        status=str(doc.get("status") or ""),
        started=_time(doc, "begin_time"),
        finished=_time(doc, "end_time"),
        begin_wal=doc.get("begin_wal"),
        end_wal=doc.get("end_wal"),
        begin_lsn=doc.get("begin_xlog"),
        end_lsn=doc.get("end_xlog"),
        timeline=int(doc.get("timeline") or 1),
        system_identifier=str(doc.get("systemid") or ""),
        version=int(doc.get("version") or 0),
        segment_size=int(doc.get("xlog_segment_size") or walnames.DEFAULT_SEGMENT_SIZE),
        size=int(doc.get("cluster_size") or doc.get("size") or 0),
        data_checksums=doc.get("data_checksums") == "on",
        tablespaces=spaces,
        error=doc.get("error") or None,
    )


def parse_backups(raw: object) -> list[BarmanBackup]:
    """``barman-cloud-backup-list --format json``, oldest first; ValueError when it is not
    what barman-cloud prints."""
    if not isinstance(raw, dict) or not isinstance(raw.get("backups_list"), list):
        raise ValueError("no backups_list in barman-cloud-backup-list's output")
    try:
        found = [_backup(b) for b in raw["backups_list"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"a backup barman-cloud lists is not understood: {exc!r}") from None
    return sorted(found, key=lambda b: (b.finished, b.id))


def where(settings: BarmanCloudSettings) -> str:
    """``barman-cloud:<server>``, the name records and metrics use."""
    return f"barman-cloud:{settings.server}"


def destination(settings: BarmanCloudSettings) -> str:
    o = settings.repository.options
    return f"s3://{o.bucket}/{o.prefix}".rstrip("/")


class BarmanCloud:
    """barman-cloud's commands as pgproof runs them (read-only ones only)."""

    def __init__(self, settings: BarmanCloudSettings, runner: Runner):
        self.settings = settings
        self.runner = runner

    def program(self, name: str) -> str:
        if self.settings.bin_dir:
            return os.path.join(self.settings.bin_dir, name)
        return name

    def argv(self, name: str, *params: str) -> list[str]:
        o = self.settings.repository.options
        out = [self.program(name), "--cloud-provider=aws-s3"]
        if o.endpoint_url:
            out.append(f"--endpoint-url={o.endpoint_url}")
        if o.profile:
            out.append(f"--aws-profile={o.profile}")
        return [*out, *params]

    def env(self) -> dict[str, str]:
        """Credentials and region for boto3 inside the tools (never in argv)."""
        repo = self.settings.repository
        env: dict[str, str] = {}
        if repo.options.region:
            env["AWS_DEFAULT_REGION"] = repo.options.region
        for ours, theirs in (
            (repo.access_key_id_env, "AWS_ACCESS_KEY_ID"),
            (repo.secret_access_key_env, "AWS_SECRET_ACCESS_KEY"),
        ):
            if ours:
                value = os.environ.get(ours)
                if not value:
                    raise SourceError(
                        f"{where(self.settings)}: environment variable {ours} is not set"
                    )
                env[theirs] = value
        return env

    def _run(self, name: str, *params: str, timeout: float, ok: tuple[int, ...] = (0,)) -> bytes:
        try:
            return self.runner.run(
                self.argv(name, *params), timeout=timeout, env=self.env(), ok_codes=ok
            ).stdout
        except CommandError as exc:
            raise SourceError(f"{name}: {exc}") from None
        except FileNotFoundError:
            raise SourceError(
                f"{self.program(name)} not found: install barman-cloud (pip install "
                "'barman[cloud]') or set source.bin_dir"
            ) from None

    def backups(self, timeout: float = 300) -> list[BarmanBackup]:
        out = self._run(
            LIST, "--format=json", destination(self.settings), self.settings.server, timeout=timeout
        )
        try:
            return parse_backups(json.loads(out))
        except ValueError as exc:
            raise SourceError(f"{where(self.settings)}: {LIST}: {exc}") from None

    def restore(
        self, backup: BarmanBackup, data_dir: str, tablespace_dir: str, timeout: float
    ) -> None:
        """The backup's files into ``data_dir``, tablespaces inside ``tablespace_dir``."""
        maps = [f"--tablespace={t.name}:{tablespace_dir}/{t.oid}" for t in backup.tablespaces]
        self._run(
            RESTORE,
            *maps,
            destination(self.settings),
            self.settings.server,
            backup.id,
            data_dir,
            timeout=timeout,
        )

    def wal_restore(self, name: str, dest: str, timeout: float = 600) -> bool:
        """One WAL file into ``dest``; False when the archive does not have it (exit 1)."""
        try:
            done = self.runner.run(
                self.argv(
                    WAL_RESTORE,
                    "--no-partial",
                    destination(self.settings),
                    self.settings.server,
                    name,
                    dest,
                ),
                timeout=timeout,
                env=self.env(),
                ok_codes=(0, 1),
            )
        except CommandError as exc:
            raise SourceError(f"{WAL_RESTORE} {name}: {exc}") from None
        return done.returncode == 0

    def wal_listing(self, segment_size: int) -> walarchive.ArchiveListing:
        """The WAL folder as barman-cloud-wal-archive laid it out
        (``wals/<timeline+log>/<name>[.gz|.bz2|...]``), from a read-only S3 listing; names
        are the WAL files' own (what ``barman-cloud-wal-restore`` takes)."""
        prefix = f"{self.settings.server}/wals/"
        try:
            with opened([self.settings.repository], quick=True) as repos:
                return walarchive.listing_of(
                    repos[0].listing(prefix),
                    prefix,
                    segment_size,
                    COMPRESSION_SUFFIXES,
                    lambda _key, name: name,
                )
        except BackupError as exc:
            raise SourceError(f"{where(self.settings)}: cannot list the WAL: {exc}") from None


COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".snappy", ".lz4", ".zst")


def wal_name(stored: str) -> str:
    """A WAL file's own name from the object's (barman-cloud appends its compression's
    suffix): ``000000010000000000000003.gz`` -> ``000000010000000000000003``."""
    for suffix in COMPRESSION_SUFFIXES:
        if stored.endswith(suffix):
            return stored[: -len(suffix)]
    return stored


def health(
    settings: BarmanCloudSettings,
    runner: Runner,
    target: str,
    max_backup_age_seconds: float,
    now: dt.datetime | None = None,
    verify: bool = True,
) -> HealthReport:
    """``pgproof check`` of a barman-cloud server: its backups as barman-cloud lists them
    (failed ones named), the newest one's age, and (``verify``) each backup's WAL from its
    start to the newest archived segment, gaps named."""
    now = now or dt.datetime.now(dt.UTC)
    named = where(settings)
    report = RepoReport(named, destination(settings))
    tool = BarmanCloud(settings, runner)
    try:
        backups = tool.backups()
        listing = tool.wal_listing(walnames.DEFAULT_SEGMENT_SIZE) if verify else None
    except SourceError as exc:
        report.reachable = False
        return HealthReport(target, [report], [f"{named}: {exc}"], utc_iso(now))
    problems: list[str] = []
    done = [b for b in backups if b.status == "DONE"]
    for b in backups:
        report.backups.append(
            {
                "id": b.id,
                "kind": "physical",
                "state": "complete" if b.status == "DONE" else b.status.lower(),
                "size_bytes": b.size,
                "started_at": utc_iso(b.started),
                "finished_at": utc_iso(b.finished),
                "start_wal": b.begin_wal,
                "stop_wal": b.end_wal,
            }
        )
        if b.status != "DONE":
            problems.append(
                f"{named}: backup {b.id} is {b.status}" + (f": {b.error}" if b.error else "")
            )
    if listing is not None and done:
        seg = done[0].segment_size
        names = sorted(listing.segments.values())
        if names:
            report.wal = {"first": names[0], "last": names[-1], "segments": len(names)}
        oldest = done[0]
        if oldest.begin_wal:
            histories: dict[int, list[walnames.HistoryEntry]] = {}
            cont = walnames.check_continuity(
                set(listing.segments),
                histories,
                walnames.parse_segment_name(oldest.begin_wal, seg),
                seg,
            )
            if cont.missing:
                problems.append(
                    f"{named}: WAL segment {cont.missing[0]} is missing from the archive "
                    f"({len(cont.missing)} missing after backup {oldest.id}'s start)"
                )
        for b in done:
            last = names[-1] if names else None
            if b.end_wal and not walnames.archive_reaches(last, b.end_wal, seg):
                problems.append(
                    f"{named}: backup {b.id}: its WAL up to {b.end_wal} is not archived "
                    f"(the archive ends at {names[-1] if names else 'nothing'})"
                )
    if not done:
        problems.append(f"{named}: no complete backup")
    else:
        age = (now - done[-1].finished).total_seconds()
        if age > max_backup_age_seconds:
            problems.append(
                f"{named}: the newest backup {done[-1].id} is {age / 3600:.1f} h old "
                f"(limit {max_backup_age_seconds / 3600:.1f} h)"
            )
    report.problems = problems
    return HealthReport(target, [report], problems, utc_iso(now))
