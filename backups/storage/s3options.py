"""S3 repository options (kept apart from boto3 so that reading config stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True)
class S3Options:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    sse: str | None = None  # "AES256" or "aws:kms"
    kms_key_id: str | None = None
    storage_class: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    profile: str | None = None
    part_size: int = 16 * 1024 * 1024
    concurrency: int = 3
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    force_path_style: bool = True
    # Object Lock: every object written with this retention mode and a retain-until date
    # lock_days ahead (None: no lock); the bucket must have Object Lock enabled
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE
    lock_days: int = 0
