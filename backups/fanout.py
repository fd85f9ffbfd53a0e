"""Writing one stream into several repositories at once (3-2-1 without reading twice).

The producer (a pg_dump pipe, a compressor) is read once; each repository consumes the same
chunks from its own bounded queue in its own thread, so memory stays at
``queue_depth x chunk size`` per repository whatever the backup's size. A repository that
fails is dropped (its partial write is cleaned by its own ``put``) and the others go on; if
the producer fails, every repository's write is aborted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pgproof.backups.errors import BackupError, BackupFailed, StorageError
from pgproof.backups.storage.base import Repository, StoredObject

_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised inside a consumer when the producer failed: its put() must not complete."""


@dataclass
class FanoutResult:
    stored: dict[str, StoredObject] = field(default_factory=dict)
    failed: dict[str, BackupError] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        digests = {s.sha256 for s in self.stored.values()}
        if len(digests) != 1:
            raise StorageError(",".join(self.stored), f"repositories disagree: {digests}")
        return digests.pop()

    @property
    def size(self) -> int:
        return next(iter(self.stored.values())).size


class _Consumer:
    def __init__(self, repo: Repository, key: str, metadata: Mapping[str, str] | None, depth: int):
        self.repo = repo
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.stored: StoredObject | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(key, metadata), name=f"put-{repo.name}", daemon=True
        )
        self.thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted()
            assert isinstance(item, bytes | bytearray | memoryview)
            yield bytes(item)

    def _run(self, key: str, metadata: Mapping[str, str] | None) -> None:
        try:
            self.stored = self.repo.put(key, self._chunks(), metadata)
        except BaseException as exc:  # noqa: BLE001 - reported to the producer
            self.error = exc
            # Unblock a producer waiting on a full queue.
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    @property
    def alive(self) -> bool:
        return self.error is None and self.thread.is_alive()

    def offer(self, item: object) -> None:
        while self.alive:
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def fan_out(
    repos: Sequence[Repository],
    key: str,
    chunks: Iterable[bytes],
    metadata: Mapping[str, str] | None = None,
    queue_depth: int = 8,
) -> FanoutResult:
    """Store ``chunks`` under ``key`` in every repository; see the module docstring.

    Errors of the producer propagate (after every partial write was aborted); errors of a
    repository are collected in ``FanoutResult.failed``. When every repository has failed,
    BackupFailed is raised at once: the producer is not read any further, and the caller's
    ``with runner.stream(...)`` kills the command instead of waiting on a full pipe.
    """
    consumers = [_Consumer(r, key, metadata, queue_depth) for r in repos]
    try:
        for chunk in chunks:
            if not chunk:
                continue
            live = [c for c in consumers if c.alive]
            if not live:
                for consumer in consumers:
                    consumer.thread.join()
                why = "; ".join(str(c.error) for c in consumers if c.error is not None)
                raise BackupFailed(f"every repository failed writing {key}: {why}")
            for consumer in live:
                consumer.offer(chunk)
    except BaseException:
        for consumer in consumers:
            consumer.offer(_ABORT)
        for consumer in consumers:
            consumer.thread.join()
        raise
    for consumer in consumers:
        consumer.offer(_END)
    result = FanoutResult()
    for consumer in consumers:
        consumer.thread.join()
        if consumer.stored is not None and consumer.error is None:
            result.stored[consumer.repo.name] = consumer.stored
        else:
            error = consumer.error
            if isinstance(error, BackupError):
                result.failed[consumer.repo.name] = error
            elif isinstance(error, Exception):
                result.failed[consumer.repo.name] = StorageError(consumer.repo.name, str(error))
            elif error is not None:
                raise error
            else:
                result.failed[consumer.repo.name] = StorageError(consumer.repo.name, "no result")
    return result
