"""Opening repositories from settings (boto3 is imported only when an S3 one is opened)."""

from __future__ import annotations

import dataclasses
import os

from backups.errors import StorageError
from backups.settings import FilesystemRepoSettings, RepoSettings
from backups.storage.base import Repository
from backups.storage.filesystem import FilesystemRepository


def open_repository(settings: RepoSettings, quick: bool = False) -> Repository:
    """``quick``: fail fast rather than retry (readers such as the exporter, which must tell
    "unreachable" within one refresh instead of retrying for minutes)."""
    if isinstance(settings, FilesystemRepoSettings):
        return FilesystemRepository(settings.name, settings.path)
    options = settings.options
    if quick:
        options = dataclasses.replace(
            options, max_attempts=2, connect_timeout=3.0, read_timeout=15.0
        )
    env_key, env_secret = settings.access_key_id_env, settings.secret_access_key_env
    if env_key or env_secret:
        key = os.environ.get(env_key or "")
        secret = os.environ.get(env_secret or "")
        if not key or not secret:
            missing = env_key if not key else env_secret
            raise StorageError(settings.name, f"environment variable {missing} is not set")
        options = dataclasses.replace(options, access_key_id=key, secret_access_key=secret)
    from backups.storage.s3 import S3Repository

    return S3Repository(settings.name, options)


def open_all(settings: tuple[RepoSettings, ...], quick: bool = False) -> list[Repository]:
    return [open_repository(s, quick) for s in settings]
