"""Typed, frozen settings the backup jobs consume (built by pgproof's config loader)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pgproof.backups.storage.s3options import S3Options


@dataclass(frozen=True)
class MasterKeySource:
    """Where one master key comes from: exactly one of a key file (base64 of 32 bytes, mode
    0600), an environment variable holding the same, or an AWS KMS key (its ARN)."""

    key_file: str | None = None
    key_env: str | None = None
    kms_key_id: str | None = None

    def describe(self) -> str:
        if self.key_file:
            return f"key_file {self.key_file}"
        if self.key_env:
            return f"key_env {self.key_env}"
        return f"kms_key_id {self.kms_key_id}"


@dataclass(frozen=True)
class EncryptionSettings:
    """Client-side encryption of a repository: ``current`` encrypts new objects, ``previous``
    keys still decrypt the objects they encrypted (rotation)."""

    current: MasterKeySource
    previous: tuple[MasterKeySource, ...] = ()
    kms_endpoint_url: str | None = None


@dataclass(frozen=True)
class FilesystemRepoSettings:
    name: str
    path: str
    encryption: EncryptionSettings | None = None


@dataclass(frozen=True)
class S3RepoSettings:
    name: str
    options: S3Options
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    encryption: EncryptionSettings | None = None


RepoSettings = FilesystemRepoSettings | S3RepoSettings


def read_secret(env_name: str | None, file_path: str | None) -> str | None:
    """A password from the environment variable ``env_name`` or the file ``file_path`` (its
    first line), None when neither is set; LookupError with a one-line reason otherwise."""
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise LookupError(f"environment variable {env_name} is not set")
        return value
    if file_path:
        try:
            return Path(file_path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise LookupError(
                f"cannot read password_file {file_path}: {exc.strerror or exc}"
            ) from None
    return None


@dataclass(frozen=True)
class SourceSettings:
    """How to reach the source database. The password never lives here in clear."""

    conninfo: str
    password_env: str | None = None
    password_file: str | None = None
    connect_timeout: int = 10

    def password(self) -> str | None:
        from pgproof.backups.errors import SourceError

        try:
            return read_secret(self.password_env, self.password_file)
        except LookupError as exc:
            raise SourceError(str(exc.args[0])) from None


@dataclass(frozen=True)
class LogicalSettings:
    databases: tuple[str, ...] = ()  # empty: every database that allows connections
    jobs: int = 1  # > 1 uses the directory format (pg_dump -j)
    compression: str = "zstd:3"  # method[:level]; gzip/lz4/zstd/none
    globals: bool = True
    no_role_passwords: bool = False
    timeout_seconds: int = 24 * 3600


@dataclass(frozen=True)
class PhysicalSettings:
    compression: str = "zstd:3"  # compressed by pgproof while streaming; none/gzip/lz4/zstd
    compression_threads: int = 0  # 0: one per core
    checkpoint: str = "fast"  # fast | spread
    max_rate: str | None = None  # pg_basebackup --max-rate
    wal_wait_seconds: int = 300  # how long to wait for the backup's WAL to reach the archive
    timeout_seconds: int = 24 * 3600


@dataclass(frozen=True)
class WalSettings:
    compression_level: int = 1  # zstd level for segments; 0 stores them uncompressed
    push_timeout_seconds: int = 300
    asynchronous: bool = False  # a worker pushes ahead; archive_command waits for its verdict
    spool_dir: str | None = None  # required when asynchronous
    async_workers: int = 4
    async_lookahead: int = 64


@dataclass(frozen=True)
class RetentionSettings:
    full_backups: int | None = None  # keep this many newest backups of each kind
    max_age_days: float | None = None  # ... and none older than this
    min_backups: int = 1  # never fewer than this many of a kind, whatever the age


@dataclass(frozen=True)
class HeartbeatSettings:
    enabled: bool = False
    every_seconds: float = 10.0
    database: str | None = None  # defaults to the conninfo's database


@dataclass(frozen=True)
class PgBackRestSettings:
    """A target whose backups pgBackRest makes (``source: {type: pgbackrest}``): pgproof
    restore-tests them and never writes to that repository."""

    stanza: str
    config: str | None = None  # --config; None: pgBackRest's default (/etc/pgbackrest...)
    repo: int | None = None  # --repo; None: pgBackRest's default (repo1)
    cipher_pass_env: str | None = None  # an environment variable holding the passphrase
    cipher_pass_file: str | None = None  # or a file (its first line)
    binary: str = "pgbackrest"
    # the OS user every pgBackRest command but restore runs as when pgproof is root (the
    # repository's owner; pgBackRest 2.59 refuses root for them); restore runs as pgproof
    user: str = "postgres"


@dataclass(frozen=True)
class FilesSettings:
    """A target whose backups are files cron scripts leave (``source: {type: files}``): dumps,
    ``pg_basebackup -Ft`` folders and a ``cp``-filled WAL folder, in a directory or an S3
    prefix (``repository``, opened read-only: pgproof never writes there)."""

    repository: RepoSettings
    dumps: str = "dumps/"  # custom (.dump[.gz]) and plain (.sql[.gz]) dumps, globals file
    base_backups: str = "base/"  # one folder per pg_basebackup -Ft run
    wal: str = "wal/"  # segments, plain or .gz, as archive_command copied them
    globals_pattern: str = "*globals*"  # the pg_dumpall --globals-only file among the dumps
    timezone: str = "UTC"  # of the times in names (date +%Y%m%d writes local time)
    kinds: tuple[str, ...] = ()  # the kinds the scripts make (alerts when missing); (): found


@dataclass(frozen=True)
class BarmanCloudSettings:
    """A target whose backups barman-cloud (or CloudNativePG's Barman Cloud plugin) keeps in
    an object store (``source: {type: barman-cloud}``): ``repository`` is the S3 location
    (bucket, prefix = barman's destination path, endpoint, credentials), read only."""

    repository: S3RepoSettings
    server: str  # barman's server name (CloudNativePG: the cluster's name)
    bin_dir: str | None = None  # where barman-cloud-* are (None: PATH)


ForeignSettings = PgBackRestSettings | FilesSettings | BarmanCloudSettings


@dataclass(frozen=True)
class TargetSettings:
    name: str
    source: SourceSettings
    repositories: tuple[RepoSettings, ...]
    pg_bin_dir: str | None = None
    logical: LogicalSettings = field(default_factory=LogicalSettings)
    physical: PhysicalSettings = field(default_factory=PhysicalSettings)
    wal: WalSettings = field(default_factory=WalSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    max_backup_age_seconds: float = 26 * 3600
    lock_dir: str = "/run/pgproof"
    # backups made by another tool (None: pgproof's own jobs); repositories then only hold
    # the restore tests' records
    foreign: ForeignSettings | None = None
