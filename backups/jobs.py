"""What every backup job shares: outcome records, pipe reading, per-repository bookkeeping."""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from pgproof.backups import catalog
from pgproof.backups.errors import BackupError, BackupFailed
from pgproof.backups.fanout import FanoutResult
from pgproof.backups.progress import NullProgress, Progress
from pgproof.backups.runner import Runner
from pgproof.backups.settings import TargetSettings
from pgproof.backups.source import Source
from pgproof.backups.storage.base import Repository

PIPE_CHUNK = 1024 * 1024


def read_pipe(pipe: IO[bytes], chunk_size: int = PIPE_CHUNK) -> Iterator[bytes]:
    read = getattr(pipe, "read1", pipe.read)
    while chunk := read(chunk_size):
        yield chunk


@dataclass(frozen=True)
class BackupOutcome:
    manifest: catalog.Manifest
    stored_in: tuple[str, ...]
    failed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class RepoSet:
    """The repositories a job still writes to, and why the others were dropped."""

    active: list[Repository]
    failed: dict[str, str] = field(default_factory=dict)

    def absorb(self, result: FanoutResult) -> None:
        for name, error in result.failed.items():
            self.drop(name, str(error))

    def drop(self, name: str, why: str) -> None:
        self.failed.setdefault(name, why)
        self.active = [r for r in self.active if r.name != name]
        if not self.active:
            raise BackupFailed("every repository failed: " + "; ".join(self.failed.values()))


def commit(
    all_repos: Sequence[Repository], repos: RepoSet, manifest: catalog.Manifest
) -> BackupOutcome:
    """Write the manifest, the commit mark, last; clean what failed repositories hold.

    A manifest lists exactly the repositories that hold the complete backup: when one fails
    at its manifest write, the manifests already written elsewhere are written again
    without it (until no write fails), so no repository's view claims a copy that is not
    there."""
    written: dict[str, tuple[str, ...]] = {}
    while True:
        current = dataclasses.replace(manifest, repositories=tuple(r.name for r in repos.active))
        dropped = False
        for repo in list(repos.active):
            if written.get(repo.name) == current.repositories:
                continue
            try:
                catalog.write_manifest(repo, current)
                written[repo.name] = current.repositories
            except Exception as exc:  # noqa: BLE001 - StorageError or an OS-level failure
                repos.drop(repo.name, str(exc))  # BackupFailed when it was the last one
                dropped = True
        if not dropped:
            break
    remove_partial([r for r in all_repos if r.name in repos.failed], manifest.target, manifest.id)
    return BackupOutcome(current, tuple(r.name for r in repos.active), dict(repos.failed))


def remove_partial(repos: Sequence[Repository], target: str, backup_id: str) -> None:
    """Best effort: delete what a failed job wrote (without a manifest it is invisible)."""
    prefix = catalog.backup_prefix(target, backup_id)
    for repo in repos:
        with contextlib.suppress(BackupError):
            repo.delete([i.key for i in repo.listing(prefix)])


def clear_leftovers(repos: Sequence[Repository], target: str) -> list[str]:
    """Under the target's lock: remove incomplete backup directories and stale temp writes."""
    removed: list[str] = []
    for repo in repos:
        try:
            for entry in catalog.scan(repo, target, read=False):
                if catalog.backup_prefix(target, entry.id) + catalog.MANIFEST_NAME in entry.keys:
                    continue
                repo.delete(entry.keys)
                removed.append(f"{repo.name}:{entry.id}")
            removed += [
                f"{repo.name}:{k}"
                for k in repo.cleanup_incomplete(catalog.backups_prefix(target), 0)
            ]
            removed += [
                f"{repo.name}:{k}"
                for k in repo.cleanup_incomplete(catalog.wal_prefix(target), 3600)
            ]
        except BackupError:
            continue  # an unreachable repository fails the job itself, with a clear message
    return removed


class BackupJob(ABC):
    """What a backup job is made with (``backups.logical``, ``backups.physical``); run once."""

    def __init__(
        self,
        target: TargetSettings,
        repos: Sequence[Repository],
        runner: Runner,
        pgproof_version: str,
        progress: Progress | None = None,
    ):
        self.target = target
        self.repos = list(repos)
        self.source = Source(target.source, runner)
        self.runner = self.source.runner
        self.version = pgproof_version
        self.progress = progress or NullProgress()

    @abstractmethod
    def run(self) -> BackupOutcome: ...
