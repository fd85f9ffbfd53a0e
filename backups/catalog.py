"""The catalog: backup manifests in the repository, written last as the commit mark.

Layout (identical on filesystem and S3)::

    <target>/backups/<backup-id>/manifest.json   written LAST: its presence is the commit mark
    <target>/backups/<backup-id>/...              data files, each listed with size + sha256
    <target>/wal/<segment>[.zst]                  archived WAL
    <target>/results/<result-id>.json             restore-test result records

A backup directory without ``manifest.json`` is incomplete (a crashed or failed job) and is
never reported as a backup; retention and the next job's clean-up remove it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pgproof.backups.dbprops import DatabaseProperties, RoleInfo
from pgproof.backups.errors import (
    CatalogError,
    DecryptFailed,
    IntegrityError,
    KeyUnavailable,
    StorageError,
)
from pgproof.backups.kinds import KINDS, Kind
from pgproof.backups.layout import backup_prefix, backups_prefix, wal_prefix
from pgproof.backups.storage.base import Repository

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
__all__ = ["backup_prefix", "backups_prefix", "wal_prefix"]


def utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"not an ISO timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise CatalogError(f"timestamp without time zone: {text!r}")
    return moment


@dataclass(frozen=True)
class BackupFile:
    name: str  # relative to the backup's directory
    size: int
    sha256: str
    role: str  # globals | database | base | tablespace | backup_manifest
    compression: str = "none"
    database: str | None = None


@dataclass(frozen=True)
class Tablespace:
    """A tablespace outside the data directory, as it was when the backup was taken; its
    archive (``<oid>.tar``, pg_basebackup's) is the file named ``file``."""

    oid: int
    name: str
    location: str
    file: str


@dataclass(frozen=True)
class TableCount:
    schema: str
    table: str
    rows: int


@dataclass(frozen=True)
class DatabaseDump:
    name: str
    file: str
    format: str
    tables: tuple[TableCount, ...] = ()
    # at the dump's snapshot (None in manifests of pgproof before 0.2)
    properties: DatabaseProperties | None = None
    size_bytes: int | None = None  # pg_database_size at the dump's snapshot


@dataclass(frozen=True)
class Manifest:
    id: str
    kind: Kind
    target: str
    system_identifier: str
    pg_version: str
    pg_version_num: int
    started_at: str
    finished_at: str
    compression: str
    files: tuple[BackupFile, ...]
    tools: dict[str, str]
    pgproof_version: str
    repositories: tuple[str, ...]
    wal_segment_size: int
    data_checksums: bool
    # physical
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    stop_timeline: int | None = None
    start_wal: str | None = None
    stop_wal: str | None = None
    wal_included: bool = False
    tablespaces: tuple[Tablespace, ...] = ()  # besides pg_default and pg_global
    # logical
    snapshot: str | None = None
    databases: tuple[DatabaseDump, ...] = ()
    # the roles pg_dumpall's globals hold (None: not captured, e.g. they changed meanwhile)
    roles: tuple[RoleInfo, ...] | None = None
    # the cluster's bootstrap superuser (role oid 10): the sandbox's superuser has its name
    superuser: str | None = None
    # what a restore writes, as the source measured it at the backup: the data directory's
    # files (physical, backup_manifest's sizes) or the databases (logical); None: unknown
    data_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def started(self) -> dt.datetime:
        return parse_utc(self.started_at)

    @property
    def finished(self) -> dt.datetime:
        return parse_utc(self.finished_at)

    @property
    def duration_seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str = "manifest") -> Manifest:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise CatalogError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: not a JSON object")
        try:
            if raw.get("format") != MANIFEST_FORMAT:
                raise CatalogError(f"{where}: unsupported manifest format {raw.get('format')!r}")
            raw["files"] = tuple(BackupFile(**f) for f in raw["files"])
            raw["databases"] = tuple(_database_dump(d) for d in raw.get("databases", ()))
            if raw.get("roles") is not None:
                raw["roles"] = tuple(RoleInfo.from_dict(r) for r in raw["roles"])
            raw["repositories"] = tuple(raw["repositories"])
            raw["tablespaces"] = tuple(Tablespace(**t) for t in raw.get("tablespaces", ()))
            manifest = cls(**raw)
        except CatalogError:
            raise
        except (KeyError, TypeError) as exc:
            raise CatalogError(f"{where}: malformed manifest ({exc})") from None
        if manifest.kind not in KINDS:
            raise CatalogError(f"{where}: unknown kind {manifest.kind!r}")
        for f in manifest.files:
            bad_name = f.name.startswith("/") or ".." in f.name.split("/") or not f.name
            if not isinstance(f.size, int) or f.size < 0 or len(f.sha256) != 64 or bad_name:
                raise CatalogError(f"{where}: bad file entry {f.name!r}")
        names = {f.name for f in manifest.files}
        for t in manifest.tablespaces:
            if t.file not in names or not isinstance(t.oid, int):
                raise CatalogError(f"{where}: tablespace {t.name!r} has no archive {t.file!r}")
        parse_utc(manifest.started_at)
        parse_utc(manifest.finished_at)
        return manifest


