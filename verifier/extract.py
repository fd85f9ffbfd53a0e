"""Extracting a base backup from a stream, with tar members filtered against path traversal."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pgproof.verifier.errors import RestoreFailed


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]  # a view: no copy of the rest
        return size


def in_thread(chunks: Iterable[bytes], depth: int = 16) -> Iterator[bytes]:
    """Produce ``chunks`` in a thread (e.g. decompression) while the caller consumes them
    (e.g. writes files): on several cores the two overlap. Memory: ``depth`` chunks."""
    import queue
    import threading

    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        items.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="produce-chunks", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


class UnsafeMember(RestoreFailed):
    pass


def check_member(member: tarfile.TarInfo, dest: Path) -> tarfile.TarInfo:
    """Refuse what could write outside ``dest``; normalise the name and clear special bits.

    Refused: absolute names, ``..`` components, device files and FIFOs, hard links, and
    symbolic links whose target leaves ``dest``. Writing through an earlier symlink is
    caught by resolving the parent directory before extraction.
    """
    name = member.name
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise UnsafeMember(f"unsafe path in the base backup: {name!r}")
    if not (member.isfile() or member.isdir() or member.issym()):
        raise UnsafeMember(f"refusing {name!r}: not a file, directory or symlink")
    root = os.path.realpath(dest)
    parent = os.path.realpath(os.path.join(root, *parts[:-1]))
    if parent != root and not parent.startswith(root + os.sep):
        raise UnsafeMember(f"refusing {name!r}: its directory leaves the data directory")
    if member.issym():
        link = member.linkname
        resolved = os.path.realpath(os.path.join(parent, link))
        if link.startswith("/") or not (resolved == root or resolved.startswith(root + os.sep)):
            raise UnsafeMember(
                f"refusing symlink {name!r} -> {link!r}: it leaves the data directory"
            )
    safe = (
        member.replace(name="/".join(parts), deep=False) if hasattr(member, "replace") else member
    )
    safe.name = "/".join(parts)
    safe.mode = member.mode & (0o755 if member.isdir() else 0o644) | (
        0o700 if member.isdir() else 0o600
    )
    return safe


def extract(chunks: Iterable[bytes], dest: Path) -> int:
    """Extract a tar stream into ``dest`` member by member; returns the number of members.

    Every member passes ``check_member`` first: a hostile or damaged archive cannot write
    outside the sandbox. A truncated or corrupt stream raises RestoreFailed.
    """
    dest.mkdir(mode=0o700, exist_ok=True)
    count = 0
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=1 << 20)
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:
            tar.copybufsize = 1 << 20  # type: ignore[attr-defined]  # default: 16 KiB steps
            for member in tar:
                safe = check_member(member, dest)
                tar.extract(safe, dest, set_attrs=not safe.issym(), numeric_owner=True)
                count += 1
            # read the stream to its end: what checks it there (a sha256, a gzip CRC, zstd's
            # frame checksums) runs; and tarfile takes a damaged member header for the end
            # of the archive, so anything but zeros after it is damage, not padding
            rest = tar.fileobj
            while rest is not None and (block := rest.read(1 << 20)):
                if block.strip(b"\0"):
                    raise RestoreFailed(
                        f"the tar archive stops after {count} members at a damaged member "
                        "header (data follows where it seems to end)"
                    )
    except (tarfile.TarError, EOFError) as exc:
        raise RestoreFailed(f"the base backup is not a complete tar archive: {exc}") from exc
    os.chmod(dest, 0o700)
    return count
