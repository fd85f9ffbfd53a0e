"""Signed restore-test records (issue 15): an Ed25519 key held only by the verifying host
signs each record; ``report --verify-chain`` checks the signatures with the public keys the
config trusts, so that someone who can write ``results/`` (and recompute the hash chain)
still cannot forge a clean history.

Key files are PEM: the private key PKCS#8 (refused when others can read it), the public key
SubjectPublicKeyInfo. A key is named by its id (the first 16 hex digits of the sha256 of its
raw public bytes) in records and by its file's name in reports. Rotation: a new signing key
signs from now on; the old public key stays in ``trusted_keys`` for the records it signed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pgproof.verifier.errors import VerifierError
from pgproof.verifier.records import ResultRecord, Signature

ALGORITHM = "ed25519"
State = Literal["signed", "unsigned", "unknown-key", "forged"]


class SigningKeyError(VerifierError):
    """A key file that cannot be used (missing, readable by others, not a key of the kind)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_private_file(path: str) -> bytes:
    from pgproof.backups.keys import KeySetupError, read_private

    try:
        return read_private(path, "signing key")
    except KeySetupError as exc:
        raise SigningKeyError(str(exc)) from None


def load_private(path: str) -> Ed25519PrivateKey:
    data = _read_private_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"signing key {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public(path: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise SigningKeyError(f"trusted key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise SigningKeyError(f"trusted key {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"trusted key {path} is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class TrustedKey:
    name: str  # its file's name, as reports show it
    key: Ed25519PublicKey


def trusted(paths: Sequence[str]) -> dict[str, TrustedKey]:
    """key id -> the trusted public key (``verifier.trusted_keys``)."""
    found: dict[str, TrustedKey] = {}
    for path in paths:
        key = load_public(path)
        found[key_id(key)] = TrustedKey(Path(path).name, key)
    return found


@dataclass(frozen=True)
class Trust:
    """What ``report`` checks signatures against (``verifier.trusted_keys``)."""

    keys: Mapping[str, TrustedKey]
    unsigned_before: str | None = None  # ISO: older records may be unsigned


def trust_of(paths: Sequence[str], unsigned_before: str | None) -> Trust | None:
    """The config's trust (None when it trusts no key: signatures are not checked)."""
    return Trust(trusted(paths), unsigned_before) if paths else None


def sign(record: ResultRecord, key: Ed25519PrivateKey) -> ResultRecord:
    unsigned = dataclasses.replace(record, signature=None)
    value = key.sign(unsigned.payload())
    return dataclasses.replace(
        record,
        signature=Signature(key_id(key.public_key()), base64.b64encode(value).decode(), ALGORITHM),
    )


@dataclass(frozen=True)
class SignatureCheck:
    state: State
    signer: str  # the trusted key's name, or the key id the record names
    detail: str


def check(
    record: ResultRecord | None, payload: bytes | None, keys: Mapping[str, TrustedKey]
) -> SignatureCheck:
    """Whether a stored record (``payload``: what its signature covers, from the stored
    document) carries a valid signature by a trusted key."""
    if record is None or payload is None:
        return SignatureCheck("forged", "", "the record does not read: it cannot be vouched for")
    sig = record.signature
    if sig is None:
        return SignatureCheck("unsigned", "", "no signature")
    if sig.algorithm != ALGORITHM:
        return SignatureCheck("unknown-key", sig.key_id, f"signature algorithm {sig.algorithm!r}")
    trusted_key = keys.get(sig.key_id)
    if trusted_key is None:
        return SignatureCheck("unknown-key", sig.key_id, f"signed by key {sig.key_id}, not trusted")
    try:
        trusted_key.key.verify(base64.b64decode(sig.value, validate=True), payload)
    except (InvalidSignature, ValueError):
        return SignatureCheck(
            "forged",
            trusted_key.name,
            f"the signature by {trusted_key.name} does not match the record's content",
        )
    return SignatureCheck("signed", trusted_key.name, f"signed by {trusted_key.name}")


def generate(out: Path) -> tuple[Path, Path]:
    """A new signing key pair: ``out`` (private, 0600) and ``out.pub``; refuses to overwrite."""
    public = out.with_name(out.name + ".pub")
    for path in (out, public):
        if path.exists():
            raise SigningKeyError(f"{path} exists: pgproof never overwrites a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    public.chmod(0o644)
    return out, public