def _database_dump(raw: dict[str, Any]) -> DatabaseDump:
    props = raw.get("properties")
    return DatabaseDump(
        **{
            **raw,
            "tables": tuple(TableCount(**t) for t in raw.get("tables", ())),
            "properties": DatabaseProperties.from_dict(props) if props is not None else None,
        }
    )


def write_manifest(repo: Repository, manifest: Manifest) -> None:
    data = manifest.to_json()
    key = backup_prefix(manifest.target, manifest.id) + MANIFEST_NAME
    repo.put_bytes(key, data, {"sha256": hashlib.sha256(data).hexdigest()})


def read_manifest(repo: Repository, target: str, backup_id: str) -> Manifest:
    key = backup_prefix(target, backup_id) + MANIFEST_NAME
    head = repo.head(key)
    data = repo.read_bytes(key)
    recorded = (head.metadata if head else {}).get("sha256")
    if recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise CatalogError(f"{repo.name}: {key} does not match its recorded sha256")
    manifest = Manifest.from_json(data, f"{repo.name}: {key}")
    if manifest.id != backup_id or manifest.target != target:
        raise CatalogError(f"{repo.name}: {key} names backup {manifest.id} of {manifest.target}")
    return manifest


class FileMismatch(CatalogError):
    """A stored backup file differs from its manifest entry (size, or sha256 when sizes agree)."""

    def __init__(self, name: str, found_size: int, expected_size: int):
        self.found_size = found_size
        self.expected_size = expected_size
        self.truncated = found_size != expected_size
        what = f"{found_size} bytes, manifest says {expected_size}" if self.truncated else "sha256"
        super().__init__(f"{name}: {what} differs from the manifest")


def read_checked(repo: Repository, key: str, expected: BackupFile) -> Iterator[bytes]:
    """Stream a backup file; once read, FileMismatch if its size or sha256 is not the manifest's.

    Backend errors (StorageError) propagate as they are.
    """
    sha = hashlib.sha256()
    size = 0
    for chunk in repo.read(key):
        sha.update(chunk)
        size += len(chunk)
        yield chunk
    if size != expected.size or sha.hexdigest() != expected.sha256:
        raise FileMismatch(expected.name, size, expected.size)


@dataclass(frozen=True)
class CatalogEntry:
    """One backup directory: complete (manifest) or not (leftovers of a failed job)."""

    id: str
    manifest: Manifest | None
    error: str | None
    keys: tuple[str, ...]
    stored_bytes: int
    newest_mtime: float
    # the manifest is there and is not this backup's valid manifest (unparsable, truncated,
    # another backup's, does not authenticate): damage, unlike a repository that did not
    # answer or a manifest that vanished between the listing and the read
    damaged: bool = False

    @property
    def complete(self) -> bool:
        return self.manifest is not None


def scan(repo: Repository, target: str, read: bool = True) -> list[CatalogEntry]:
    """Every backup directory of ``target`` in ``repo``, oldest first.

    A directory whose manifest is unreadable or malformed is returned with ``error`` set and
    no manifest: it is not a valid backup.
    """
    prefix = backups_prefix(target)
    groups: dict[str, list[tuple[str, int, float]]] = {}
    for info in repo.listing(prefix):
        rest = info.key[len(prefix) :]
        backup_id, sep, _ = rest.partition("/")
        if sep:
            groups.setdefault(backup_id, []).append((info.key, info.size, info.mtime))
    entries = []
    for backup_id in sorted(groups):
        items = groups[backup_id]
        keys = tuple(k for k, _, _ in items)
        manifest: Manifest | None = None
        error: str | None = None
        damaged = False
        if backup_prefix(target, backup_id) + MANIFEST_NAME in keys and read:
            try:
                manifest = read_manifest(repo, target, backup_id)
            except KeyUnavailable:  # this host cannot tell: never call the backup incomplete
                raise
            except (CatalogError, StorageError) as exc:
                error = str(exc)
                damaged = isinstance(exc, CatalogError | IntegrityError | DecryptFailed)
        entries.append(
            CatalogEntry(
                backup_id,
                manifest,
                error,
                keys,
                sum(s for _, s, _ in items),
                max(m for _, _, m in items),
                damaged,
            )
        )
    return entries


def complete_manifests(entries: Iterable[CatalogEntry]) -> list[Manifest]:
    return [e.manifest for e in entries if e.manifest is not None]
