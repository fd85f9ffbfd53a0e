"""The WAL archive: ``wal-push`` (archive_command) and ``wal-fetch`` (restore_command).

Rules (DESIGN.md): a push succeeds only when the file is durably stored in every repository
of the target; pushing a name that is already archived with the same bytes succeeds, with
different bytes fails and overwrites nothing. Segments and ``.partial`` files are stored zstd
compressed (``<name>.zst``); ``.history`` and ``.backup`` files as they are. Each object
carries ``source-sha256``/``source-size`` (the file PostgreSQL gave us) and ``sha256`` (the
stored bytes) as metadata.

This module is on the archive_command hot path: it imports nothing heavy (no psycopg, no
boto3 unless an S3 repository is configured).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pgproof.backups import compression, walnames
from pgproof.backups.errors import (
    BackupError,
    IntegrityError,
    KeyUnavailable,
    StorageError,
    WalConflict,
    WalError,
)
from pgproof.backups.layout import wal_prefix
from pgproof.backups.storage.base import ObjectInfo, Repository

COMPRESSED_KINDS = (walnames.WalKind.SEGMENT, walnames.WalKind.PARTIAL)


def archive_key(target: str, name: str, compressed: bool) -> str:
    return wal_prefix(target) + name + (compression.ZSTD_SUFFIX if compressed else "")


def candidate_keys(target: str, name: str) -> list[str]:
    return [archive_key(target, name, True), archive_key(target, name, False)]


def exists(repo: Repository, target: str, name: str) -> bool:
    return any(repo.head(k) is not None for k in candidate_keys(target, name))


@dataclass(frozen=True)
class PushOutcome:
    name: str
    stored: tuple[str, ...]  # repositories that received it now
    already: tuple[str, ...]  # repositories that had identical bytes already
    failed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _Prepared:
    name: str
    key: str
    payload: bytes
    source_sha256: str
    source_size: int

    @property
    def metadata(self) -> dict[str, str]:
        return {
            "sha256": hashlib.sha256(self.payload).hexdigest(),
            "source-sha256": self.source_sha256,
            "source-size": str(self.source_size),
        }


def prepare(target: str, path: str | Path, level: int) -> _Prepared:
    name = os.path.basename(str(path))
    try:
        kind = walnames.classify(name)
    except ValueError:
        raise WalError(f"refusing to archive {name!r}: not a WAL, history or backup file") from None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WalError(f"cannot read {path}: {exc.strerror or exc}") from exc
    compressed = kind in COMPRESSED_KINDS and level > 0
    payload = compression.zstd_compress_bytes(data, level) if compressed else data
    return _Prepared(
        name,
        archive_key(target, name, compressed),
        payload,
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


def _stored_source_sha(repo: Repository, key: str, metadata: dict[str, str]) -> str:
    recorded = metadata.get("source-sha256")
    if recorded:
        return recorded
    data = repo.read_bytes(key)  # no metadata (copied in by hand): compare the content itself
    if key.endswith(compression.ZSTD_SUFFIX):
        data = compression.zstd_decompress_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _push_one(repo: Repository, target: str, item: _Prepared) -> str:
    """Store ``item`` in ``repo``; returns "stored" or "already"; WalConflict on a mismatch."""
    for key in candidate_keys(target, item.name):
        info = repo.head(key)
        if info is None:
            continue
        theirs = _stored_source_sha(repo, key, dict(info.metadata))
        if theirs == item.source_sha256:
            return "already"
        raise WalConflict(
            f"{item.name} is already archived in repository {repo.name!r} with different "
            f"content (sha256 {theirs[:12]}..., this file {item.source_sha256[:12]}...); "
            "refusing to overwrite it. Is another cluster archiving into the same target?"
        )
    stored = repo.put_bytes(item.key, item.payload, item.metadata)
    if stored.size != len(item.payload):
        raise IntegrityError(repo.name, f"{item.key}: stored {stored.size} of {len(item.payload)}")
    return "stored"


def push(target: str, repos: Sequence[Repository], path: str | Path, level: int = 1) -> PushOutcome:
    """Archive one file into every repository (in parallel when there are several)."""
    if not repos:
        raise WalError(f"target {target!r} has no repositories")
    item = prepare(target, path, level)
    results: dict[str, str] = {}
    failed: dict[str, str] = {}

    def attempt(repo: Repository) -> None:
        try:
            results[repo.name] = _push_one(repo, target, item)
        except BackupError as exc:
            failed[repo.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - anything else still must not pass silently
            failed[repo.name] = f"repository {repo.name!r}: {type(exc).__name__}: {exc}"

    if len(repos) == 1:
        attempt(repos[0])
    else:
        with concurrent.futures.ThreadPoolExecutor(len(repos)) as pool:
            list(pool.map(attempt, repos))
    return PushOutcome(
        item.name,
        # in the configured order of the repositories, whatever order the threads finished in
        tuple(r.name for r in repos if results.get(r.name) == "stored"),
        tuple(r.name for r in repos if results.get(r.name) == "already"),
        {r.name: failed[r.name] for r in repos if r.name in failed},
    )


class WalNotFound(WalError):
    pass


_T = TypeVar("_T")


def _first_intact(
    target: str,
    repos: Sequence[Repository],
    name: str,
    accept: Callable[[str, bytes, dict[str, str]], _T],
) -> tuple[str, _T, list[str]]:
    """(repository, accept(key, stored bytes, metadata), problems) for the first intact copy.

    A copy whose stored bytes do not match their sha256, or that ``accept`` rejects
    (ValueError, ZstdError), is skipped for the next repository. WalNotFound when no
    repository has it; StorageError when none could be read (not the same: recovery must not
    end early because a repository was unreachable).
    """
    try:
        walnames.classify(name)
    except ValueError:
        raise WalError(f"not a WAL file name: {name!r}") from None
    problems: list[str] = []
    details: list[str] = []  # the same, without the repository's name
    unreadable = keyless = 0
    for repo in repos:
        for key in candidate_keys(target, name):
            try:
                info = repo.head(key)
                if info is None:
                    continue
                data = repo.read_bytes(key)
                meta = dict(info.metadata)
                if meta.get("sha256") and hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    raise IntegrityError(repo.name, f"{key} does not match its sha256")
                result = accept(key, data, meta)
            except (StorageError, compression.ZstdError, ValueError) as exc:
                details.append(exc.detail if isinstance(exc, StorageError) else str(exc))
                problems.append(f"{repo.name}: {details[-1]}")
                unreadable += 1
                keyless += isinstance(exc, KeyUnavailable)
                continue
            return repo.name, result, problems
    if unreadable and unreadable >= len(repos):
        names = ",".join(r.name for r in repos)
        text = "; ".join(details if len(repos) == 1 else problems)
        if keyless == unreadable:  # no copy could be judged: this host lacks the keys
            raise KeyUnavailable(names, text)
        raise StorageError(names, text)
    raise WalNotFound(f"{name} is not in the archive of target {target!r}")


def fetch(
    target: str, repos: Sequence[Repository], name: str, dest: str | Path
) -> tuple[str, list[str]]:
    """Restore ``name`` to ``dest`` from the first repository with an intact copy (the
    original bytes' sha256 checked); returns (repository used, problems met on the way)."""

    def original(key: str, data: bytes, meta: dict[str, str]) -> bytes:
        if key.endswith(compression.ZSTD_SUFFIX):
            data = compression.zstd_decompress_bytes(data)
        expected = meta.get("source-sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"{key} decompresses to different bytes")
        return data

    repo_name, plain, problems = _first_intact(target, repos, name, original)
    _write_atomic(Path(dest), [plain])
    return repo_name, problems


def fetch_stored(
    target: str, repos: Sequence[Repository], name: str, directory: Path
) -> tuple[Path, bytes, list[str]]:
    """Copy ``name`` as stored (``.zst`` kept) into ``directory``, its stored sha256 checked.

    Returns the file written, the first 8 KiB of the original WAL bytes (for header checks)
    and the bad copies skipped on the way (repository: problem). Decompression is left to
    whoever replays it (``zstd -d`` verifies the frame checksum).
    """

    def keep(key: str, data: bytes, meta: dict[str, str]) -> tuple[Path, bytes, bytes]:
        if key.endswith(compression.ZSTD_SUFFIX):
            head = compression.zstd_head(data, 8192)
            return directory / (name + compression.ZSTD_SUFFIX), data, head
        return directory / name, data, data[:8192]

    _, (dest, data, head), problems = _first_intact(target, repos, name, keep)
    _write_atomic(dest, [data])
    return dest, head, problems


def _write_atomic(dest: Path, chunks: Iterable[bytes]) -> None:
    tmp = dest.with_name(f".{dest.name}.pgproof-tmp")
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@dataclass(frozen=True)
class ArchiveListing:
    segments: dict[tuple[int, int], str]  # (timeline, segno) -> key
    histories: dict[int, str]  # timeline -> key
    others: list[str]  # .backup and .partial keys
    newest_mtime: float | None
    objects: dict[str, ObjectInfo] = field(default_factory=dict)  # segment key -> listing


def list_archive(repo: Repository, target: str, segment_size: int) -> ArchiveListing:
    return listing_of(repo.listing(wal_prefix(target)), wal_prefix(target), segment_size)


def listing_of(
    infos: Iterable[ObjectInfo],
    prefix: str,
    segment_size: int,
    suffixes: tuple[str, ...] = (compression.ZSTD_SUFFIX,),
    value: Callable[[str, str], str] = lambda key, _name: key,
) -> ArchiveListing:
    """An archive folder's listing sorted into segments, history files and the rest (names
    under ``prefix``, maybe with one of ``suffixes``; deeper folders are looked into, as
    barman-cloud's ``wals/<timeline+log>/`` are). ``value(key, name)``: what the listing
    keeps for a file (its key; a tool that fetches by name wants the name)."""
    segments: dict[tuple[int, int], str] = {}
    histories: dict[int, str] = {}
    others: list[str] = []
    newest: float | None = None
    objects: dict[str, ObjectInfo] = {}
    for info in infos:
        name = info.key[len(prefix) :].rsplit("/", 1)[-1]
        for suffix in suffixes:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        try:
            kind = walnames.classify(name)
        except ValueError:
            continue
        kept = value(info.key, name)
        if kind is walnames.WalKind.SEGMENT:
            segments[walnames.parse_segment_name(name, segment_size)] = kept
            objects[kept] = info
            newest = info.mtime if newest is None else max(newest, info.mtime)
        elif kind is walnames.WalKind.HISTORY:
            histories[walnames.timeline_of(name)] = kept
        else:
            others.append(kept)
    return ArchiveListing(segments, histories, others, newest, objects)
