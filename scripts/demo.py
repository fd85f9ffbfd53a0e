"""Run pgproof's main job against an embedded default and leave it for the user to explore.

Starts a source PostgreSQL 15 with pgbench data, archiving with ``pgproof wal-push``, a
filesystem repository and a local S3 server (SeaweedFS), with the heartbeat running; takes a
logical and a physical backup, writes some more, runs ``pgproof check``, then the restore
tests: ``pgproof verify`` (physical to a random point in time, with the heartbeat proof, and
logical), writes the audit report and verifies its hash chain, then starts ``pgproof serve``
(the schedule keeps running, metrics, /reports/) and shows its metrics. Waits until Ctrl-C
(``--once``: stops right away), then stops everything it started.

``--source pgbackrest``: the source is backed up by pgBackRest instead (Debian's, into a
plain and an encrypted repository on this machine), and pgproof restore-tests those backups
(``check``, ``verify --pitr random`` with the heartbeat proof, ``list``, the chain).
``--source files``: the files a cron script leaves (``pg_dump -Fc -Z9 | gzip``, a plain dump,
``pg_dumpall --globals-only``, ``pg_basebackup -Ft -z``, ``cp %p`` archiving), restore-tested
by pgproof (``check``, ``verify`` logical and physical, ``list``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.fixtures import PGPROOF, s3_env, write_config  # noqa: E402
from tests.support.pgcluster import make_cluster, private_dir  # noqa: E402
from tests.support.pgproofcli import heartbeat_running  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.seaweed import start_seaweed  # noqa: E402


def run(config: Path, *args: str) -> int:
    print(f"\n$ pgproof --config {config} {' '.join(args)}", flush=True)
    return subprocess.run(
        [PGPROOF, "--config", str(config), *args], env=dict(os.environ, **s3_env()), check=False
    ).returncode


def show_metrics(url: str) -> int:
    """Wait for ``pgproof serve`` and print the headline metrics; 1 if they never come."""
    print(f"\n$ curl {url}   (pgproof serve)", flush=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                print("pgproof serve did not answer")
                return 1
            time.sleep(0.5)
    wanted = (
        "pgproof_backup_age_seconds{",
        "pgproof_backup_last_status{",
        "pgproof_restore_test_last_status{",
        "pgproof_restore_test_duration_seconds{",
        "pgproof_restore_test_rpo_seconds{",
        "pgproof_wal_archive_missing_segments{",
        "pgproof_source_wal_ready_files{",
        "pgproof_repository_up{",
    )
    for line in text.splitlines():
        if line.startswith(wanted) and 'phase="fetch"' not in line:
            print(f"  {line}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop everything when done")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10 = ~150 MB)")
    parser.add_argument("--source", choices=("pgproof", "pgbackrest", "files"), default="pgproof")
    args = parser.parse_args()
    if args.source == "pgbackrest":
        return pgbackrest_demo(args.scale)
    if args.source == "files":
        return files_demo()
    base = private_dir("pgproof-demo-")
    s3 = start_seaweed()
    cluster = None
    serve: subprocess.Popen[bytes] | None = None
    try:
        repo = base / "repo"
        repo.mkdir()
        os.chown(repo, base.stat().st_uid, base.stat().st_gid)
        s3.make_bucket("pgproof-demo")
        config = base / "pgproof.yaml"
        cluster = make_cluster(15, free_port(), env=s3_env())
        write_config(
            config,
            cluster,
            repo,
            s3,
            "pgproof-demo",
            base / "locks",
            # what `pgproof serve` keeps doing while the demo runs (UTC times)
            extra_target={
                "schedule": {
                    "logical": "every 30 minutes",
                    "physical": "every 2 hours",
                    "verify": "every 1 hours",
                    "retention": "every 6 hours",
                },
                "retention": {"full_backups": 4},
            },
        )
        cluster.initdb(
            settings={
                "archive_mode": "on",
                "archive_command": f"'{PGPROOF} --config {config} wal-push %p'",
                "archive_timeout": "60",
            }
        )
        cluster.start()
        print(f"source PostgreSQL 15 on socket {cluster.socket_dir}, port {cluster.port}")
        cluster.pgbench(
            "-i",
            "-q",
            "-s",
            str(args.scale),
            timeout=900,
        )
        status = 0
        heartbeat = subprocess.Popen(
            [PGPROOF, "--config", str(config), "heartbeat"],
            env=dict(os.environ, **s3_env()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.5)
            for step in (("backup", "logical"), ("backup", "physical")):
                status |= run(config, *step)
            print("\nwriting for 5 s (pgbench) so that there is WAL to replay...", flush=True)
            cluster.pgbench(
                "-n",
                "-T",
                "5",
                "-c",
                "2",
                timeout=120,
            )
            time.sleep(1.5)
        finally:
            heartbeat.terminate()
            heartbeat.wait(10)
        cluster.switch_wal()
        time.sleep(2)
        status |= run(config, "check")
        status |= run(config, "verify", "--kind", "physical", "--pitr", "random")
        status |= run(config, "verify", "--kind", "logical")
        run(config, "list")
        report = base / "report.html"
        status |= run(config, "report", "--out", str(report))
        status |= run(config, "report", "--verify-chain")
        port = free_port()
        serve = subprocess.Popen(
            [PGPROOF, "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
            env=dict(os.environ, **s3_env()),
            stdout=subprocess.DEVNULL,
            stderr=(base / "serve.log").open("wb"),
        )
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        status |= show_metrics(metrics_url)
        print(
            f"\nEverything is under {base}:\n"
            f"  config       {config}\n"
            f"  repository   {repo}\n"
            f"  S3           {s3.endpoint} bucket pgproof-demo\n"
            f"  source       psql '{cluster.conninfo()}'\n"
            f"  metrics      {metrics_url} (pgproof serve; log {base / 'serve.log'})\n"
            f"  report       {report} (and http://127.0.0.1:{port}/reports/)\n"
            f"Try: {PGPROOF} --config {config} check --json"
        )
        if not args.once and sys.stdin.isatty():
            print("\nRunning; press Ctrl-C to stop everything.")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
        return 1 if status else 0
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(30)
        if cluster is not None:
            cluster.destroy()
        s3.stop()
        shutil.rmtree(base, ignore_errors=True)
        print("stopped everything the demo started")


def pgbackrest_demo(scale: int) -> int:
    """Backups pgBackRest makes, restore-tested by pgproof (which never writes to them)."""
    from tests.support.pgbackrest import (
        PASSPHRASE,
        pgbackrest_stanzas,
        target,
        write_pgproof_config,
    )

    with pgbackrest_stanzas(scale=scale) as st:
        base = private_dir("pgproof-demo-")
        try:
            conninfo = st.cluster.conninfo()
            config = write_pgproof_config(
                base,
                target(
                    "billing",
                    st.plain,
                    conninfo=conninfo,
                    heartbeat={"enabled": True, "every_seconds": 1},
                ),
                target(
                    "billing-encrypted",
                    st.encrypted,
                    conninfo=conninfo,
                    cipher_pass_env="DEMO_BR_PASS",
                ),
            )
            os.environ["DEMO_BR_PASS"] = PASSPHRASE
            print(f"source PostgreSQL 15 backed up by pgBackRest into {st.repos[0].parent}")
            with heartbeat_running(config, "billing"):
                print("\n$ pgbackrest ... --type=full backup   (both repositories)", flush=True)
                st.backup()
                st.cluster.pgbench("-n", "-T", "5", "-c", "2", timeout=120)
                time.sleep(1.5)
            st.cluster.switch_wal()
            time.sleep(2)
            status = run(config, "check", "--target", "billing")
            for name in ("billing", "billing-encrypted"):
                status |= run(config, "verify", "--target", name, "--pitr", "random")
            run(config, "list", "--target", "billing")
            status |= run(config, "report", "--verify-chain")
            return 1 if status else 0
        finally:
            shutil.rmtree(base, ignore_errors=True)
            print("stopped everything the demo started")


def files_demo() -> int:
    """Backups a cron script leaves in a folder, restore-tested by pgproof (read only)."""
    import datetime as dt

    from tests.support.cronbackups import cron_backups, files_target
    from tests.support.cronbackups import write_config as write_files_config

    with cron_backups(15) as cb:
        base = private_dir("pgproof-demo-")
        try:
            config = write_files_config(
                base,
                {"type": "filesystem", "path": str(cb.root)},
                files_target(
                    "shop",
                    conninfo=cb.cluster.conninfo(),
                    heartbeat={"enabled": True, "every_seconds": 1},
                ),
            )
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
            with heartbeat_running(config, "shop"):
                print(f"\n$ the cron script, into {cb.root}:", flush=True)
                print(f"  pg_dump -Fc -Z9 postgres | gzip > dumps/postgres_full_{stamp}.dump.gz")
                print(f"  pg_dump shop | gzip > dumps/shop_{stamp}.sql.gz")
                print(f"  pg_dumpall --globals-only > dumps/globals_{stamp}.sql")
                print(f"  pg_basebackup -Ft -z -D base/{stamp}")
                print("  archive_command = 'cp %p wal/%f', then gzip of the older segments")
                cb.dump_run(stamp)
                cb.base_backup(stamp)
                cb.cluster.pgbench("-n", "-T", "5", "-c", "2", timeout=120)
                time.sleep(1.5)
            cb.cluster.switch_wal()
            time.sleep(2)
            cb.gzip_archived()
            status = run(config, "check", "--target", "shop")
            status |= run(config, "verify", "--target", "shop", "--kind", "logical")
            status |= run(
                config, "verify", "--target", "shop", "--kind", "physical", "--pitr", "random"
            )
            run(config, "list", "--target", "shop")
            return 1 if status else 0
        finally:
            shutil.rmtree(base, ignore_errors=True)
            print("stopped everything the demo started")


if __name__ == "__main__":
    raise SystemExit(main())
