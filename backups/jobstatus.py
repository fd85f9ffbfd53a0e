"""The outcome of the last backup job of each kind: ``<target>/jobs/<kind>.json``.

A backup that failed leaves no manifest, so the catalog alone cannot tell "failed last night"
from "not run yet". Every backup job ends by writing this small record into each repository
it can reach (best effort: a repository that refuses it is skipped, the others get it); the
exporter and the alerts read it for ``pgproof_backup_last_status``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pgproof.backups.errors import BackupError
from pgproof.backups.layout import job_status_key
from pgproof.backups.storage.base import Repository

Status = Literal["ok", "partial", "failed"]


@dataclass(frozen=True)
class JobStatus:
    target: str
    kind: str
    status: Status  # ok: in every repository; partial: some repository failed; failed: none
    started_at: str
    finished_at: str
    backup_id: str | None = None
    error: str = ""
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobStatus:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("status") not in ("ok", "partial", "failed"):
            raise ValueError("not a job status record")
        return cls(
            target=str(raw["target"]),
            kind=str(raw["kind"]),
            status=raw["status"],
            started_at=str(raw["started_at"]),
            finished_at=str(raw["finished_at"]),
            backup_id=raw.get("backup_id"),
            error=str(raw.get("error") or ""),
            host=str(raw.get("host") or ""),
        )


def record(repos: Sequence[Repository], status: JobStatus) -> list[str]:
    """Write the status into every repository; returns the names of those that refused it."""
    status = JobStatus(**{**asdict(status), "host": status.host or socket.gethostname()})
    refused = []
    data = status.to_json()
    for repo in repos:
        try:
            repo.put_bytes(job_status_key(status.target, status.kind), data)
        except (BackupError, OSError):
            refused.append(repo.name)
    return refused
