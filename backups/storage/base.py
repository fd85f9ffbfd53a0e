"""The repository interface shared by the filesystem and S3 backends.

Keys are ``/``-separated relative paths (``main/backups/<id>/manifest.json``). Every write is
atomic: an object appears under its key only once complete and durable, with its size and
sha256 computed while streaming. ``metadata`` is a small str->str mapping stored with the
object (S3 user metadata; a sidecar file on filesystems written before the data appears).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class HashingCounter:
    """Running size + sha256 of the bytes passed through ``update``."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class Repository(ABC):
    """One place backups are kept. Implementations raise StorageError (never backend errors)."""

    name: str
    kind: str
    listing_is_cheap = False  # True when listing a folder costs no more than a system call

    @abstractmethod
    def describe(self) -> str:
        """Where the repository lives, for humans (no credentials)."""

    @abstractmethod
    def put(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Store the streamed bytes atomically under ``key`` (replacing any object there)."""

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        return self.put(key, [data], metadata)

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, mtime and metadata of ``key``, or None when absent."""

    @abstractmethod
    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the object's bytes; ObjectNotFound when absent."""

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read(key))

    @abstractmethod
    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with ``prefix`` (no metadata)."""

    def child_names(self, prefix: str, start_after: str | None = None) -> list[str]:
        """The names directly under the folder ``prefix`` (ending in ``/``), sub-folders with
        a trailing ``/``, in no particular order; only names after ``start_after`` when given.
        Backends override this with a listing that does not descend into sub-folders."""
        names: set[str] = set()
        for info in self.listing(prefix):
            name, sep, _ = info.key[len(prefix) :].partition("/")
            if start_after is None or name > start_after:
                names.add(name + sep)
        return list(names)

    @abstractmethod
    def probe(self) -> None:
        """Raise StorageError unless the repository answers (its root or bucket exists)."""

    def change_token(self, prefix: str) -> str | None:
        """A cheap value that changes whenever an entry is added to or removed from the
        folder ``prefix``; None when the backend has no such thing (S3)."""
        return None

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Remove objects (absent ones are ignored)."""

    @abstractmethod
    def cleanup_incomplete(self, prefix: str, older_than_seconds: float) -> list[str]:
        """Remove leftovers of interrupted writes older than the age; returns what went."""

    encrypted = False  # client-side encryption (storage.encrypted wraps a backend)
    locks = False  # Object Lock: write-once objects carry a retain-until date

    def require_locks(self) -> None:  # noqa: B027 - optional hook: filesystems cannot lock
        """StorageError when the repository is configured to lock objects and cannot."""

    def require_keys(self, target: str) -> None:  # noqa: B027 - optional hook
        """StorageError when objects of ``target`` need a master key this host lacks."""

    def key_id_of(self, key: str) -> str | None:
        """The master key id of an encrypted object this process read or wrote (else None)."""
        return None

    def locked_until(self, key: str) -> dt.datetime | None:
        """Until when ``key`` cannot be deleted (None: it can be now, or never was locked)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
