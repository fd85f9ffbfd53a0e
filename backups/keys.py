"""Master keys for client-side encryption, loaded from a repository's settings (issue 15).

A key file or environment variable holds the base64 of 32 random bytes (``pgproof keys
generate --type master``); a key file readable by its group or others is refused. A KMS key
is named by its ARN. Errors name the file, variable or ARN, never a key.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from pgproof.backups import crypto
from pgproof.backups.errors import BackupError
from pgproof.backups.settings import EncryptionSettings, MasterKeySource


class KeySetupError(BackupError):
    """A key that cannot be loaded: missing, unreadable, readable by others, malformed."""


def read_private(path: str, what: str) -> bytes:
    """The bytes of a private key file, refused when its group or others may read it."""
    try:
        st = os.stat(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeySetupError(
                f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                "chmod 600 it"
            )
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeySetupError(f"{what} {path}: {exc.strerror or exc}") from None


def _master(raw: bytes, where: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise KeySetupError(
            f"{where} does not hold a master key (the base64 of 32 bytes: "
            "pgproof keys generate --type master)"
        )
    return key


def load_key(
    source: MasterKeySource,
    kms_endpoint_url: str | None = None,
    credentials: tuple[str, str] | None = None,
) -> crypto.KeyWrapper:
    if source.key_file:
        raw = read_private(source.key_file, "master key file")
        return crypto.LocalKey(_master(raw, f"master key file {source.key_file}"))
    if source.key_env:
        value = os.environ.get(source.key_env)
        if value is None:
            raise KeySetupError(f"environment variable {source.key_env} is not set")
        return crypto.LocalKey(_master(value.encode(), f"environment variable {source.key_env}"))
    from pgproof.backups.kms import KmsKey

    return KmsKey(str(source.kms_key_id), kms_endpoint_url, credentials)


def ring_of(
    settings: EncryptionSettings, credentials: tuple[str, str] | None = None
) -> crypto.KeyRing:
    """The repository's key ring: the current key first, then the previous ones. A KMS
    key is not called here: a deleted or disabled one is named (key-unavailable) by the
    first object that needs it. ``credentials`` reach KMS (the S3 repository's own)."""
    current = load_key(settings.current, settings.kms_endpoint_url, credentials)
    older = [load_key(s, settings.kms_endpoint_url, credentials) for s in settings.previous]
    return crypto.KeyRing.wrapping(current, *older)
