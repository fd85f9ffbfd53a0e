"""Where things live in a repository (DESIGN.md: repository layout). Import-light."""

from __future__ import annotations


def backups_prefix(target: str) -> str:
    return f"{target}/backups/"


def backup_prefix(target: str, backup_id: str) -> str:
    return f"{target}/backups/{backup_id}/"


def wal_prefix(target: str) -> str:
    return f"{target}/wal/"


def results_prefix(target: str) -> str:
    return f"{target}/results/"


def jobs_prefix(target: str) -> str:
    return f"{target}/jobs/"


def job_status_key(target: str, kind: str) -> str:
    return f"{target}/jobs/{kind}.json"


def wal_verified_key(target: str) -> str:
    """What ``check`` found reading this repository's WAL copies (backups.walverify)."""
    return f"{target}/jobs/wal-verified.json"


def key_registry_key(target: str) -> str:
    """The master key ids that encrypt objects of the target (plain JSON, ids only)."""
    return f"{target}/jobs/keys.json"


def is_key_registry(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[1:] == ["jobs", "keys.json"]


_KEPT_AS_WRITTEN = ("backups", "wal", "results")


def write_once(key: str) -> bool:
    """Backups, archived WAL and restore-test records are written once and never changed
    (Object Lock protects them); job status documents are rewritten by every job."""
    parts = key.split("/")
    return len(parts) >= 3 and parts[1] in _KEPT_AS_WRITTEN
