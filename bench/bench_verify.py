"""Restore-test speed: pgproof verify against the same restore by hand and pgBackRest, one run.

Usage (as root, after scripts/setup; apt-get install pgbackrest):
    .venv/bin/python -m bench.bench_verify [--scale 100] [--wal-seconds 30] [--container]

A PostgreSQL 15 source with pgbench data archives through both pgproof and pgBackRest; after
a physical backup by each, pgbench writes WAL for --wal-seconds. Then, printed with ratios:
  physical  pgproof verify --pitr latest (fetch + recovery, and the total with every check)
            vs by hand: zstd -dc base.tar.zst | tar -x, restore_command = zstd -d of the
            archived segment (the cp of a compressed archive), start, wait for promotion
            vs pgbackrest restore (replays the same WAL) + start + wait
  logical   pgproof verify --kind logical vs initdb + pg_restore -j 2 into a default cluster
  replay    WAL replay throughput of the restore test, MB/s
With --container, the same restore tests also run in the container sandbox (podman's Docker
API, the image of scripts/build-sandbox-images), against the same references.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.bench_backup import as_postgres, bench_source, mb, pgbackrest_conf, row
from pgproof.verifier.records import ResultRecord
from tests.support.engine import podman_service
from tests.support.fixtures import PGPROOF, timed_verify
from tests.support.pgcluster import Cluster, private_dir
from tests.support.seaweed import seaweed_server


def wait_promoted(cluster_bin: Cluster, datadir: Path, sock: Path, port: int, log: Path) -> None:
    as_postgres(
        [cluster_bin.bins.path("pg_ctl"), "-D", str(datadir), "-l", str(log), "-W", "start"]
    )
    while True:
        res = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                cluster_bin.bins.path("psql"),
                "-h",
                str(sock),
                "-p",
                str(port),
                "-U",
                "postgres",
                "-Atc",
                "select pg_is_in_recovery()",
                "postgres",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.stdout.strip() == "f":
            break
        fatal = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "FATAL" in line and "accepting connections" not in line and "starting up" not in line
        ]
        if fatal:
            raise RuntimeError("\n".join(fatal))
        time.sleep(0.05)
    as_postgres([cluster_bin.bins.path("pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"])


def conf_for_restore(datadir: Path, sock: Path, port: int, restore_command: str) -> None:
    (datadir / "postgresql.auto.conf").write_text("")
    (datadir / "postgresql.conf").write_text(
        f"listen_addresses = ''\nunix_socket_directories = '{sock}'\nport = {port}\n"
        f"archive_mode = off\nfsync = off\nfull_page_writes = off\nhot_standby = on\n"
        f"restore_command = '{restore_command}'\nrecovery_target_action = 'promote'\n"
        "recovery_target_timeline = 'latest'\nmax_wal_size = 4GB\n"
    )
    (datadir / "pg_hba.conf").write_text("local all all trust\n")
    (datadir / "recovery.signal").write_text("")


def by_hand(cluster: Cluster, repo: Path, backup_dir: Path, base: Path) -> float:
    work = private_dir("pgproof-byhand-")
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    started = time.perf_counter()
    data.mkdir(mode=0o700)
    subprocess.run(
        f"zstd -dcq {backup_dir}/base.tar.zst | tar -x -C {data}", shell=True, check=True
    )
    conf_for_restore(
        data,
        sock,
        5432,
        f"zstd -dcq {repo}/main/wal/%f.zst -o %p 2>/dev/null || cp {repo}/main/wal/%f %p",
    )
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    wait_promoted(cluster, data, sock, 5432, work / "log")
    elapsed = time.perf_counter() - started
    shutil.rmtree(work)
    return elapsed


def pgbackrest_restore(cluster: Cluster, conf: Path) -> float:
    work = private_dir("pgproof-pgbr-")
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    started = time.perf_counter()
    as_postgres(
        [
            "pgbackrest",
            f"--config={conf}",
            "--stanza=bench",
            f"--pg1-path={data}",
            "--process-max=2",
            "restore",
        ]
    )
    restore_command = (
        f'pgbackrest --config={conf} --stanza=bench --pg1-path={data} archive-get %f "%p"'
    )
    conf_for_restore(data, sock, 5432, restore_command.replace("'", "''"))
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    wait_promoted(cluster, data, sock, 5432, work / "log")
    elapsed = time.perf_counter() - started
    shutil.rmtree(work)
    return elapsed


def pgproof_verify(
    config: Path, kind: str, verifier: dict[str, Any] | None = None
) -> tuple[float, ResultRecord]:
    if verifier is not None:
        import yaml

        doc = yaml.safe_load(config.read_text())
        doc["verifier"] = verifier
        config.write_text(yaml.safe_dump(doc))
    return timed_verify(config, kind)


def by_hand_logical(cluster: Cluster, backup_dir: Path, manifest: dict[str, object]) -> float:
    work = private_dir("pgproof-pgrestore-")
    started = time.perf_counter()
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    as_postgres([cluster.bins.path("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
    with (data / "postgresql.conf").open("a") as fh:
        fh.write(f"listen_addresses = ''\nunix_socket_directories = '{sock}'\n")
    as_postgres(
        [cluster.bins.path("pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "start"]
    )
    from pgproof.backups import pgbin
    from pgproof.backups.runner import Runner

    newest = pgbin.find_at_least(15, Runner())
    for db in manifest["databases"]:  # type: ignore[attr-defined]
        as_postgres(
            [
                newest.path("pg_restore"),
                "-h",
                str(sock),
                "-U",
                "postgres",
                "-d",
                db["name"],
                "-j",
                "2",
                str(backup_dir / db["file"]),
            ],
            ok_codes=(0, 1),  # pg_dump 18's SET transaction_timeout is unknown to 15
        )
    elapsed = time.perf_counter() - started
    as_postgres([cluster.bins.path("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    shutil.rmtree(work)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--wal-seconds", type=int, default=30)
    parser.add_argument("--container", action="store_true", help="also the container sandbox")
    args = parser.parse_args()
    with (
        podman_service() if args.container else contextlib.nullcontext() as engine,
        seaweed_server() as s3,
        bench_source(args.scale, "pgproof-benchverify-", s3) as (base, cluster, config),
    ):
        repo = base / "repo"
        import yaml

        doc = yaml.safe_load(config.read_text())
        doc["targets"][0]["heartbeat"] = {"enabled": False}
        process = {"workdir": str(base / "sandboxes"), "jobs": 2}
        doc["verifier"] = process
        config.write_text(yaml.safe_dump(doc))
        container: dict[str, Any] | None = (
            None
            if engine is None
            else {
                **process,
                "sandbox": "container",
                "image": "localhost/pgproof-sandbox:{major}",
                "container": {"engine": engine.url, "pull": "never", "memory_mb": 4096, "cpus": 2},
            }
        )
        conf = pgbackrest_conf(cluster, base)
        both = (
            f"{PGPROOF} --config {config} wal-push %p && "
            f"pgbackrest --config={conf} --stanza=bench archive-push %p"
        )
        cluster.sql(f"alter system set archive_command = '{both}'")
        cluster.sql("select pg_reload_conf()")
        cluster.switch_wal()
        backup_id = subprocess.run(
            [PGPROOF, "--config", str(config), "backup", "physical"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup"])
        subprocess.run(
            [PGPROOF, "--config", str(config), "backup", "logical"], check=True, capture_output=True
        )
        cluster.pgbench(
            "-n",
            "-T",
            str(args.wal_seconds),
            "-c",
            "2",
            timeout=3600,
        )
        last = cluster.switch_wal()
        wal_dir = repo / "main" / "wal"
        while not (wal_dir / f"{last}.zst").exists():
            time.sleep(0.2)
        time.sleep(2)
        print("\nphysical restore test (PITR latest)")
        backup_dir = repo / "main" / "backups" / backup_id
        hand = by_hand(cluster, repo, backup_dir, base)
        row("by hand: zstd | tar -x, zstd -d per segment, start", hand, None, hand)
        pgbr = pgbackrest_restore(cluster, conf)
        row("pgBackRest restore + archive-get replay + start", pgbr, None, hand)
        total, record = pgproof_verify(config, "physical", process)
        phases = record.phases
        restore_part = phases["fetch"] + phases["recovery"]
        row("pgproof verify: fetch + recovery", restore_part, None, hand)
        row("pgproof verify: total with every check", total, None, hand)
        checks = {c.name: c.evidence.get("seconds") for c in record.checks}
        print(
            f"  pgproof/by hand (restore part): {restore_part / hand:.2f}x; "
            f"pgproof/pgBackRest: {restore_part / pgbr:.2f}x (total {total / pgbr:.2f}x)"
        )
        print(f"  phases: {phases}; check seconds: {checks}")
        if container:
            total_c, record_c = pgproof_verify(config, "physical", container)
            phases_c = record_c.phases
            part_c = phases_c["fetch"] + phases_c["recovery"]
            row("container sandbox: fetch + recovery", part_c, None, hand)
            row("container sandbox: total with every check", total_c, None, hand)
            print(
                f"  container/by hand (restore part): {part_c / hand:.2f}x; container/pgBackRest:"
                f" {part_c / pgbr:.2f}x (total {total_c / pgbr:.2f}x); container/process total:"
                f" {total_c / total:.2f}x (+{total_c - total:.2f} s)"
            )
        segments = next(c for c in record.checks if c.name == "wal_replay").evidence["wal_segments"]
        wal_bytes = segments * 16 * 1024 * 1024
        rate = wal_bytes / 1e6 / phases["recovery"]
        print(
            f"  WAL replayed {mb(wal_bytes)} ({segments} segments): {rate:.0f} MB/s over the "
            "recovery phase (prefetch overlapped with extraction, in the fetch phase)"
        )
        print("\nlogical restore test")
        manifest = json.loads(
            (
                repo
                / "main"
                / "backups"
                / sorted(
                    p.name for p in (repo / "main" / "backups").iterdir() if "logical" in p.name
                )[-1]
                / "manifest.json"
            ).read_text()
        )
        logical_dir = repo / "main" / "backups" / manifest["id"]
        hand_l = by_hand_logical(cluster, logical_dir, manifest)
        row("by hand: initdb + pg_restore -j 2 (default cluster)", hand_l, None, hand_l)
        total_l, record_l = pgproof_verify(config, "logical", process)
        row("pgproof verify --kind logical: total with checks", total_l, None, hand_l)
        print(f"  phases: {dict(record_l.phases)}")
        if container:
            total_lc, record_lc = pgproof_verify(config, "logical", container)
            row("container sandbox: total with checks", total_lc, None, hand_l)
            print(
                f"  phases: {dict(record_lc.phases)}; container/process: {total_lc / total_l:.2f}x "
                f"(+{total_lc - total_l:.2f} s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
