"""The exporter's settings (import-light: the config module reads them on every command)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExporterSettings:
    refresh_seconds: float = 15.0  # how often each repository is re-indexed
    full_listing_seconds: float = 300.0  # S3: full listing this often (deletions)
    max_staleness_seconds: float = 120.0  # an index older than this counts as down
    source_timeout_seconds: float = 3.0  # connecting to and querying the source
