"""The exporter's settings (import-light: the config module reads them on every command)."""

from __future__ import annotations

from dataclasses import dataclass


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
