"""pgproof's peak memory does not grow with the backup: physical and logical backups of a
~1 GB and a ~10 GB pgbench database, peak RSS of the pgproof process for each.

Usage (as root, after scripts/setup): .venv/bin/python -m bench.bench_memory [--scales 70,700]
"""

from __future__ import annotations

import argparse

from bench.bench_backup import as_postgres, bench_source, du, mb
from tests.support.fixtures import PGPROOF
from tests.support.seaweed import seaweed_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="70,700")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    results: list[tuple[int, int, str, float, int, int]] = []
    with seaweed_server() as s3:
        for scale in scales:
            with bench_source(scale, "pgproof-benchmem-", s3) as (base, cluster, config):
                db_size = int(cluster.sql("select pg_database_size('postgres')")[0][0])
                for kind in ("physical", "logical"):
                    before = du(base / "repo")
                    seconds, rss = as_postgres([PGPROOF, "--config", str(config), "backup", kind])
                    results.append((scale, db_size, kind, seconds, rss, du(base / "repo") - before))
    print(f"\n{'scale':>6} {'database':>10} {'kind':<9} {'time':>8} {'stored':>10} {'peak RSS':>9}")
    for scale, db_size, kind, seconds, rss, stored in results:
        print(
            f"{scale:>6} {mb(db_size):>10} {kind:<9} {seconds:7.1f}s {mb(stored):>10} "
            f"{rss / 1024:7.0f} MB"
        )
    for kind in ("physical", "logical"):
        rows = [r for r in results if r[2] == kind]
        if len(rows) >= 2:
            print(
                f"{kind}: database {rows[-1][1] / rows[0][1]:.1f}x larger, peak RSS "
                f"{rows[-1][4] / rows[0][4]:.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
