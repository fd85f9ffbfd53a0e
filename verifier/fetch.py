"""Copying backup files out of a repository, verified against the manifest while streaming."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pgproof.backups import catalog
from pgproof.backups.errors import BackupError, DecryptFailed, ObjectNotFound
from pgproof.backups.progress import Progress
from pgproof.backups.storage.base import Repository
from pgproof.verifier.errors import RepositoryUnavailable, RestoreFailed


def verified_chunks(
    repo: Repository, manifest: catalog.Manifest, entry: catalog.BackupFile, progress: Progress
) -> Iterator[bytes]:
    """The file's bytes; RestoreFailed naming backup and file when size or sha256 differ."""
    key = catalog.backup_prefix(manifest.target, manifest.id) + entry.name
    try:
        for chunk in catalog.read_checked(repo, key, entry):
            progress.advance(len(chunk))
            yield chunk
    except catalog.FileMismatch as exc:
        if exc.truncated:
            raise RestoreFailed(
                f"backup {manifest.id}: file {entry.name} has {exc.found_size} bytes, the "
                f"manifest says {entry.size} (truncated)"
            ) from exc
        raise RestoreFailed(
            f"backup {manifest.id}: file {entry.name} does not match its sha256 (corrupted)"
        ) from exc
    except DecryptFailed as exc:  # encrypted, and the bytes do not authenticate: damage
        raise RestoreFailed(f"backup {manifest.id}: {entry.name}: {exc}") from exc
    except ObjectNotFound as exc:  # the manifest lists it, the repository lacks it: damage
        raise RestoreFailed(f"backup {manifest.id}: {entry.name} is missing: {exc}") from exc
    except BackupError as exc:  # no answer, or no key (key-unavailable): nothing is known
        raise RepositoryUnavailable(
            f"backup {manifest.id}: cannot read {entry.name}: {exc}"
        ) from exc


def download(
    repo: Repository,
    manifest: catalog.Manifest,
    entry: catalog.BackupFile,
    dest: Path,
    progress: Progress,
) -> int:
    """Write one backup file to ``dest`` (verified); returns its size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with tmp.open("wb") as out:
            for chunk in verified_chunks(repo, manifest, entry, progress):
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entry.size
