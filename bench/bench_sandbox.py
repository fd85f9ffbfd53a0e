"""The container sandbox's fixed overhead against the process sandbox, in one run.

Usage (as root, after scripts/setup, which installs podman and builds the images):
    .venv/bin/python -m bench.bench_sandbox [--rounds 5] [--scale 1]

A PostgreSQL 15 source (pgbench at --scale, small by default: the point is the fixed cost)
archives through pgproof; one physical and one logical backup. Printed, medians of --rounds:
  life       a bare sandbox: create, initdb, start, one query, stop, destroy
             (ProcessSandbox vs ContainerSandbox on podman + runc, overlay storage)
  physical   pgproof verify --kind physical --pitr latest, total and phases
  logical    pgproof verify --kind logical, total and phases
with the ratio container/process and the difference in seconds (the fixed overhead).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable

import yaml

from bench.bench_backup import bench_source
from pgproof.backups import pgbin
from pgproof.backups.runner import Runner
from pgproof.verifier.container import ContainerSandbox
from pgproof.verifier.containersettings import ContainerSettings
from pgproof.verifier.processsandbox import ProcessSandbox
from pgproof.verifier.sandbox import LocalDirSandbox
from tests.support.engine import podman_service
from tests.support.fixtures import PGPROOF, timed_verify
from tests.support.pgcluster import private_dir
from tests.support.seaweed import seaweed_server

IMAGE = "localhost/pgproof-sandbox:{major}"


def life(make: Callable[[], LocalDirSandbox]) -> dict[str, float]:
    """Seconds of each step of a bare sandbox's life."""
    steps: dict[str, float] = {}
    t = time.perf_counter()
    box = make()
    steps["create"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        box.initdb()
        box.configure(fast=True)
        steps["initdb"] = time.perf_counter() - t
        t = time.perf_counter()
        box.start(timeout=60)
        with box.connect() as conn:
            conn.execute("select 1")
        steps["start+query"] = time.perf_counter() - t
        t = time.perf_counter()
        box.stop()
        steps["stop"] = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        box.destroy()
        steps["destroy"] = time.perf_counter() - t
    steps["total"] = sum(steps.values())
    return steps


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def show(label: str, process: dict[str, float], container: dict[str, float]) -> None:
    print(f"\n{label}")
    print(f"  {'step':<14} {'process':>9} {'container':>10} {'ratio':>7} {'overhead':>9}")
    for key in process:
        p, c = process[key], container.get(key, 0.0)
        ratio = f"{c / p:6.2f}x" if p > 0.0005 else "      -"
        print(f"  {key:<14} {p:8.3f}s {c:9.3f}s {ratio} {c - p:+8.3f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    runner = Runner()
    with (
        podman_service() as engine,
        seaweed_server() as s3,
        bench_source(args.scale, "pgproof-benchsandbox-", s3) as (base, cluster, config),
    ):
        settings = ContainerSettings(image=IMAGE, engine=engine.url, pull="never")
        print(
            f"engine: {engine.podman('version', '--format', '{{.Server.Version}}').strip()} "
            f"(podman, runc, {os.environ.get('PGPROOF_PODMAN_DRIVER', 'overlay')} storage); "
            f"image {settings.image_for(15)}; {args.rounds} rounds, medians"
        )
        root = str(private_dir("pgproof-benchboxes-"))
        bins = pgbin.find(15, runner)
        life(lambda: ProcessSandbox(bins, runner, root))  # warm both paths once
        life(lambda: ContainerSandbox(settings, 15, runner, root))
        proc_life = [life(lambda: ProcessSandbox(bins, runner, root)) for _ in range(args.rounds)]
        cont_life = [
            life(lambda: ContainerSandbox(settings, 15, runner, root)) for _ in range(args.rounds)
        ]
        show("a bare sandbox's life", medians(proc_life), medians(cont_life))

        doc = yaml.safe_load(config.read_text())
        doc["targets"][0]["heartbeat"] = {"enabled": False}
        sandboxes = str(base / "sandboxes")
        process_verifier = {"workdir": sandboxes, "jobs": 2}
        container_verifier = {
            **process_verifier,
            "sandbox": "container",
            "image": IMAGE,
            "container": {"engine": engine.url, "pull": "never", "memory_mb": 2048, "cpus": 2},
        }
        config.write_text(yaml.safe_dump(doc))
        for kind in ("physical", "logical"):
            subprocess.run(
                [PGPROOF, "--config", str(config), "backup", kind], check=True, capture_output=True
            )
        cluster.pgbench("-n", "-T", "3", "-c", "2", timeout=600)
        cluster.switch_wal()
        time.sleep(2)
        for kind in ("physical", "logical"):
            runs: dict[str, list[dict[str, float]]] = {"process": [], "container": []}
            for _ in range(args.rounds):
                for name, verifier in (
                    ("process", process_verifier),
                    ("container", container_verifier),
                ):
                    doc["verifier"] = verifier
                    config.write_text(yaml.safe_dump(doc))
                    total, record = timed_verify(config, kind)
                    runs[name].append({"wall": total, **record.phases})
            show(f"verify --kind {kind}", medians(runs["process"]), medians(runs["container"]))
        left = engine.sandbox_containers()
        print(f"\nsandbox containers left: {len(left)}; volumes made: {len(engine.new_volumes())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
