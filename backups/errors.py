"""The exception tree of the ``backups`` package.

BackupError
 +-- CommandError            an external command failed (carries the redacted stderr tail)
 |    +-- CommandTimeout     ... or ran past its timeout and was killed
 +-- BinaryNotFound          no PostgreSQL binaries for a major version
 +-- SourceError             the source database could not be reached or queried
 +-- StorageError            a repository operation failed (names the repository)
 |    +-- ObjectNotFound     the object does not exist
 |    +-- IntegrityError     stored bytes do not match their recorded size/sha256
 |    +-- KeyUnavailable     an encrypted object's master key is not here (key-unavailable)
 |    +-- DecryptFailed      an encrypted object does not authenticate (decrypt-failed)
 +-- WalError                a WAL file name or archive rule was violated
 |    +-- WalConflict        same WAL name, different bytes: refused, nothing overwritten
 +-- CatalogError            a manifest is malformed or inconsistent
 +-- LockHeld                another job holds the target's lock
 +-- BackupFailed            a backup job did not complete in every repository
"""

from __future__ import annotations


class BackupError(Exception):
    """Root of every error raised on purpose by the backups package."""


class CommandError(BackupError):
    def __init__(self, argv: list[str], returncode: int | None, stderr_tail: str, why: str = ""):
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        prog = argv[0].rsplit("/", 1)[-1] if argv else "?"
        what = why or f"exited with status {returncode}"
        msg = f"{prog} {what}"
        if stderr_tail.strip():
            msg += f": {stderr_tail.strip()}"
        super().__init__(msg)


class CommandTimeout(CommandError):
    pass


class BinaryNotFound(BackupError):
    pass


class SourceError(BackupError):
    pass


class StorageError(BackupError):
    def __init__(self, repository: str, message: str):
        self.repository = repository
        self.detail = message  # without the repository's name
        super().__init__(f"repository {repository!r}: {message}")


class ObjectNotFound(StorageError):
    pass


class IntegrityError(StorageError):
    pass


class KeyUnavailable(StorageError):
    """An encrypted object needs a master key this host does not have (or KMS refuses it):
    nothing is known of the object, an ``error``, never ``failed``."""

    reason = "key-unavailable"


class DecryptFailed(StorageError):
    """An encrypted object does not authenticate with the key that wrapped it: its bytes
    were changed, cut short, moved or swapped (evidence of damage)."""

    reason = "decrypt-failed"


class WalError(BackupError):
    pass


class WalConflict(WalError):
    pass


class CatalogError(BackupError):
    pass


class LockHeld(BackupError):
    pass


class BackupFailed(BackupError):
    pass
