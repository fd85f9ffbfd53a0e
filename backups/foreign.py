"""Backups another tool makes, behind one small seam: the name a source goes by and
``pgproof check`` of it (its backups as the tool lists them, their WAL, the tool's own
integrity check). The restore side is ``verifier.foreign``. A new source (WAL-G) adds a
settings class, a module like ``pgbackrest`` or ``filesource`` and a branch here."""

from __future__ import annotations

import datetime as dt

from pgproof.backups import barmancloud, filesource, pgbackrest, pgbackresthealth
from pgproof.backups.health import HealthReport
from pgproof.backups.kinds import KINDS
from pgproof.backups.runner import Runner
from pgproof.backups.settings import BarmanCloudSettings, FilesSettings, ForeignSettings


def where(settings: ForeignSettings) -> str:
    """``pgbackrest:main/repo2``, ``files:cronbox``, ``barman-cloud:pg``."""
    if isinstance(settings, FilesSettings):
        return filesource.where(settings)
    if isinstance(settings, BarmanCloudSettings):
        return barmancloud.where(settings)
    return pgbackrest.where(settings)


def expected_kinds(settings: ForeignSettings) -> tuple[str, ...]:
    """The kinds of backup the source is expected to hold (a missing one alerts); () when
    they are whatever is found."""
    if isinstance(settings, FilesSettings):
        return tuple(k for k in KINDS if k in settings.kinds)
    return ("physical",)


def health(
    settings: ForeignSettings,
    runner: Runner,
    target: str,
    max_backup_age_seconds: float,
    now: dt.datetime | None = None,
    verify: bool = True,
) -> HealthReport:
    """``pgproof check`` of the source (``verify``: also read what it stores through)."""
    if isinstance(settings, FilesSettings):
        return filesource.health(settings, target, max_backup_age_seconds, now, verify)
    if isinstance(settings, BarmanCloudSettings):
        return barmancloud.health(settings, runner, target, max_backup_age_seconds, now, verify)
    return pgbackresthealth.health(settings, runner, target, max_backup_age_seconds, now, verify)
