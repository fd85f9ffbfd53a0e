"""Restore tests of another tool's backups against restoring them by hand, in one run.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.bench_foreign [--scale 50] [--wal-seconds 30] [--rounds 2]

A PostgreSQL 15 source (pgbench data, ``--scale`` 50 is ~750 MB) is backed up by pgBackRest
(full, gz, the tool's defaults), then written to for ``--wal-seconds`` so that replay has
work to do. Then, alternating, ``--rounds`` times each:
  by hand   pgbackrest restore + start with restore_command = pgbackrest archive-get, until
            promoted (what an operator restoring it would run)
  pgproof   pgproof verify of the same backup: its fetch + recovery phases (restore, WAL
            fetched through archive-get, replay to the end of the archive), and the total
            with every check (pgbackrest verify, heartbeat, amcheck, full read, checksums)
Prints medians and the ratio pgproof (fetch + recovery) / by hand; the target is <= 1.1x.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_verify import conf_for_restore, wait_promoted
from tests.support.fixtures import timed_verify
from tests.support.pgbackrest import (
    Stanzas,
    as_postgres,
    pgbackrest_stanzas,
    target,
    write_pgproof_config,
)
from tests.support.pgcluster import private_dir


def by_hand(st: Stanzas) -> float:
    work = private_dir("pgproof-brhand-")
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    conf = st.writers[0]
    started = time.perf_counter()
    as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", f"--pg1-path={data}", "restore")
    restore_command = (
        f'pgbackrest --config={conf} --stanza=main --pg1-path={data} archive-get %f "%p"'
    )
    conf_for_restore(data, sock, 5432, restore_command)
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    wait_promoted(st.cluster, data, sock, 5432, work / "log")
    elapsed = time.perf_counter() - started
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            st.cluster.bins.path("pg_ctl"),
            "-D",
            str(data),
            "-m",
            "immediate",
            "stop",
        ],
        check=False,
        capture_output=True,
    )
    shutil.rmtree(work)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--wal-seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
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
        hands, parts, totals = [], [], []
        for _ in range(args.rounds):
            hands.append(by_hand(st))
            total, record = timed_verify(config, "physical")
            parts.append(record.phases["fetch"] + record.phases["recovery"])
            totals.append(total)
        hand, part, total = (statistics.median(x) for x in (hands, parts, totals))
        rows = [
            ("pgbackrest restore + archive-get replay + start (by hand)", hand),
            ("pgproof verify: fetch + recovery", part),
            ("pgproof verify: total with every check", total),
        ]
        for label, seconds in rows:
            print(f"  {label:<58} {seconds:7.2f} s  {seconds / hand:.2f}x")
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
