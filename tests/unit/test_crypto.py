"""Client-side encryption's framing (issue 15): round trips of every size around the frame
boundary, and every kind of tampering named as decrypt-failed, a missing master key as
key-unavailable, never a plaintext that passes."""

from __future__ import annotations

import os

import pytest

from pgproof.backups import crypto
from pgproof.backups.crypto import CryptoError, KeyRing

RING = KeyRing.of(b"k" * 32)
FRAME = 64


def _enc(
    data: bytes, key: str = "main/wal/000000010000000000000001", ring: KeyRing = RING
) -> bytes:
    return b"".join(
        crypto.encrypt([data[i : i + 7] for i in range(0, len(data), 7)], key, ring, FRAME)
    )


def _dec(
    blob: bytes, key: str = "main/wal/000000010000000000000001", ring: KeyRing = RING
) -> bytes:
    return b"".join(crypto.decrypt([blob[i : i + 13] for i in range(0, len(blob), 13)], key, ring))


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 5])
def test_round_trips_around_frame_boundaries(size: int) -> None:
    data = os.urandom(size)
    blob = _enc(data)
    assert _dec(blob) == data
    assert data[:16] not in blob or size < 16  # nothing of the plaintext in the clear


def _failed(blob: bytes, key: str = "main/wal/000000010000000000000001") -> CryptoError:
    with pytest.raises(CryptoError) as info:
        _dec(blob, key)
    return info.value


def test_tampering_is_decrypt_failed_naming_the_object() -> None:
    data = os.urandom(3 * FRAME + 10)
    blob = _enc(data)
    head = len(crypto.parse_header(blob, "x").raw)  # type: ignore[union-attr]
    sealed = FRAME + crypto.TAG
    flipped = bytearray(blob)
    flipped[head + FRAME + 3] ^= 1
    frames = [blob[head + i * sealed : head + (i + 1) * sealed] for i in range(4)]
    cases = {
        "flipped byte": bytes(flipped),
        "truncated mid-frame": blob[:-5],
        "last frame dropped": blob[: head + 3 * sealed],
        "frames swapped": blob[:head] + frames[1] + frames[0] + frames[2] + frames[3],
        "extended": blob + b"\0" * 20,
        "header only": blob[:head],
        "cut in the header": blob[: head - 3],
    }
    for name, bad in cases.items():
        error = _failed(bad)
        assert error.reason == "decrypt-failed", name
        assert "main/wal/000000010000000000000001" in str(error), name


def test_an_object_swapped_with_another_or_renamed_fails() -> None:
    a = _enc(b"segment a" * 30, "main/wal/000000010000000000000001")
    assert _failed(a, "main/wal/000000010000000000000002").reason == "decrypt-failed"


def test_a_missing_or_wrong_master_key() -> None:
    blob = _enc(b"x" * 100)
    other = KeyRing.of(b"o" * 32)
    with pytest.raises(CryptoError) as missing:
        _dec(blob, ring=other)
    assert missing.value.reason == "key-unavailable"
    assert crypto.key_id(b"k" * 32) in str(missing.value)
    assert "kkkk" not in str(missing.value) and "kkkk" not in repr(other)
    # a different key under the same id cannot exist by construction; a ring whose key
    # was replaced in place (a corrupted key file) fails to unwrap
    impostor = crypto.LocalKey(b"z" * 32)
    impostor.key_id = RING.current  # another key claiming the id
    forged = KeyRing({RING.current: impostor}, RING.current)
    with pytest.raises(CryptoError) as wrong:
        _dec(blob, ring=forged)
    assert wrong.value.reason == "decrypt-failed"


def test_rotation_reads_old_objects_and_writes_with_the_new_key() -> None:
    old = KeyRing.of(b"o" * 32)
    blob = _enc(b"old data", ring=old)
    rotated = KeyRing.of(b"n" * 32, b"o" * 32)
    assert _dec(blob, ring=rotated) == b"old data"
    fresh = _enc(b"new data", ring=rotated)
    assert crypto.key_id_of(fresh, "x") == crypto.key_id(b"n" * 32)
    assert crypto.key_id_of(blob, "x") == crypto.key_id(b"o" * 32)


def test_not_an_encrypted_object() -> None:
    assert _failed(b"plain zstd bytes...").reason == "decrypt-failed"
