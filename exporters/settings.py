"""The exporter's settings (import-light: the config module reads them on every command)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExporterSettings:
    refresh_seconds: float = 15.0  # how often each repository is re-indexed
    full_listing_seconds: float = 300.0  # S3: full listing this often (deletions)
    max_staleness_seconds: float = 120.0  # an index older than this counts as down
    source_timeout_seconds: float = 3.0  # connecting to and querying the source


@dataclass(frozen=True)
class HttpLimits:
    """What one endpoint may spend (``http.*`` in the config)."""

    max_connections: int = 512
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 30.0
    max_header_bytes: int = 16384
    max_headers: int = 100
    metrics_threads: int = 2
    other_threads: int = 2


@dataclass(frozen=True)
class AlertLimits:
    """What counts as too old, stalled or behind for one target. The alert conditions
    (``alerts.conditions``) judge by these, the exporter publishes each as a gauge of the same
    name (``pgproof_<name>``, its help text below) for the Prometheus rules, and the config
    sets them (``alerts.*``, a target's ``max_backup_age``)."""

    backup_max_age_seconds: float = field(
        default=26 * 3600, metadata={"doc": "Configured maximum age of the newest backup."}
    )
    restore_test_max_age_seconds: float = field(
        default=3 * 86400, metadata={"doc": "Configured maximum age of the newest passed test."}
    )
    wal_stalled_after_seconds: float = field(
        default=15 * 60,
        metadata={
            "doc": "Configured time without archival, with a backlog, after which archiving "
            "counts as stalled."
        },
    )
    wal_backlog_max_files: int = field(
        default=32, metadata={"doc": "Configured .ready backlog that counts as falling behind."}
    )
