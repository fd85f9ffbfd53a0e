"""The exception tree of the ``verifier`` package.

VerifierError
 +-- SandboxError         a throwaway PostgreSQL could not be made, started or reached
 |    +-- EngineUnavailable    no container engine answers (container sandbox)
 |    +-- SandboxUserError     the sandbox's OS user is missing or owns a real cluster
 |    +-- SandboxExhausted     the sandbox ran out of disk, memory or file descriptors
 +-- RepositoryUnavailable a repository did not answer while the backup was read (error)
 +-- RestoreFailed        the backup itself is bad (checksum, WAL gap, wrong cluster)
 |    +-- DamagedBackup       its manifest is there and cannot be read (found before a sandbox)
 +-- TargetError          the requested backup or PITR target is impossible (a usage error)
      +-- NoBackup            no complete backup of the kind (or with the id) in any repository
"""

from __future__ import annotations


class VerifierError(Exception):
    """Root of every error raised on purpose by the verifier package."""


class SandboxError(VerifierError):
    pass


class EngineUnavailable(SandboxError):
    pass


class SandboxUserError(SandboxError):
    pass


class SandboxExhausted(SandboxError):
    """What the sandbox ran out of (``exhausted``: a verifier.exhaustion.Exhaustion); the
    restore test describes it with the space measured before the sandbox is removed."""

    def __init__(self, message: str, exhausted: object):
        super().__init__(message)
        self.exhausted = exhausted


class RepositoryUnavailable(VerifierError):
    pass


class RestoreFailed(VerifierError):
    pass


class DamagedBackup(RestoreFailed):
    """The backup to test (named, or the newest of its kind) has a manifest that exists and
    is not valid in any repository holding it: damage, with a record, never "no backup"."""

    def __init__(self, message: str, kind: str, backup_id: str, repository: str):
        super().__init__(message)
        self.kind, self.backup_id, self.repository = kind, backup_id, repository


class TargetError(VerifierError):
    pass


class NoBackup(TargetError):
    def __init__(self, message: str, kind: str, backup_id: str | None):
        super().__init__(message)
        self.kind, self.backup_id = kind, backup_id
