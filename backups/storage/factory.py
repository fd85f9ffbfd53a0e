"""Opening repositories from settings (boto3 is imported only when an S3 one is opened)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence

from pgproof.backups.errors import StorageError
from pgproof.backups.settings import FilesystemRepoSettings, RepoSettings, S3RepoSettings
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.filesystem import FilesystemRepository


def open_repository(settings: RepoSettings, quick: bool = False) -> Repository:
    """``quick``: fail fast rather than retry (readers such as the exporter, which must tell
    "unreachable" within one refresh instead of retrying for minutes). A repository with
    ``encryption`` is opened with its master keys (StorageError when one cannot be loaded)."""
    backend = _backend(settings, quick)
    if settings.encryption is None:
        return backend
    from pgproof.backups.keys import KeySetupError, ring_of
    from pgproof.backups.storage.encrypted import EncryptedRepository

    credentials = None
    if isinstance(settings, S3RepoSettings) and settings.access_key_id_env:
        credentials = _credentials(settings)
    try:
        ring = ring_of(settings.encryption, credentials)
    except KeySetupError as exc:
        backend.close()
        raise StorageError(settings.name, str(exc)) from None
    return EncryptedRepository(backend, ring)


def _backend(settings: RepoSettings, quick: bool) -> Repository:
    if isinstance(settings, FilesystemRepoSettings):
        return FilesystemRepository(settings.name, settings.path)
    options = settings.options
    if quick:
        options = dataclasses.replace(
            options, max_attempts=2, connect_timeout=3.0, read_timeout=15.0
        )
    if settings.access_key_id_env or settings.secret_access_key_env:
        key, secret = _credentials(settings)
        options = dataclasses.replace(options, access_key_id=key, secret_access_key=secret)
    from pgproof.backups.storage.s3 import S3Repository

    return S3Repository(settings.name, options)


def _credentials(settings: S3RepoSettings) -> tuple[str, str]:
    env_key, env_secret = settings.access_key_id_env, settings.secret_access_key_env
    key = os.environ.get(env_key or "")
    secret = os.environ.get(env_secret or "")
    if not key or not secret:
        missing = env_key if not key else env_secret
        raise StorageError(settings.name, f"environment variable {missing} is not set")
    return key, secret


def open_all(settings: Sequence[RepoSettings], quick: bool = False) -> list[Repository]:
    """Every repository opened, or none: those already opened are closed when one fails."""
    repos: list[Repository] = []
    try:
        for s in settings:
            repos.append(open_repository(s, quick))
    except BaseException:
        close_all(repos)
        raise
    return repos


def close_all(repos: Sequence[Repository]) -> None:
    for repo in repos:
        repo.close()


@contextlib.contextmanager
def opened(settings: Sequence[RepoSettings], quick: bool = False) -> Iterator[list[Repository]]:
    """The repositories, closed when the block ends however it ends."""
    repos = open_all(settings, quick)
    try:
        yield repos
    finally:
        close_all(repos)
