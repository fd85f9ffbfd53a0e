"""Restore tests in progress, visible in the repository: ``<target>/leases/<id>.json``.

A restore test on one host reads a backup and the WAL after it while retention on another
host (README's least-privilege set-up: the verifying host is not the backup host) may be
deciding what to delete. A local lock cannot reach across hosts; a lease in the repository
can. The verifier writes one when it has chosen its backup, renews it while it runs, and
deletes it when it ends; retention keeps every backup an unexpired lease names (and so the
WAL from its start). A verifier that dies leaves a lease that expires on its own.

A lease is no permission: a host that may not write it (a read-only repository) still
tests, and a removal it then meets is an ``error`` naming the removal (verifier.run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from pgproof.backups.errors import BackupError
from pgproof.backups.storage.base import Repository


def leases_prefix(target: str) -> str:
    return f"{target}/leases/"


def lease_key(target: str, lease_id: str) -> str:
    return f"{leases_prefix(target)}{lease_id}.json"


@dataclass(frozen=True)
class Lease:
    id: str
    target: str
    backup_id: str
    kind: str
    holder: str  # host:pid of the restore test
    started_at: str
    expires_at: str

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.expires_at.replace("Z", "+00:00"))

    def renewed(self, now: dt.datetime, seconds: float) -> Lease:
        return Lease(**{**asdict(self), "expires_at": _iso(now + dt.timedelta(seconds=seconds))})

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Lease:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a lease")
        lease = cls(**{f: str(raw[f]) for f in cls.__dataclass_fields__})
        lease.expires  # noqa: B018 - an unreadable time is no lease
        return lease


def new_lease(
    target: str, backup_id: str, kind: str, seconds: float, now: dt.datetime | None = None
) -> Lease:
    moment = now or dt.datetime.now(dt.UTC)
    return Lease(
        id=f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}",
        target=target,
        backup_id=backup_id,
        kind=kind,
        holder=f"{socket.gethostname()}:{os.getpid()}",
        started_at=_iso(moment),
        expires_at=_iso(moment + dt.timedelta(seconds=seconds)),
    )


def write(repos: Sequence[Repository], lease: Lease) -> dict[str, str]:
    """Write (or renew) the lease in every repository; {name: why} of those that refused."""
    refused: dict[str, str] = {}
    for repo in repos:
        try:
            repo.put_bytes(lease_key(lease.target, lease.id), lease.to_json())
        except BackupError as exc:
            refused[repo.name] = str(exc)
    return refused


def release(repos: Sequence[Repository], lease: Lease) -> None:
    for repo in repos:
        try:
            repo.delete([lease_key(lease.target, lease.id)])
        except BackupError:
            pass  # it expires on its own


@contextmanager
def held(
    repos: Sequence[Repository], target: str, backup_id: str, kind: str, seconds: float
) -> Iterator[dict[str, str]]:
    """Hold a lease on ``backup_id`` while the block runs: written now, renewed every third
    of ``seconds`` by a thread, deleted at the end. Yields {repository: why} of those that
    refused it (their retention does not see the test; a removal is then judged an error)."""
    lease = new_lease(target, backup_id, kind, seconds)
    refused = write(repos, lease)
    writable = [r for r in repos if r.name not in refused]
    stop = threading.Event()

    def renew() -> None:
        current = lease
        while not stop.wait(seconds / 3):
            current = current.renewed(dt.datetime.now(dt.UTC), seconds)
            refused.update(write(writable, current))

    renewer = threading.Thread(target=renew, name=f"lease-{lease.id}", daemon=True)
    renewer.start()
    try:
        yield refused
    finally:
        stop.set()
        renewer.join()
        release(writable, lease)


def active(
    repo: Repository, target: str, now: dt.datetime, longest: float | None = None
) -> list[Lease]:
    """The unexpired leases of ``target`` in ``repo``; unreadable ones are skipped (a lease
    only ever keeps a backup a while longer: nothing is lost by ignoring a bad one), and so
    is one that runs more than ``longest`` seconds (plus a minute of clock skew) past
    ``now``: no verifier wrote it, and it must not keep a backup forever."""
    found = []
    for info in repo.listing(leases_prefix(target)):
        if not info.key.endswith(".json"):
            continue
        try:
            lease = Lease.from_json(repo.read_bytes(info.key))
        except (BackupError, ValueError, KeyError, TypeError):
            continue
        if lease.target != target or lease.expires <= now:
            continue
        if longest is not None and lease.expires > now + dt.timedelta(seconds=longest + 60):
            continue
        found.append(lease)
    return found


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
