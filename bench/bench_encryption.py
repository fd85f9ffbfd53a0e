"""Client-side encryption's cost (issue 15): the same data pushed, backed up and
restore-tested through plain and encrypted repositories in one run, with ratios.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.bench_encryption [--scale 50] [--segments 30] [--rounds 3]

Builds a PostgreSQL 15 source with pgbench data and a local SeaweedFS S3, then prints:
  WAL sync   median per-segment latency of `pgproof wal-push` as archive_command runs it,
             into a filesystem and into filesystem + S3, plain vs encrypted (key file)
  WAL async  segments/s of the async worker into filesystem + S3, plain vs encrypted
  restore    `pgproof verify` logical and physical (PITR latest, every check) of the same
             data from a plain and an encrypted filesystem repository (medians of rounds)
The target (issue 15) is at most 1.15x for each.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import yaml

from bench.bench_backup import (
    bench_source,
    fresh_config,
    per_segment,
    ready_pg_wal,
    real_segments,
)
from tests.support.fixtures import PGPROOF, s3_env, write_config
from tests.support.pgcluster import Cluster
from tests.support.seaweed import SeaweedS3, seaweed_server


def master_key(base: Path) -> Path:
    path = base / "master.key"
    if not path.exists():
        subprocess.run(
            [PGPROOF, "keys", "generate", "--type", "master", "--out", str(path)],
            check=True,
            capture_output=True,
        )
        pg = pwd.getpwnam("postgres")
        os.chown(path, pg.pw_uid, pg.pw_gid)
    return path


def encrypted(config: Path, key: Path) -> Path:
    """``config`` with every repository encrypted by ``key``."""
    doc = yaml.safe_load(config.read_text())
    for repo in doc["repositories"]:
        repo["encryption"] = {"key_file": str(key)}
    config.write_text(yaml.safe_dump(doc))
    return config


def ratio_row(label: str, plain: float, enc: float, unit: str = "s") -> float:
    ratio = enc / plain
    print(f"  {label:<44} plain {plain:8.3f} {unit}   encrypted {enc:8.3f} {unit}   {ratio:5.2f}x")
    return ratio


def bench_sync(
    cluster: Cluster, base: Path, s3: SeaweedS3, segs: list[Path], rounds: int
) -> list[float]:
    print(f"\nWAL push (sync, as archive_command), median per 16 MB segment, {len(segs)} segments")
    key, ratios = master_key(base), []
    for label, with_s3 in (("filesystem", False), ("filesystem + S3", True)):
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds):
            for enc in (False, True) if r % 2 == 0 else (True, False):
                name = f"sync{int(with_s3)}{int(enc)}r{r}"
                cfg = fresh_config(base, cluster, s3 if with_s3 else None, name)
                if enc:
                    encrypted(cfg, key)
                argv = [PGPROOF, "--config", str(cfg), "wal-push", "{}"]
                per_segment(argv, segs, s3_env(), timings=times[enc])
        ratios.append(
            ratio_row(
                f"wal-push into {label}",
                statistics.median(times[False]) * 1000,
                statistics.median(times[True]) * 1000,
                "ms",
            )
        )
    return ratios


def bench_async(
    cluster: Cluster, base: Path, s3: SeaweedS3, segs: list[Path], rounds: int
) -> float:
    print(f"\nWAL push (async worker, 4 uploads), filesystem + S3, {len(segs)} segments")
    key = master_key(base)
    totals: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for enc in (False, True) if r % 2 == 0 else (True, False):
            pg_wal, spool = ready_pg_wal(segs)
            wal = {"async": True, "spool_dir": str(spool), "async_workers": 4}
            cfg = fresh_config(base, cluster, s3, f"async{int(enc)}r{r}", wal)
            if enc:
                encrypted(cfg, key)
            started = time.perf_counter()
            argv = [PGPROOF, "--config", str(cfg), "wal-push", "{}"]
            per_segment(argv, [pg_wal / s.name for s in segs], s3_env())
            totals[enc].append(len(segs) / (time.perf_counter() - started))
            shutil.rmtree(pg_wal)
            shutil.rmtree(spool)
    rate, rate_enc = statistics.median(totals[False]), statistics.median(totals[True])
    print(f"  segments/s: plain {rate:.1f}, encrypted {rate_enc:.1f}")
    # the encrypted run's time per segment against the plain one's
    return ratio_row("time per segment through the worker", 1 / rate, 1 / rate_enc)


def restore_configs(cluster: Cluster, base: Path) -> tuple[Path, Path]:
    """Two configs of the same target: one plain repository, one encrypted; the source
    archives into both (archive_command pushes twice)."""
    configs = []
    for name in ("plain", "encrypted"):
        repo = base / f"restore-{name}"
        repo.mkdir()
        subprocess.run(["chown", "postgres:postgres", str(repo)], check=True)
        cfg = base / f"restore-{name}.yaml"
        write_config(cfg, cluster, repo, None, "unused", base / f"locks-{name}")
        doc = yaml.safe_load(cfg.read_text())
        doc["targets"][0]["heartbeat"] = {"enabled": False}  # nothing beats in a benchmark
        cfg.write_text(yaml.safe_dump(doc))
        if name == "encrypted":
            encrypted(cfg, master_key(base))
        configs.append(cfg)
    push = " && ".join(f"{PGPROOF} --config {c} wal-push %p" for c in configs)
    cluster.sql(f"alter system set archive_command = '{push}'")
    cluster.sql("select pg_reload_conf()")
    return configs[0], configs[1]


def pgproof(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PGPROOF, "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )


def bench_restore(cluster: Cluster, base: Path, rounds: int) -> list[float]:
    plain, enc = restore_configs(cluster, base)
    for cfg in (plain, enc):
        pgproof(cfg, "backup", "logical")
        pgproof(cfg, "backup", "physical")
    switched = cluster.switch_wal()
    deadline = time.monotonic() + 120
    for cfg in (plain, enc):
        wal = Path(yaml.safe_load(cfg.read_text())["repositories"][0]["path"]) / "main" / "wal"
        while not (wal / f"{switched}.zst").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{switched} not archived into {wal}")
            time.sleep(0.2)
    print(f"\nRestore tests of the same data (median of {rounds} rounds, every check)")
    ratios = []
    for kind in ("logical", "physical"):
        times: dict[Path, list[float]] = {plain: [], enc: []}
        for r in range(rounds):
            for cfg in (plain, enc) if r % 2 == 0 else (enc, plain):
                started = time.perf_counter()
                done = pgproof(cfg, "verify", "--kind", kind, "--json")
                times[cfg].append(time.perf_counter() - started)
                (record,) = json.loads(done.stdout)["results"]
                if record["verdict"] != "passed":
                    raise RuntimeError(f"{kind} {cfg.name}: {record['cause']}")
        ratios.append(
            ratio_row(
                f"verify {kind}", statistics.median(times[plain]), statistics.median(times[enc])
            )
        )
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=50)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with (
        seaweed_server() as s3,
        bench_source(args.scale, "pgproof-bench-enc-", s3) as (base, cluster, config),
    ):
        segs = sorted(real_segments(cluster, config, args.segments).iterdir())
        ratios = bench_sync(cluster, base, s3, segs, args.rounds)
        ratios.append(bench_async(cluster, base, s3, segs, args.rounds))
        ratios += bench_restore(cluster, base, args.rounds)
    worst = max(ratios)
    print(f"\nworst ratio {worst:.2f}x (target <= 1.15x): {'met' if worst <= 1.15 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
