"""Client-side encryption of what pgproof stores (issue 15): streaming, authenticated
AES-256-GCM in frames, one data key per object wrapped by a master key (envelope).

Object layout::

    header  = MAGIC (6) | key id length (1) | key id | wrapped key length (2) | wrapped key
              | nonce prefix (7) | frame size (4, big-endian)
    frames  = AES-256-GCM(data key, nonce = prefix | counter (4) | last (1),
                          aad = sha256(header) | object key) of each ``frame size`` bytes

The object's key (its name in the repository) and its header are authenticated with every
frame, the frame's position is in its nonce and the last frame says it is the last: frames
cannot be reordered, dropped, truncated, extended or swapped with another object's, and an
object cannot be renamed, without decryption failing. The data key is wrapped with the master
key by AES-256-GCM with the object key and the key id as associated data.

A master key never leaves ``KeyRing``: not in errors, argv, logs or metrics; a key is named
by its id (the first 16 hex digits of the sha256 of the key; a KMS key by its ARN). Pure:
no I/O here (KMS wrapping lives in ``backups.kms``).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pgproof.backups.errors import BackupError

MAGIC = b"PGPE\x00\x01"
FRAME_SIZE = 1 << 20
TAG = 16
_PREFIX = 7


class CryptoError(BackupError):
    """An encrypted object that cannot be read: ``reason`` is ``key-unavailable`` (no such
    master key here) or ``decrypt-failed`` (wrong key, or the bytes were changed)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def key_id(master: bytes) -> str:
    return hashlib.sha256(master).hexdigest()[:16]


