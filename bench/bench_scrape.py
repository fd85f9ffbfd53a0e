"""Scrape latency of pgproof's exporter over a large catalog: 10,000 backups and 100,000
WAL segments (target: median under 50 ms once warm), against re-reading the repository on
every scrape (what an exporter that shells out to a `list`/`check`-style command does).

Printed: the repository build, the exporter's first (cold) index build, warm scrapes over
HTTP (median, p95, max), an incremental refresh after one new segment and one new backup,
the same over S3 (SeaweedFS, smaller by default), the naive full re-read, and ratios.

Usage (as root, after scripts/setup):
  .venv/bin/python -m bench.bench_scrape [--backups 10000] [--wal 100000] [--scrapes 200]
      [--s3-backups 1000] [--s3-wal 10000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from pgproof.backups import catalog, walarchive, walnames
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.backups.storage.s3 import S3Repository
from pgproof.backups.storage.s3options import S3Options
from pgproof.exporters.collector import registry
from pgproof.exporters.exporter import ExportedTarget, Exporter
from pgproof.exporters.http import HttpEndpoint
from pgproof.exporters.scrape import metrics_handler
from pgproof.exporters.settings import ExporterSettings
from pgproof.verifier import records
from tests.support import synthetic
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, seaweed_server
from tests.support.synthetic import Writer


def naive_scrape(repo: Repository, target: str) -> int:
    """Everything re-read: every manifest, every result record, the WAL listing + continuity."""
    entries = catalog.scan(repo, target)
    manifests = catalog.complete_manifests(entries)
    records.newest_per_backup(records.readable(records.read_all(repo, target)))
    listing = walarchive.list_archive(repo, target, walnames.DEFAULT_SEGMENT_SIZE)
    physical = [m for m in manifests if m.kind == "physical" and m.start_wal]
    start = walnames.parse_segment_name(min(physical, key=lambda m: m.started_at).start_wal or "")
    walnames.check_continuity(set(listing.segments), {}, start)
    return len(manifests)


def scrape_times(url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read()
        times.append(time.perf_counter() - began)
    assert b"pgproof_backups" in body
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def measure(
    repo: Repository, label: str, backups: int, wal: int, scrapes: int, w: Writer
) -> dict[str, float]:
    began = time.perf_counter()
    exporter = Exporter(
        [ExportedTarget("main", (repo.name,), None, ("logical", "physical"))],
        [repo],
        ExporterSettings(refresh_seconds=3600),
        "bench",
    )
    exporter.refresh()
    cold = time.perf_counter() - began
    snap = exporter.snapshots()[repo.name]
    assert snap.up, snap.error
    view = snap.targets["main"]
    assert len(view.backups) == backups and view.wal is not None and view.wal.segments == wal
    assert view.wal.missing == 0, view.wal
    endpoint = HttpEndpoint("127.0.0.1:0", {"/metrics": metrics_handler(registry(exporter))})
    endpoint.start()
    try:
        url = f"http://127.0.0.1:{endpoint.address[1]}/metrics"
        scrape_times(url, 5)  # warm-up
        warm = scrape_times(url, scrapes)
        # one new segment and one new backup (as archiving and the next job would add)
        w.wal("main", [wal + 1])
        w.manifest(synthetic.manifest("main", backups + 1, "logical"))
        if isinstance(repo, FilesystemRepository):
            time.sleep(
                2.1
            )  # folders changed within 2 s are re-listed anyway; measure the token path
        began = time.perf_counter()
        exporter.refresh()
        incremental = time.perf_counter() - began
        began = time.perf_counter()
        exporter.refresh()
        unchanged = time.perf_counter() - began
        began = time.perf_counter()
        naive = naive_scrape(repo, "main")
        naive_seconds = time.perf_counter() - began
        assert naive == backups + 1
    finally:
        endpoint.close()
        exporter.close()
    warm.sort()
    median = statistics.median(warm)
    print(f"\n{label}: {backups} backups, {wal} WAL segments, {backups // 10} result records")
    print(f"  exporter first (cold) index build   {ms(cold)}")
    print(
        f"  warm scrape over HTTP ({scrapes})       median {ms(median)}  p95 "
        f"{ms(warm[int(len(warm) * 0.95) - 1])}  max {ms(warm[-1])}"
    )
    print(f"  refresh after +1 segment +1 backup  {ms(incremental)}")
    print(f"  refresh with nothing new            {ms(unchanged)}")
    print(f"  naive full re-read (per scrape)     {ms(naive_seconds)}")
    print(
        f"  ratio warm scrape / naive re-read   {median / naive_seconds:8.4f}x "
        f"({naive_seconds / median:.0f}x faster)"
    )
    print(f"  target: median under 50 ms          {'met' if median < 0.05 else 'NOT met'}")
    return {"median": median, "naive": naive_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backups", type=int, default=10_000)
    parser.add_argument("--wal", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--s3-backups", type=int, default=1_000)
    parser.add_argument("--s3-wal", type=int, default=10_000)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pgproof-benchscrape-"))
    try:
        repo = FilesystemRepository("local", root)
        w = Writer(repo, fs_root=root)
        began = time.perf_counter()
        synthetic.fill(w, "main", args.backups, args.wal)
        print(f"filesystem repository built in {time.perf_counter() - began:.1f} s at {root}")
        measure(repo, "filesystem", args.backups, args.wal, args.scrapes, w)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if args.s3_backups:
        with seaweed_server() as s3:
            s3.make_bucket("bench-scrape")
            repo_s3 = S3Repository(
                "offsite",
                S3Options(
                    bucket="bench-scrape",
                    endpoint_url=s3.endpoint,
                    region="us-east-1",
                    access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY,
                    concurrency=8,
                ),
            )
            w3 = ParallelWriter(repo_s3)
            began = time.perf_counter()
            synthetic.fill(w3, "main", args.s3_backups, args.s3_wal)
            w3.flush()
            print(f"\nS3 repository built in {time.perf_counter() - began:.1f} s")
            measure(
                repo_s3,
                "S3 (SeaweedFS)",
                args.s3_backups,
                args.s3_wal,
                args.scrapes,
                Writer(repo_s3),
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\npeak RSS of this process (exporter + benchmark): {peak / 1024:.0f} MB")
    return 0


class ParallelWriter(Writer):
    """Uploads in 16 threads (building a large S3 repository one PUT at a time takes long)."""

    def __init__(self, repo: Repository):
        super().__init__(repo)
        import concurrent.futures

        self.pool = concurrent.futures.ThreadPoolExecutor(16)
        self.pending: list[concurrent.futures.Future[object]] = []

    def put(self, key: str, data: bytes) -> None:
        self.pending.append(self.pool.submit(self.repo.put_bytes, key, data))

    def flush(self) -> None:
        for f in self.pending:
            f.result()
        self.pool.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
