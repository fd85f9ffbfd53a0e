"""Backup speed, size and memory: pgproof against the raw tools and pgBackRest, in one run.

Usage (as root, after scripts/setup; pgBackRest from Debian: apt-get install pgbackrest):
    .venv/bin/python -m bench.bench_backup [--scale 100] [--segments 30] [--rss-scales 20,100]

Builds a PostgreSQL 15 source with pgbench data (scale 100 is ~1.5 GB), archiving through
pgproof, plus a local SeaweedFS S3, then prints times, sizes and ratios:
  logical   pg_dump -Fc (zstd, to a file) vs pgproof backup logical (filesystem repository)
  physical  pg_basebackup -Ft (client zstd) and pgBackRest full (zst, process-max 2)
            vs pgproof backup physical (filesystem repository)
  WAL       per-segment latency of cp, pgbackrest archive-push, pgproof wal-push (sync,
            filesystem; sync, filesystem + S3; async foreground) and async throughput into S3
  memory    pgproof's peak RSS for physical backups of different sizes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from pgproof.backups import compression, pgbin
from pgproof.backups.runner import Runner
from tests.support.fixtures import PGPROOF, s3_env, write_config
from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port
from tests.support.seaweed import SeaweedS3, seaweed_server

RUNNER = Runner()


def as_postgres(
    argv: list[str], env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)
) -> tuple[float, int]:
    """Run as the postgres user under /usr/bin/time; (seconds, peak RSS in kB)."""
    full = ["runuser", "-u", "postgres", "--", "/usr/bin/time", "-f", "%M", *argv]
    started = time.perf_counter()
    proc = subprocess.run(
        full, capture_output=True, text=True, env=dict(os.environ, **(env or {})), check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr[-2000:]}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def row(label: str, seconds: float, size: int | None = None, ref: float | None = None) -> None:
    ratio = f"  {seconds / ref:5.2f}x" if ref else ""
    size_text = f"  {mb(size):>10}" if size is not None else ""
    print(f"  {label:<46} {seconds:7.2f} s{size_text}{ratio}", flush=True)


def source(scale: int, base: Path, s3: SeaweedS3 | None) -> tuple[Cluster, Path]:
    repo = base / "repo"
    repo.mkdir()
    os.chown(repo, base.stat().st_uid, base.stat().st_gid)
    config = base / "pgproof.yaml"
    cluster = make_cluster(15, free_port(), env=s3_env())
    write_config(config, cluster, repo, None, "bench", base / "locks")
    cluster.initdb(
        checksums=True,
        settings={
            "archive_mode": "on",
            "archive_command": f"'{PGPROOF} --config {config} wal-push %p'",
            "max_wal_size": "4GB",
            "fsync": "on",
        },
    )
    try:
        cluster.start()
        started = time.perf_counter()
        cluster.pgbench(
            "-i",
            "-q",
            "-s",
            str(scale),
            timeout=7200,
        )
        size = cluster.sql("select pg_database_size('postgres')")[0][0]
        print(
            f"source: PostgreSQL 15, pgbench scale {scale}, {mb(size)} "
            f"(loaded in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        cluster.sql("checkpoint")
    except BaseException:
        cluster.destroy()
        raise
    return cluster, config


@contextlib.contextmanager
def bench_source(
    scale: int, prefix: str, s3: SeaweedS3 | None
) -> Iterator[tuple[Path, Cluster, Path]]:
    """(work dir, source cluster, pgproof config); everything removed on leaving."""
    base = private_dir(prefix)
    try:
        cluster, config = source(scale, base, s3)
        try:
            yield base, cluster, config
        finally:
            cluster.destroy()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_logical(cluster: Cluster, config: Path, base: Path) -> None:
    print("\nlogical backup")
    newest = pgbin.find_at_least(15, RUNNER)
    out = base / "dump.out"
    results = {}
    for label, argv in (
        (
            f"pg_dump {newest.version} -Fc -Z zstd:3 > file",
            [newest.path("pg_dump"), "-Fc", "-Z", "zstd:3", "-f", str(out), cluster.conninfo()],
        ),
        (
            "pg_dump 15 -Fc (gzip default) > file",
            [cluster.bins.path("pg_dump"), "-Fc", "-f", str(out), cluster.conninfo()],
        ),
    ):
        seconds, _ = as_postgres(argv)
        results[label] = (seconds, out.stat().st_size)
        out.unlink()
    ref = next(iter(results.values()))[0]
    for label, (seconds, size) in results.items():
        row(label, seconds, size, ref)
    before = du(base / "repo")
    seconds, rss = as_postgres([PGPROOF, "--config", str(config), "backup", "logical"])
    row("pgproof backup logical (zstd:3, filesystem)", seconds, du(base / "repo") - before, ref)
    print(f"  pgproof peak RSS {rss / 1024:.0f} MB")


def pgbackrest_conf(cluster: Cluster, base: Path) -> Path:
    root = base / "pgbackrest"
    for sub in ("repo", "lock", "log", "spool"):
        (root / sub).mkdir(parents=True)
    subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        f"[global]\nrepo1-path={root}/repo\ncompress-type=zst\nprocess-max=2\nstart-fast=y\n"
        f"archive-check=n\nlog-level-console=warn\nlog-level-file=off\nlock-path={root}/lock\n"
        f"log-path={root}/log\nspool-path={root}/spool\n\n[bench]\npg1-path={cluster.datadir}\n"
        f"pg1-socket-path={cluster.socket_dir}\npg1-port={cluster.port}\n"
    )
    conf.chmod(0o644)
    as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
    return conf


def raw_physical(cluster: Cluster, base: Path, conf: Path) -> tuple[float, int, float, int]:
    """pg_basebackup -Ft (client zstd:3) to a directory, then a pgBackRest full backup:
    (seconds, bytes) of each."""
    target = base / "bb"
    seconds_bb, _ = as_postgres(
        [
            cluster.bins.path("pg_basebackup"),
            "-d",
            cluster.conninfo(),
            "-D",
            str(target),
            "-Ft",
            "-X",
            "none",
            "--compress=client-zstd:3",
            "-c",
            "fast",
        ]
    )
    size_bb = du(target)
    shutil.rmtree(target)
    backup_dir = base / "pgbackrest" / "repo" / "backup"
    before_br = du(backup_dir) if backup_dir.exists() else 0
    seconds_br, _ = as_postgres(
        ["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup"]
    )
    return seconds_bb, size_bb, seconds_br, du(backup_dir) - before_br


def bench_physical(cluster: Cluster, config: Path, base: Path, conf: Path) -> None:
    print("\nphysical backup")
    seconds_bb, size_bb, seconds_br, size_br = raw_physical(cluster, base, conf)
    before = du(base / "repo")
    seconds_pp, rss = as_postgres([PGPROOF, "--config", str(config), "backup", "physical"])
    size_pp = du(base / "repo") - before
    row("pgBackRest full (zst, process-max 2)", seconds_br, size_br, seconds_br)
    row("pg_basebackup -Ft client-zstd:3 > dir", seconds_bb, size_bb, seconds_br)
    row("pgproof backup physical (zstd:3, filesystem)", seconds_pp, size_pp, seconds_br)
    print(
        f"  pgproof/pgBackRest: time {seconds_pp / seconds_br:.2f}x, size "
        f"{size_pp / size_br:.2f}x; peak RSS {rss / 1024:.0f} MB"
    )


def real_segments(cluster: Cluster, config: Path, count: int) -> Path:
    """Real, distinct WAL segments (valid headers) copied from the archive."""
    repo = Path(yaml.safe_load(config.read_text())["repositories"][0]["path"]) / "main" / "wal"
    cluster.sql("create table if not exists walgen (v text)")
    while len(list(repo.glob("*.zst"))) < count + 2:
        cluster.sql("insert into walgen select md5(random()::text) from generate_series(1, 200000)")
        cluster.switch_wal()
        time.sleep(0.2)
    names = sorted(p.name for p in repo.iterdir() if p.name.endswith(".zst"))[-count - 2 : -2]
    src = private_dir("pgproof-segs-")
    for name in names:
        data = compression.zstd_decompress_bytes((repo / name).read_bytes())
        (src / name[: -len(".zst")]).write_bytes(data)
    subprocess.run(["chown", "-R", "postgres:postgres", str(src)], check=True)
    return src


def per_segment(
    argv_for: list[str],
    segs: list[Path],
    env: dict[str, str] | None = None,
    timings: list[float] | None = None,
) -> float:
    times: list[float] = [] if timings is None else timings
    for seg in segs:
        started = time.perf_counter()
        argv = [a.replace("{}", str(seg)) for a in argv_for]
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            env=dict(os.environ, **(env or {})),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fresh_config(
    base: Path,
    cluster: Cluster,
    s3: SeaweedS3 | None,
    name: str,
    wal: dict[str, object] | None = None,
    fs: bool = True,
) -> Path:
    repo = base / f"repo-{name}"
    repo.mkdir()
    subprocess.run(["chown", "postgres:postgres", str(repo)], check=True)
    bucket = f"bench-{name}"
    if s3 is not None:
        s3.make_bucket(bucket)
    config = base / f"{name}.yaml"
    write_config(config, cluster, repo, s3, bucket, base / "locks", {"wal": wal} if wal else None)
    if not fs:
        doc = yaml.safe_load(config.read_text())
        doc["repositories"] = doc["repositories"][1:]
        doc["targets"][0]["repositories"] = ["offsite"]
        config.write_text(yaml.safe_dump(doc))
    return config


def ready_pg_wal(segs: list[Path]) -> tuple[Path, Path]:
    """A pg_wal-like directory holding ``segs`` with their .ready files (as the archiver
    leaves them for async archiving), and an empty spool directory; both postgres's."""
    pg_wal = private_dir("pgproof-pgwal-")
    (pg_wal / "archive_status").mkdir()
    for seg in segs:
        shutil.copy(seg, pg_wal / seg.name)
        (pg_wal / "archive_status" / f"{seg.name}.ready").touch()
    spool = private_dir("pgproof-spool-")
    subprocess.run(["chown", "-R", "postgres:postgres", str(pg_wal), str(spool)], check=True)
    return pg_wal, spool


