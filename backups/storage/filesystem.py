"""A repository on a local or mounted filesystem.

Writes go to a hidden temp file in the destination directory, are fsynced, renamed into
place, and the directory is fsynced: an object is either absent or complete after a crash.
Metadata lives in a sidecar ``<key>.pgproof-meta`` written (atomically) before the object.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TypeVar

from pgproof.backups.errors import ObjectNotFound, StorageError
from pgproof.backups.storage.base import (
    CHUNK_SIZE,
    HashingCounter,
    ObjectInfo,
    Repository,
    StoredObject,
)

_T = TypeVar("_T")
TEMP_PREFIX = ".tmp."
META_SUFFIX = ".pgproof-meta"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemRepository(Repository):
    kind = "filesystem"
    listing_is_cheap = True

    def __init__(self, name: str, root: str | Path, *, file_mode: int = 0o640):
        self.name = name
        self.root = Path(root)
        self.file_mode = file_mode
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            # Root writes on behalf of the repository's owner (wal-push runs as postgres and
            # must be able to add to what a root-run backup job created).
            try:
                st = self.root.stat()
            except OSError:
                st = None
            if st is not None and st.st_uid != 0:
                self._owner = (st.st_uid, st.st_gid)

    def _own(self, path: Path | int) -> None:
        if self._owner is not None:
            if isinstance(path, int):
                os.fchown(path, *self._owner)
            else:
                os.chown(path, *self._owner)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(self.name, f"invalid key {key!r}")
        return self.root.joinpath(*parts)

    def _mkdirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        if not self.root.is_dir():
            # never re-create the root: a missing one is an unmounted or removed volume, and
            # writing into an empty mount point would put backups on the wrong disk
            raise StorageError(
                self.name, f"repository root {self.root} does not exist (not mounted?)"
            )
        missing = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        directory.mkdir(parents=True, exist_ok=True)
        for made in reversed(missing):  # make the new entries durable, parent first
            self._own(made)
            fsync_dir(made.parent)

    def _write_atomic(self, final: Path, chunks: Iterable[bytes]) -> HashingCounter:
        """Temp file, fsync, rename. Errors of the disk become StorageError; errors raised by
        the ``chunks`` producer propagate unchanged. Either way the temp file is removed."""
        tmp = final.parent / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{final.name}"
        counter = HashingCounter()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        except OSError as exc:
            raise self._disk_error(final, exc) from exc
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                self._guard(final, lambda: self._own(out.fileno()))
                for chunk in chunks:
                    counter.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        written = self._guard(final, functools.partial(out.write, view))
                        view = view[written or 0 :]
                self._guard(final, lambda: os.fsync(out.fileno()))
            self._guard(final, lambda: os.replace(tmp, final))
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return counter

    def _disk_error(self, path: Path, exc: OSError) -> StorageError:
        key = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        return StorageError(self.name, f"cannot write {key}: {exc.strerror or exc}")

    def _guard(self, path: Path, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except OSError as exc:
            raise self._disk_error(path, exc) from exc

    def put(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        final = self._path(key)
        meta = final.with_name(final.name + META_SUFFIX)
        try:
            self._mkdirs(final.parent)
            if not metadata and meta.exists():
                meta.unlink()
        except OSError as exc:
            raise self._disk_error(final, exc) from exc
        if metadata:
            payload = json.dumps(dict(metadata), sort_keys=True).encode()
            self._write_atomic(meta, [payload])
        counter = self._write_atomic(final, chunks)
        self._guard(final, lambda: fsync_dir(final.parent))
        return StoredObject(key, counter.size, counter.hexdigest())

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(self.name, f"cannot stat {key}: {exc.strerror or exc}") from exc
        metadata: dict[str, str] = {}
        meta = path.with_name(path.name + META_SUFFIX)
        try:
            metadata = json.loads(meta.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise StorageError(self.name, f"unreadable metadata for {key}: {exc}") from exc
        return ObjectInfo(key, st.st_size, st.st_mtime, metadata)

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(self.name, f"{key} does not exist") from None
        except OSError as exc:
            raise StorageError(self.name, f"cannot read {key}: {exc.strerror or exc}") from exc
        return self._chunks(handle, key, chunk_size)

    def _chunks(self, handle: BinaryIO, key: str, chunk_size: int) -> Iterator[bytes]:
        with handle as fh:
            try:
                while chunk := fh.read(chunk_size):
                    yield chunk
            except OSError as exc:
                raise StorageError(self.name, f"cannot read {key}: {exc.strerror or exc}") from exc

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        base, _, _ = prefix.rpartition("/")
        start = self._path(base) if base else self.root
        if not start.is_dir():
            return
        root_len = len(str(self.root)) + 1
        stack = [start]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(self.name, f"cannot list {directory}: {exc}") from exc
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith(TEMP_PREFIX) or entry.name.endswith(META_SUFFIX):
                    continue
                key = entry.path[root_len:].replace(os.sep, "/")
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append(Path(entry.path))
                elif key.startswith(prefix):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def probe(self) -> None:
        try:
            if not self.root.is_dir():
                raise StorageError(self.name, f"{self.root} is not a directory (not mounted?)")
            os.listdir(self.root)
        except OSError as exc:
            raise StorageError(
                self.name, f"cannot read {self.root}: {exc.strerror or exc}"
            ) from exc

    def child_names(self, prefix: str, start_after: str | None = None) -> list[str]:
        directory = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            with os.scandir(directory) as it:
                names = [
                    e.name + "/" if e.is_dir(follow_symlinks=False) else e.name
                    for e in it
                    if not e.name.endswith(META_SUFFIX) and not e.name.startswith(TEMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StorageError(
                self.name, f"cannot list {directory}: {exc.strerror or exc}"
            ) from exc
        if start_after is not None:
            names = [n for n in names if n.rstrip("/") > start_after]
        return names

    def change_token(self, prefix: str) -> str | None:
        """The folder's mtime (ns): renames into and unlinks from it change it. A folder
        changed within the last two seconds gets no token, since a coarse clock may give the
        next change the same mtime."""
        directory = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            st = directory.stat()
        except FileNotFoundError:
            return "absent"
        except OSError as exc:
            raise StorageError(
                self.name, f"cannot stat {directory}: {exc.strerror or exc}"
            ) from exc
        if time.time() - st.st_mtime < 2.0:
            return None
        return f"{st.st_ino}:{st.st_mtime_ns}"

    def delete(self, keys: Iterable[str]) -> None:
        parents: set[Path] = set()
        try:
            for key in keys:
                path = self._path(key)
                for victim in (path, path.with_name(path.name + META_SUFFIX)):
                    with contextlib.suppress(FileNotFoundError):
                        victim.unlink()
                parents.add(path.parent)
            for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
                # Remove directories left empty (a deleted backup's folder), never the root.
                probe = parent
                while probe != self.root and probe.is_dir() and not any(probe.iterdir()):
                    probe.rmdir()
                    probe = probe.parent
                if probe.is_dir():
                    fsync_dir(probe)
        except OSError as exc:
            raise StorageError(self.name, f"cannot delete: {exc.strerror or exc}") from exc

    def cleanup_incomplete(self, prefix: str, older_than_seconds: float) -> list[str]:
        start = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        removed: list[str] = []
        if not start.is_dir():
            return removed
        cutoff = time.time() - older_than_seconds
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                path = Path(dirpath) / name
                orphan_meta = (
                    name.endswith(META_SUFFIX)
                    and not path.with_name(name[: -len(META_SUFFIX)]).exists()
                )
                if not (name.startswith(TEMP_PREFIX) or orphan_meta):
                    continue
                try:
                    if path.stat().st_mtime <= cutoff:
                        path.unlink()
                        removed.append(str(path.relative_to(self.root)))
                except FileNotFoundError:
                    continue
        return removed
