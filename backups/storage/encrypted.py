"""A repository whose objects are encrypted on the client (issue 15), around any backend.

Every object pgproof writes through it is encrypted (``backups.crypto``: AES-256-GCM frames,
a data key per object wrapped by the ring's current master key) except the key registry,
which holds key ids only. Callers see plaintext: ``put`` returns the plaintext's size and
sha256 (what manifests and WAL metadata record) and ``read`` decrypts while streaming, so
every integrity check above this layer is unchanged and GCM's authentication comes on top.
Listing sizes are the stored (encrypted) sizes.

A plaintext object where an encrypted one belongs is refused (``decrypt-failed``): an
attacker who can write the bucket cannot slip in content of their choosing. Errors name the
object and the key id, never a key.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping

from pgproof.backups import crypto, layout
from pgproof.backups.errors import (
    DecryptFailed,
    IntegrityError,
    KeyUnavailable,
    ObjectNotFound,
    StorageError,
)
from pgproof.backups.keyregistry import KeyRegistry, RegisteredKey
from pgproof.backups.storage.base import (
    CHUNK_SIZE,
    HashingCounter,
    ObjectInfo,
    Repository,
    StoredObject,
)


class EncryptedRepository(Repository):
    def __init__(self, inner: Repository, ring: crypto.KeyRing):
        self.inner = inner
        self.ring = ring
        self.name = inner.name
        self.kind = inner.kind
        self.listing_is_cheap = inner.listing_is_cheap
        self.locks = inner.locks
        self.key_ids: dict[str, str] = {}  # object key -> master key id, of what was read
        self._registered: set[str] = set()  # targets whose registry names the current key
        self._registering = threading.Lock()

    encrypted = True

    def describe(self) -> str:
        return f"{self.inner.describe()} (encrypted, master key {self.ring.current})"

    def _error(self, exc: crypto.CryptoError) -> StorageError:
        if exc.reason == "key-unavailable":
            return KeyUnavailable(self.name, str(exc))
        return DecryptFailed(self.name, str(exc))

    def put(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        if layout.is_key_registry(key):
            return self.inner.put(key, chunks, metadata)
        self._register(key)
        plain = HashingCounter()

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                plain.update(chunk)
                yield chunk

        self.inner.put(key, crypto.encrypt(counted(), key, self.ring), metadata)
        self.key_ids[key] = self.ring.current
        return StoredObject(key, plain.size, plain.hexdigest())

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        stored = self.inner.read(key, chunk_size)  # ObjectNotFound raised here, not later
        if layout.is_key_registry(key):
            return stored
        return self._decrypted(stored, key)

    def _decrypted(self, stored: Iterator[bytes], key: str) -> Iterator[bytes]:
        def note(kid: str) -> None:
            self.key_ids[key] = kid

        try:
            yield from crypto.decrypt(stored, key, self.ring, note)
        except crypto.CryptoError as exc:
            raise self._error(exc) from None

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.listing(prefix)

    def child_names(self, prefix: str, start_after: str | None = None) -> list[str]:
        return self.inner.child_names(prefix, start_after)

    def probe(self) -> None:
        self.inner.probe()

    def change_token(self, prefix: str) -> str | None:
        return self.inner.change_token(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def cleanup_incomplete(self, prefix: str, older_than_seconds: float) -> list[str]:
        return self.inner.cleanup_incomplete(prefix, older_than_seconds)

    def require_locks(self) -> None:
        self.inner.require_locks()

    def locked_until(self, key: str) -> dt.datetime | None:
        return self.inner.locked_until(key)

    def close(self) -> None:
        self.inner.close()

    # -- the key registry: which master keys still encrypt objects of a target --------------

    def registered(self, target: str) -> KeyRegistry:
        """The target's key registry (empty when none was written yet)."""
        key = layout.key_registry_key(target)
        try:
            return KeyRegistry.from_json(self.inner.read_bytes(key))
        except ObjectNotFound:
            return KeyRegistry({})
        except ValueError as exc:
            raise StorageError(self.name, f"{key} is not a key registry: {exc}") from None

    def write_registry(self, target: str, registry: KeyRegistry) -> None:
        self.inner.put_bytes(layout.key_registry_key(target), registry.to_json())
        self._registered.discard(target)

    def missing_keys(self, target: str) -> dict[str, RegisteredKey]:
        """The registered master keys this host's ring lacks (objects it cannot read)."""
        return {k: e for k, e in self.registered(target).keys.items() if k not in self.ring.keys}

    def require_keys(self, target: str) -> None:
        missing = self.missing_keys(target)
        if missing:
            named = ", ".join(
                f"{k} (e.g. {e.example}"
                + (f", {e.objects} objects at the last check)" if e.objects is not None else ")")
                for k, e in sorted(missing.items())
            )
            raise KeyUnavailable(
                self.name,
                f"key-unavailable: objects of {target!r} are encrypted with master key(s) "
                f"{named}, which this host's encryption settings do not list: keep them "
                "under encryption.previous until `pgproof check` finds no object using them",
            )

    def key_id_of(self, key: str) -> str | None:
        return self.key_ids.get(key)

    def _register(self, key: str) -> None:
        """Name the current key in the target's registry before its first object is written
        (once per process and target)."""
        target = key.split("/", 1)[0]
        if target in self._registered or "/" not in key:
            return
        with self._registering:  # the async WAL worker writes from several threads
            if target in self._registered:
                return
            known = self.registered(target)
            if self.ring.current not in known.keys:
                try:
                    self.write_registry(target, known.with_key(self.ring.current, key))
                except IntegrityError:  # another process wrote it meanwhile: read it again
                    if self.ring.current not in self.registered(target).keys:
                        raise
            self._registered.add(target)
