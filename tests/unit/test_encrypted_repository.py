"""The encrypted repository around a filesystem one (issue 15): callers see plaintext sizes
and hashes, nothing is stored in the clear but the key registry, a plaintext object slipped
in is refused, and master keys are loaded only from private files or the environment."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from pgproof.backups import crypto, keys
from pgproof.backups.errors import DecryptFailed, KeyUnavailable
from pgproof.backups.keyregistry import KeyRegistry, RegisteredKey
from pgproof.backups.settings import EncryptionSettings, MasterKeySource
from pgproof.backups.storage.encrypted import EncryptedRepository
from pgproof.backups.storage.filesystem import FilesystemRepository

FIRST, SECOND = b"1" * 32, b"2" * 32


def repo_at(root: Path, *masters: bytes) -> EncryptedRepository:
    return EncryptedRepository(FilesystemRepository("local", root), crypto.KeyRing.of(*masters))


def test_plaintext_sizes_and_hashes_to_callers_ciphertext_at_rest(tmp_path: Path) -> None:
    repo = repo_at(tmp_path, FIRST)
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored = repo.put("main/backups/b1/base.tar", [data[:1000], data[1000:]])
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    at_rest = (tmp_path / "main/backups/b1/base.tar").read_bytes()
    assert at_rest.startswith(crypto.MAGIC) and data[:64] not in at_rest
    assert repo.read_bytes("main/backups/b1/base.tar") == data
    assert repo.key_id_of("main/backups/b1/base.tar") == crypto.key_id(FIRST)
    registry = KeyRegistry.from_json((tmp_path / "main/jobs/keys.json").read_bytes())
    assert registry.keys == {crypto.key_id(FIRST): RegisteredKey(None, "main/backups/b1/base.tar")}


def test_a_plaintext_object_is_refused_and_a_lost_key_named(tmp_path: Path) -> None:
    repo = repo_at(tmp_path, FIRST)
    repo.put_bytes("main/wal/000000010000000000000001", b"x" * 100)
    (tmp_path / "main/wal/000000010000000000000002").write_bytes(b"slipped in, in the clear")
    with pytest.raises(DecryptFailed, match="000000010000000000000002 is not an object pgproof"):
        repo.read_bytes("main/wal/000000010000000000000002")
    rotated = repo_at(tmp_path, SECOND)
    with pytest.raises(KeyUnavailable, match=crypto.key_id(FIRST)):
        rotated.read_bytes("main/wal/000000010000000000000001")
    with pytest.raises(KeyUnavailable, match="e.g. main/wal/000000010000000000000001"):
        rotated.require_keys("main")
    both = repo_at(tmp_path, SECOND, FIRST)
    both.require_keys("main")
    assert both.read_bytes("main/wal/000000010000000000000001") == b"x" * 100


def test_key_registry_refuses_what_it_cannot_read() -> None:
    registry = KeyRegistry({"abc": RegisteredKey(3, "main/wal/x")})
    assert KeyRegistry.from_json(registry.to_json()) == registry
    for bad in (b"[]", b'{"format": 2, "key_ids": {}}', b'{"format": 1, "key_ids": []}', b"{"):
        with pytest.raises(ValueError):
            KeyRegistry.from_json(bad)


def test_master_keys_from_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = base64.b64encode(FIRST).decode()
    key_file = tmp_path / "master.key"
    key_file.write_text(encoded + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("PGPROOF_OLD_KEY", base64.b64encode(SECOND).decode())
    ring = keys.ring_of(
        EncryptionSettings(
            MasterKeySource(key_file=str(key_file)), (MasterKeySource(key_env="PGPROOF_OLD_KEY"),)
        )
    )
    assert ring.current == crypto.key_id(FIRST) and set(ring.keys) == {
        crypto.key_id(FIRST),
        crypto.key_id(SECOND),
    }
    assert encoded not in repr(ring)
    key_file.chmod(0o640)
    with pytest.raises(keys.KeySetupError, match="readable by others \\(mode 640\\)"):
        keys.load_key(MasterKeySource(key_file=str(key_file)))
    monkeypatch.setenv("PGPROOF_BAD_KEY", "c2hvcnQ=")
    with pytest.raises(
        keys.KeySetupError, match="PGPROOF_BAD_KEY does not hold a master key"
    ) as bad:
        keys.load_key(MasterKeySource(key_env="PGPROOF_BAD_KEY"))
    assert "c2hvcnQ" not in str(bad.value)  # never the value
    with pytest.raises(keys.KeySetupError, match="PGPROOF_UNSET is not set"):
        keys.load_key(MasterKeySource(key_env="PGPROOF_UNSET"))


class _Refusing:
    """A KMS client that answers every call with one error (botocore's own classes)."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def encrypt(self, **_: object) -> dict[str, bytes]:
        raise self.exc

    decrypt = encrypt


def test_kms_refusals_are_key_unavailable_and_a_bad_wrapped_key_decrypt_failed() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from pgproof.backups.kms import KmsKey

    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def refused(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "no"}}, "Decrypt")

    cases = {
        refused("KMSInvalidStateException"): "key-unavailable",
        refused("NotFoundException"): "key-unavailable",
        refused("AccessDeniedException"): "key-unavailable",
        EndpointConnectionError(endpoint_url="https://kms"): "key-unavailable",
        refused("InvalidCiphertextException"): "decrypt-failed",
        refused("IncorrectKeyException"): "decrypt-failed",
    }
    for exc, reason in cases.items():
        key = KmsKey(arn, client=_Refusing(exc))
        with pytest.raises(crypto.CryptoError) as info:
            key.unwrap("main/wal/000000010000000000000001", b"wrapped")
        assert info.value.reason == reason, exc
        assert "main/wal/000000010000000000000001" in str(info.value) and arn in str(info.value)
    with pytest.raises(crypto.CryptoError, match="key-unavailable"):
        KmsKey(arn, client=_Refusing(refused("DisabledException"))).wrap("main/x", b"k" * 32)