class KeyWrapper(Protocol):
    """A master key: wraps and unwraps the data key of one object. ``key_id`` is what the
    object's header names (a local key's hash prefix, a KMS key's ARN)."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, object_key: str, data_key: bytes) -> bytes: ...

    def unwrap(self, object_key: str, wrapped: bytes) -> bytes: ...


class LocalKey:
    """A 32-byte master key held in memory (from a key file or an environment variable):
    data keys wrapped by AES-256-GCM with the key id and the object key as associated data."""

    def __init__(self, master: bytes):
        if len(master) != 32:
            raise ValueError("a master key is 32 bytes")
        self._master = master
        self.key_id = key_id(master)

    def __repr__(self) -> str:  # never the key itself
        return f"LocalKey({self.key_id})"

    def wrap(self, object_key: str, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = f"{self.key_id}\0{object_key}".encode()
        return nonce + AESGCM(self._master).encrypt(nonce, data_key, aad)

    def unwrap(self, object_key: str, wrapped: bytes) -> bytes:
        aad = f"{self.key_id}\0{object_key}".encode()
        try:
            return AESGCM(self._master).decrypt(wrapped[:12], wrapped[12:], aad)
        except InvalidTag:
            raise CryptoError(
                "decrypt-failed",
                f"{object_key}: its data key does not unwrap with master key {self.key_id} "
                "(the object's header was changed, or it was renamed)",
            ) from None


@dataclass(frozen=True)
class KeyRing:
    """The master keys this host has: ``current`` encrypts new objects, every one decrypts
    (rotation: the old keys stay for the objects they wrapped)."""

    keys: Mapping[str, KeyWrapper]  # key id -> master key
    current: str

    @classmethod
    def of(cls, current: bytes, *older: bytes) -> KeyRing:
        return cls.wrapping(LocalKey(current), *(LocalKey(k) for k in older))

    @classmethod
    def wrapping(cls, current: KeyWrapper, *older: KeyWrapper) -> KeyRing:
        keys: dict[str, KeyWrapper] = {}
        for k in (current, *older):
            keys.setdefault(k.key_id, k)
        return cls(keys, current.key_id)

    def __repr__(self) -> str:  # never the keys themselves
        return f"KeyRing(ids={sorted(self.keys)}, current={self.current})"


def header(kid: str, wrapped: bytes, prefix: bytes, frame_size: int) -> bytes:
    raw_id = kid.encode()
    if len(raw_id) > 255 or len(wrapped) > 0xFFFF:
        raise ValueError("a key id is at most 255 bytes, a wrapped key 65535")
    return (
        MAGIC
        + struct.pack(">B", len(raw_id))
        + raw_id
        + struct.pack(">H", len(wrapped))
        + wrapped
        + prefix
        + struct.pack(">I", frame_size)
    )


@dataclass(frozen=True)
class Header:
    key_id: str
    wrapped: bytes
    prefix: bytes
    frame_size: int
    raw: bytes


def parse_header(data: bytes, object_key: str) -> Header | None:
    """The header at the start of ``data``; None while ``data`` is too short to hold it;
    CryptoError when it is not one."""
    if len(data) < len(MAGIC) + 1:
        return None
    if not data.startswith(MAGIC):
        raise CryptoError("decrypt-failed", f"{object_key} is not an object pgproof encrypted")
    pos = len(MAGIC)
    id_len = data[pos]
    pos += 1
    if len(data) < pos + id_len + 2:
        return None
    kid = data[pos : pos + id_len].decode("ascii", "replace")
    pos += id_len
    (wrapped_len,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if len(data) < pos + wrapped_len + _PREFIX + 4:
        return None
    wrapped = data[pos : pos + wrapped_len]
    pos += wrapped_len
    prefix = data[pos : pos + _PREFIX]
    pos += _PREFIX
    (frame_size,) = struct.unpack_from(">I", data, pos)
    pos += 4
    if not 1 <= frame_size <= 64 << 20:
        raise CryptoError("decrypt-failed", f"{object_key}: its header is damaged")
    return Header(kid, wrapped, prefix, frame_size, data[:pos])


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def _aad(head: bytes, object_key: str) -> bytes:
    return hashlib.sha256(head).digest() + object_key.encode()


def _blocks(
    chunks: Iterable[bytes], size: int, pending: bytes = b""
) -> Iterator[tuple[bytes | memoryview, bool]]:
    """The stream cut into ``size``-byte blocks, each with whether it is the last (the last
    may be shorter, or empty for an empty stream). One block is always held back until more
    follows, since it may be the last; chunks are joined once per batch: few copies."""
    parts, held = [pending], len(pending)
    for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held <= size:
            continue
        data = b"".join(parts)
        view, pos = memoryview(data), 0
        while held - pos > size:
            yield view[pos : pos + size], False
            pos += size
        parts, held = [data[pos:]], held - pos
    yield b"".join(parts), True


def encrypt(
    chunks: Iterable[bytes], object_key: str, ring: KeyRing, frame_size: int = FRAME_SIZE
) -> Iterator[bytes]:
    """The encrypted object, streamed: the header, then one frame per ``frame_size`` bytes
    (an empty input is one empty last frame)."""
    kid = ring.current
    data_key = AESGCM.generate_key(bit_length=256)
    prefix = os.urandom(_PREFIX)
    head = header(kid, ring.keys[kid].wrap(object_key, data_key), prefix, frame_size)
    yield head
    aead, aad = AESGCM(data_key), _aad(head, object_key)
    for counter, (block, last) in enumerate(_blocks(chunks, frame_size)):
        yield aead.encrypt(_nonce(prefix, counter, last), block, aad)


def decrypt(
    chunks: Iterable[bytes],
    object_key: str,
    ring: KeyRing,
    on_key: Callable[[str], None] | None = None,
) -> Iterator[bytes]:
    """The plaintext of an encrypted object, streamed; CryptoError naming the object when the
    master key is not here (``key-unavailable``) or any byte was changed, a frame moved,
    dropped or added, or the object cut short (``decrypt-failed``). ``on_key`` is told the
    master key id the object's header names, once it is read."""
    buffer = bytearray()
    iterator = iter(chunks)
    head: Header | None = None
    for chunk in iterator:
        buffer += chunk
        head = parse_header(bytes(buffer[:1024]), object_key)
        if head is not None:
            break
    if head is None:
        raise CryptoError("decrypt-failed", f"{object_key} is cut short (no complete header)")
    if on_key is not None:
        on_key(head.key_id)
    master = ring.keys.get(head.key_id)
    if master is None:
        raise CryptoError(
            "key-unavailable",
            f"{object_key} was encrypted with master key {head.key_id}, which this host does "
            f"not have (it has {', '.join(sorted(ring.keys)) or 'none'})",
        )
    aead = AESGCM(master.unwrap(object_key, head.wrapped))
    aad = _aad(head.raw, object_key)
    rest = bytes(buffer[len(head.raw) :])
    for counter, (body, last) in enumerate(_blocks(iterator, head.frame_size + TAG, rest)):
        if last and len(body) < TAG:
            raise CryptoError("decrypt-failed", f"{object_key} is cut short (frame {counter})")
        try:
            yield aead.decrypt(_nonce(head.prefix, counter, last), body, aad)
        except InvalidTag:
            raise CryptoError(
                "decrypt-failed",
                f"{object_key}: frame {counter} does not authenticate (changed, moved, or "
                "the object was cut short)",
            ) from None


def key_id_of(data: bytes, object_key: str) -> str | None:
    """The master key id an object's first bytes name (None: too short to say)."""
    head = parse_header(data, object_key)
    return head.key_id if head is not None else None
