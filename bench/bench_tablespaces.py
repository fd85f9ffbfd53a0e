"""Physical backups of a source with tablespaces: pgproof against pg_basebackup and
pgBackRest in one run, and the staging disk pgproof needs while pg_basebackup writes.

Usage (as root, after scripts/setup; pgBackRest from Debian):
    .venv/bin/python -m bench.bench_tablespaces [--scale 50]

A PostgreSQL 15 source with pgbench data is backed up twice by each tool: first with every
table in pg_default (pgproof streams one tar through a pipe), then with pgbench_accounts and
its index moved into a tablespace (pgproof reads pg_basebackup's per-tablespace archives
while they are written). Prints times, sizes, ratios, pgproof's peak RSS, and the peak disk
the staging directory held (allocated blocks, sampled every 50 ms) against the backup's size;
then a physical restore test of each backup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_backup import (
    as_postgres,
    bench_source,
    du,
    mb,
    pgbackrest_conf,
    raw_physical,
    row,
)
from tests.support.fixtures import PGPROOF
from tests.support.pgcluster import Cluster, private_dir


class StagingWatch:
    """The peak of allocated bytes under $TMPDIR/pgproof-basebackup-* while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        root = Path(tempfile.gettempdir())
        while not self._stop.wait(0.05):
            used = 0
            for staging in root.glob("pgproof-basebackup-*"):
                for dirpath, _dirs, files in os.walk(staging):
                    for name in files:
                        try:
                            used += os.stat(os.path.join(dirpath, name)).st_blocks * 512
                        except OSError:
                            continue
            self.peak = max(self.peak, used)

    def __enter__(self) -> StagingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def source_size(cluster: Cluster) -> int:
    return int(cluster.sql("select sum(pg_database_size(oid)) from pg_database")[0][0])


def drained(cluster: Cluster) -> None:
    """Wait until the archiver has caught up (moving a table writes its size in WAL, and
    pg_basebackup -X none waits for the backup's last segment to be archived)."""
    last = cluster.switch_wal()
    deadline = time.monotonic() + 600
    while cluster.sql("select last_archived_wal from pg_stat_archiver")[0][0] != last:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{last} not archived after 600 s")
        time.sleep(0.2)


def backups(cluster: Cluster, config: Path, base: Path, conf: Path, label: str) -> None:
    print(f"\n{label}")
    seconds_bb, size_bb, seconds_br, size_br = raw_physical(cluster, base, conf)
    before = du(base / "repo")
    with StagingWatch() as staging:
        seconds_pp, rss = as_postgres([PGPROOF, "--config", str(config), "backup", "physical"])
    size_pp = du(base / "repo") - before
    row("pg_basebackup -Ft client-zstd:3 > dir", seconds_bb, size_bb, seconds_bb)
    row("pgBackRest full (zst, process-max 2)", seconds_br, size_br, seconds_bb)
    row("pgproof backup physical (zstd:3, filesystem)", seconds_pp, size_pp, seconds_bb)
    print(
        f"  pgproof/pg_basebackup {seconds_pp / seconds_bb:.2f}x, pgproof/pgBackRest "
        f"{seconds_pp / seconds_br:.2f}x; pgproof peak RSS {rss / 1024:.0f} MB; staging disk "
        f"peak {mb(staging.peak)} ({staging.peak / source_size(cluster):.3f}x the source's size)",
        flush=True,
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [PGPROOF, "--config", str(config), "verify", "--kind", "physical", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    record = json.loads(proc.stdout)["results"][0]
    print(
        f"  restore test: {record['verdict']} in {time.perf_counter() - started:.1f} s "
        f"(fetch {record['phases'].get('fetch', 0):.1f} s, recovery "
        f"{record['phases'].get('recovery', 0):.1f} s, checks "
        f"{record['phases'].get('checks', 0):.1f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=50)
    args = parser.parse_args()
    with bench_source(args.scale, "pgproof-bench-ts-", None) as (base, cluster, config):
        doc = config.read_text().replace("enabled: true", "enabled: false")  # no heartbeat
        config.write_text(doc)
        conf = pgbackrest_conf(cluster, base)
        drained(cluster)
        backups(cluster, config, base, conf, "every table in pg_default (one tar, piped)")
        space = private_dir("pgproof-bench-space-")
        try:
            cluster.sql(f"create tablespace bench location '{space}'")
            cluster.sql("alter table pgbench_accounts set tablespace bench")
            cluster.sql("alter index pgbench_accounts_pkey set tablespace bench")
            cluster.sql("checkpoint")
            drained(cluster)
            moved = cluster.sql("select pg_tablespace_size('bench')")[0][0]
            backups(
                cluster,
                config,
                base,
                conf,
                f"pgbench_accounts in a tablespace ({mb(moved)}; archives read while written)",
            )
        finally:
            shutil.rmtree(space, ignore_errors=True)


if __name__ == "__main__":
    main()
