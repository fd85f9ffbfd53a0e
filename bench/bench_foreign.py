"""Restore tests of another tool's backups against restoring them by hand, in one run.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.bench_foreign [--source pgbackrest|barman-cloud] [--scale 50]
        [--wal-seconds 30] [--rounds 2]

A PostgreSQL 15 source (pgbench data, ``--scale`` 50 is ~750 MB) is backed up by the tool
(pgBackRest: full, gz, its defaults, on this machine's disk; barman-cloud: ``-z`` into
SeaweedFS S3 on this machine), then written to for ``--wal-seconds`` so that replay has work
to do. Then, alternating, ``--rounds`` times each:
  by hand   the tool's restore + start with the tool's WAL command as restore_command
            (pgbackrest archive-get / barman-cloud-wal-restore), until promoted: what an
            operator restoring it would run
  pgproof   pgproof verify of the same backup: its fetch + recovery phases (restore, WAL
            fetched through the same tool, replay to the end of the archive), and the total
            with every check (the tool's check, heartbeat, amcheck, full read, checksums)
Prints medians and the ratio pgproof (fetch + recovery) / by hand; the target is <= 1.1x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_verify import conf_for_restore, wait_promoted
from tests.support.barman import (
    CREDENTIALS,
    SERVER,
    BarmanSource,
    barman_bin,
    barman_source,
    write_barman_config,
)
from tests.support.fixtures import timed_verify
from tests.support.pgbackrest import (
    Stanzas,
    as_postgres,
    pgbackrest_stanzas,
    target,
    write_pgproof_config,
)
from tests.support.pgcluster import Cluster, private_dir
from tests.support.seaweed import start_seaweed


def _timed_by_hand(cluster: Cluster, restore: Callable[[Path], str], prefix: str) -> float:
    """What an operator runs: ``restore(data dir)`` puts the files there and returns the
    tool's restore_command; then start until promoted. Seconds from restore to promoted."""
    work = private_dir(prefix)
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    started = time.perf_counter()
    conf_for_restore(data, sock, 5432, restore(data))
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    wait_promoted(cluster, data, sock, 5432, work / "log")
    elapsed = time.perf_counter() - started
    _stop(cluster, data)
    shutil.rmtree(work)
    return elapsed


def by_hand(st: Stanzas) -> float:
    conf = st.writers[0]

    def restore(data: Path) -> str:
        as_postgres(
            "pgbackrest", f"--config={conf}", "--stanza=main", f"--pg1-path={data}", "restore"
        )
        return f'pgbackrest --config={conf} --stanza=main --pg1-path={data} archive-get %f "%p"'

    return _timed_by_hand(st.cluster, restore, "pgproof-brhand-")


def barman_by_hand(src: BarmanSource) -> float:
    listed = subprocess.run(
        [str(src.bin / "barman-cloud-backup-list"), f"--endpoint-url={src.s3.endpoint}",
         "--format=json", src.url, SERVER],
        capture_output=True, text=True, check=True, env={**os.environ, **CREDENTIALS},
    )  # fmt: skip
    (backup,) = [b["backup_id"] for b in json.loads(listed.stdout)["backups_list"]]
    creds = " ".join(f"{k}={v}" for k, v in CREDENTIALS.items())
    endpoint = f"--endpoint-url={src.s3.endpoint}"

    def restore(data: Path) -> str:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "env", *creds.split(),
             str(src.bin / "barman-cloud-restore"), endpoint, src.url, SERVER, backup, str(data)],
            check=True, capture_output=True,
        )  # fmt: skip
        return f"{creds} {src.bin}/barman-cloud-wal-restore {endpoint} {src.url} {SERVER} %f %p"

    return _timed_by_hand(src.cluster, restore, "pgproof-bmhand-")


def _stop(cluster: Cluster, data: Path) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", cluster.bins.path("pg_ctl"), "-D", str(data),
         "-m", "immediate", "stop"],
        check=False, capture_output=True,
    )  # fmt: skip


def _rounds(rounds: int, hand: Callable[[], float], config: Path) -> None:
    hands, parts, totals = [], [], []
    for _ in range(rounds):
        hands.append(hand())
        total, record = timed_verify(config, "physical")
        parts.append(record.phases["fetch"] + record.phases["recovery"])
        totals.append(total)
    by_hand_s, part, total = (statistics.median(x) for x in (hands, parts, totals))
    rows = [
        ("the tool's restore + its WAL command as restore_command (by hand)", by_hand_s),
        ("pgproof verify: fetch + recovery", part),
        ("pgproof verify: total with every check", total),
    ]
    for label, seconds in rows:
        print(f"  {label:<66} {seconds:7.2f} s  {seconds / by_hand_s:.2f}x")


def barman(args: argparse.Namespace) -> int:
    if barman_bin() is None:
        print("barman-cloud is needed: scripts/setup installs it", file=sys.stderr)
        return 2
    s3 = start_seaweed()
    try:
        with barman_source(s3, 15, "bench-barman", scale=args.scale) as src:
            base = private_dir("pgproof-bench-barman-")
            config = write_barman_config(base, s3, src, {"main": src.prefix})
            src.backup()
            src.cluster.pgbench("-T", str(args.wal_seconds), "-c", "2", timeout=3600)
            src.cluster.switch_wal()
            time.sleep(5)
            client = s3.client()
            size = sum(
                o["Size"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=src.bucket)
                for o in page.get("Contents", [])
            )
            print(
                f"source: PostgreSQL 15, pgbench scale {args.scale}; barman-cloud in S3 "
                f"{size / 1e6:.0f} MB (backup -z + {args.wal_seconds} s of WAL)"
            )
            _rounds(args.rounds, lambda: barman_by_hand(src), config)
            shutil.rmtree(base, ignore_errors=True)
    finally:
        s3.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", choices=("pgbackrest", "barman-cloud"), default="pgbackrest")
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--wal-seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.source == "barman-cloud":
        return barman(args)
    if shutil.which("pgbackrest") is None:
        print("pgBackRest is needed: apt-get install pgbackrest", file=sys.stderr)
        return 2
    with pgbackrest_stanzas(scale=args.scale) as st:
        base = private_dir("pgproof-bench-foreign-")
        config = write_pgproof_config(base, target("main", st.plain))
        st.backup()
        st.cluster.pgbench("-T", str(args.wal_seconds), "-c", "2", timeout=3600)
        st.cluster.switch_wal()
        time.sleep(5)
        size = sum(p.stat().st_size for p in Path(st.repos[0]).rglob("*") if p.is_file())
        print(
            f"source: PostgreSQL 15, pgbench scale {args.scale}; pgBackRest repository "
            f"{size / 1e6:.0f} MB (full backup + {args.wal_seconds} s of WAL)"
        )
        _rounds(args.rounds, lambda: by_hand(st), config)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
