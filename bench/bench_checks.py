"""The physical restore test's checks against its fetch + recovery, and what they catch.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.bench_checks [--scale 100] [--rounds 1]

For a PostgreSQL 15 source with pgbench data (scale 100 = 1.6 GB), once with data checksums
and once without, a physical backup is restore-tested (`pgproof verify --pitr latest`) and
the phases are printed: fetch + recovery against the checks phase (target: at most 0.5x),
and each check's own time. Then the source without checksums is damaged (stopped; a heap
tuple, a TOAST chunk and a btree leaf item broken; started), backed up again (the backup
copies the damage faithfully) and restore-tested: each damaged relation must be named.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from pgproof.verifier.records import ResultRecord
from tests.support.fixtures import PGPROOF, write_config
from tests.support.pagedamage import break_btree_order, break_heap_tuple
from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port


def pgproof(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PGPROOF, "--config", str(config), *args], capture_output=True, text=True, check=False
    )


def source(base: Path, scale: int, checksums: bool) -> tuple[Cluster, Path]:
    repo = base / "repo"
    repo.mkdir()
    os.chown(repo, base.stat().st_uid, base.stat().st_gid)
    config = base / "pgproof.yaml"
    cluster = make_cluster(15, free_port())
    write_config(config, cluster, repo, None, "bench", base / "locks")
    doc = yaml.safe_load(config.read_text())
    doc["targets"][0]["heartbeat"] = {"enabled": False}
    doc["verifier"] = {"workdir": str(base / "sandboxes")}
    config.write_text(yaml.safe_dump(doc))
    cluster.initdb(
        checksums=checksums,
        settings={
            "archive_mode": "on",
            "archive_command": f"'{PGPROOF} --config {config} wal-push %p'",
            "max_wal_size": "4GB",
        },
    )
    cluster.start()
    started = time.perf_counter()
    cluster.pgbench("-i", "-q", "-s", str(scale), timeout=7200)
    off = "with (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
    cluster.sql(f"create table documents (id int, body text) {off}")
    cluster.sql("alter table documents alter column body set storage external")
    cluster.sql(
        "insert into documents select g, (select string_agg(md5(g::text || i::text), '')"
        " from generate_series(1, 100) i) from generate_series(1, 2000) g"
    )
    cluster.sql("checkpoint")
    size = cluster.sql("select pg_database_size('postgres')")[0][0]
    print(
        f"source: PostgreSQL 15, pgbench scale {scale}, {size / 1e9:.2f} GB, data checksums "
        f"{'on' if checksums else 'off'} (loaded in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return cluster, config


def restore_test(config: Path) -> ResultRecord:
    proc = pgproof(config, "verify", "--kind", "physical", "--pitr", "latest", "--json")
    return ResultRecord.from_dict(json.loads(proc.stdout)["results"][0])


def report(label: str, record: ResultRecord) -> float:
    phases = record.phases
    base = phases["fetch"] + phases["recovery"]
    ratio = phases["checks"] / base
    print(f"  {label}: verdict {record.verdict}")
    print(
        f"    fetch + recovery {base:6.2f} s   checks {phases['checks']:6.2f} s"
        f"   ratio {ratio:.2f}x"
    )
    for check in record.checks:
        seconds = check.evidence.get("seconds")
        shown = f"{seconds:6.2f} s" if isinstance(seconds, (int, float)) else "       "
        print(f"      {check.name:<14} {shown}  {check.verdict:<7} {check.detail[:90]}")
    return ratio


def damage(cluster: Cluster) -> list[str]:
    rows = cluster.sql(
        "select pg_relation_filepath('pgbench_accounts'),"
        " pg_relation_filepath('pgbench_accounts_pkey'),"
        " pg_relation_filepath(reltoastrelid), reltoastrelid::regclass::text"
        " from pg_class where relname = 'documents'"
    )
    heap, index, toast, toast_name = rows[0]
    cluster.stop()
    break_heap_tuple(cluster.datadir / heap, block=1000)
    break_btree_order(cluster.datadir / index, block=1)
    break_heap_tuple(cluster.datadir / toast, block=10)
    cluster.start()
    return [
        "heap table postgres.public.pgbench_accounts (block 1000)",
        "btree index postgres.public.pgbench_accounts_pkey",
        f"heap table postgres.{toast_name} (block 10), TOAST of documents",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    args = parser.parse_args()
    ratios = {}
    for checksums in (True, False):
        base = private_dir("pgproof-bench-checks-")
        cluster = None
        try:
            cluster, config = source(base, args.scale, checksums)
            backup = pgproof(config, "backup", "physical")
            assert backup.returncode == 0, backup.stderr
            label = f"data checksums {'on' if checksums else 'off'}"
            ratios[label] = report(label, restore_test(config))
            if not checksums:
                print("\ndamage copied by a backup (checksums off): heap, TOAST, btree")
                wanted = damage(cluster)
                backup = pgproof(config, "backup", "physical")
                assert backup.returncode == 0, backup.stderr
                record = restore_test(config)
                report("damaged", record)
                amcheck = next(c for c in record.checks if c.name == "amcheck")
                named = amcheck.evidence.get("damaged", [])
                for relation in wanted:
                    print(f"    {'named' if relation in named else 'NOT NAMED':<10} {relation}")
        finally:
            if cluster is not None:
                cluster.destroy()
            shutil.rmtree(base, ignore_errors=True)
    print("\nchecks / (fetch + recovery), target <= 0.50x:")
    for label, ratio in ratios.items():
        print(f"  {label:<22} {ratio:.2f}x")


if __name__ == "__main__":
    main()
