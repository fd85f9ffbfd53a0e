"""The exporter's index over a real S3 server: incremental listings after the newest known
keys, segments that arrive out of order, gaps confirmed by a full listing, deletions."""

from __future__ import annotations

import secrets

import pytest

from pgproof.backups import walnames
from pgproof.backups.layout import wal_prefix
from pgproof.backups.storage.s3 import S3Repository
from pgproof.backups.storage.s3options import S3Options
from pgproof.exporters.folders import RELIST_OVERLAP
from pgproof.exporters.index import RepoIndex
from tests.support import synthetic
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.support.synthetic import Writer

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _repo(seaweed: SeaweedS3) -> S3Repository:
    bucket = f"pgproof-idx-{secrets.token_hex(4)}"
    seaweed.make_bucket(bucket)
    return S3Repository(
        "offsite",
        S3Options(
            bucket=bucket,
            endpoint_url=seaweed.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            max_attempts=2,
        ),
    )


def _wal_key(segno: int) -> str:
    return f"{wal_prefix('main')}{walnames.segment_name(1, segno)}.zst"


def test_incremental_listing_out_of_order_and_late_segments(seaweed: SeaweedS3) -> None:
    repo = _repo(seaweed)
    w = Writer(repo)
    w.manifest(synthetic.manifest("main", 1, "physical", start_segno=1))
    total = RELIST_OVERLAP + 100
    w.wal("main", (n for n in range(1, total + 1) if n != 50))  # 50 comes late
    index = RepoIndex(repo, ["main"], full_listing_seconds=3600)
    view = index.refresh().targets["main"]
    assert view.wal is not None and view.wal.missing == 1
    assert view.wal.first_missing == (walnames.segment_name(1, 50),)

    w.wal("main", [50])  # far behind the newest: only a full listing sees it
    view = index.refresh().targets["main"]
    assert view.wal is not None and view.wal.missing == 0 and view.wal.segments == total

    w.wal("main", [total + 2])  # parallel pushes: N+2 lands before N+1
    view = index.refresh().targets["main"]
    assert view.wal is not None and view.wal.missing == 1
    w.wal("main", [total + 1])
    view = index.refresh().targets["main"]
    assert view.wal is not None and view.wal.missing == 0
    assert view.wal.newest == walnames.segment_name(1, total + 2)


def test_deletions_are_seen_by_the_periodic_full_listing(seaweed: SeaweedS3) -> None:
    repo = _repo(seaweed)
    w = Writer(repo)
    made = synthetic.fill(w, "main", backups=4, wal_segments=40, records_every=1)
    index = RepoIndex(repo, ["main"], full_listing_seconds=0)
    view = index.refresh().targets["main"]
    assert len(view.backups) == 4 and len(view.records) == 4
    oldest = made[0]
    repo.delete(i.key for i in repo.listing(f"main/backups/{oldest.id}/"))
    repo.delete(_wal_key(n) for n in range(1, 5))
    view = index.refresh().targets["main"]
    assert oldest.id not in {b.id for b in view.backups}
    assert view.wal is not None and view.wal.segments == 36