def bench_wal(
    cluster: Cluster, config: Path, base: Path, conf: Path, s3: SeaweedS3, count: int
) -> None:
    print(f"\nWAL push, median per 16 MB segment ({count} real segments)")
    src = real_segments(cluster, config, count)
    segs = sorted(src.iterdir())
    dest = private_dir("pgproof-cp-")
    ref = per_segment(
        ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push", "{}"], segs
    )
    row("pgbackrest archive-push (zst)", ref, None, ref)
    row("cp", per_segment(["cp", "{}", str(dest)], segs), None, ref)
    for label, cfg in (
        ("pgproof wal-push (filesystem)", fresh_config(base, cluster, None, "fs")),
        ("pgproof wal-push (filesystem + S3)", fresh_config(base, cluster, s3, "fss3")),
    ):
        row(
            label,
            per_segment([PGPROOF, "--config", str(cfg), "wal-push", "{}"], segs, s3_env()),
            None,
            ref,
        )
    # async: a pg_wal-like directory with .ready files, pushed in order as the archiver does
    for label, fs in (("S3 only", False), ("filesystem + S3", True)):
        pg_wal, spool = ready_pg_wal(segs)
        cfg = fresh_config(
            base,
            cluster,
            s3,
            "async" + str(fs).lower(),
            {"async": True, "spool_dir": str(spool), "async_workers": 4},
            fs=fs,
        )
        timings: list[float] = []
        started = time.perf_counter()
        median = per_segment(
            [PGPROOF, "--config", str(cfg), "wal-push", "{}"],
            [pg_wal / s.name for s in segs],
            s3_env(),
            timings=timings,
        )
        total = time.perf_counter() - started
        row(f"pgproof wal-push async foreground ({label})", median, None, ref)
        steady = (len(segs) - 1) / sum(timings[1:])
        print(
            f"  async into {label}: first call {timings[0] * 1000:.0f} ms (starts the worker),"
            f" then {steady:.1f} segments/s sustained ({steady * 16:.0f} MB/s of WAL)"
        )
        print(
            f"  async overall into {label}: {len(segs) / total:.1f} segments/s "
            f"({len(segs) * 16 / total:.0f} MB/s of WAL)"
        )
        shutil.rmtree(pg_wal)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--skip-backups", action="store_true")
    args = parser.parse_args()
    if shutil.which("pgbackrest") is None:
        print("pgBackRest is needed: apt-get install pgbackrest", file=sys.stderr)
        return 2
    with (
        seaweed_server() as s3,
        bench_source(args.scale, "pgproof-bench-", s3) as (base, cluster, config),
    ):
        conf = pgbackrest_conf(cluster, base)
        if not args.skip_backups:
            bench_logical(cluster, config, base)
            bench_physical(cluster, config, base, conf)
        bench_wal(cluster, config, base, conf, s3, args.segments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
