"""Real throwaway PostgreSQL clusters for tests (run as the postgres OS user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgproof.backups import pgbin
from pgproof.backups.runner import Runner


def private_dir(prefix: str) -> Path:
    """A temp dir owned by the postgres user (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    ident = Runner().postgres_identity()
    if ident is not None:
        os.chown(path, ident.uid, ident.gid)
    path.chmod(0o755)
    return path


@dataclass
class Cluster:
    major: int
    bins: pgbin.PgBinaries
    base: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    runner: Runner = field(default_factory=Runner)
    running: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user}"

    def pg(self, program: str, *args: str, timeout: float = 120, **kw: Any) -> str:
        res = self.runner.run(
            [self.bins.path(program), *args], timeout=timeout, as_postgres=True, env=self.env, **kw
        )
        return res.stdout.decode()

    def pgbench(self, *args: str, timeout: float = 3600) -> str:
        """pgbench against this cluster's postgres database (as the postgres user)."""
        conn = ["-h", self.socket_dir, "-p", str(self.port), "-U", "postgres"]
        return self.pg("pgbench", *args, *conn, "postgres", timeout=timeout)

    def initdb(self, checksums: bool = True, settings: Mapping[str, str] | None = None) -> None:
        args = ["-D", str(self.datadir), "-U", "postgres", "-A", "trust", "--no-sync"]
        if checksums:
            args.append("--data-checksums")
        self.pg("initdb", *args)
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(self.port),
            "fsync": "off",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        with (self.datadir / "postgresql.conf").open("a") as fh:
            for k, v in conf.items():
                fh.write(f"{k} = {v}\n")
        # local replication connections for pg_basebackup (trust, socket only)
        with (self.datadir / "pg_hba.conf").open("a") as fh:
            fh.write("local replication all trust\n")

    def set(self, **settings: str) -> None:
        with (self.datadir / "postgresql.conf").open("a") as fh:
            for k, v in settings.items():
                fh.write(f"{k} = {v}\n")

    def start(self) -> None:
        self.pg(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self.pg("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")
            self.running = False

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def sql(self, query: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(dbname) as conn:
            cur = conn.execute(query.encode())
            return cur.fetchall() if cur.description else []

    def switch_wal(self) -> str:
        return str(self.sql("select pg_walfile_name(pg_switch_wal())")[0][0])

    def log_tail(self) -> str:
        try:
            return (self.base / "log").read_text()[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - best effort in teardown
            pid_file = self.datadir / "postmaster.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                subprocess.run(["kill", "-9", str(pid)], check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def make_cluster(major: int, port: int, env: Mapping[str, str] | None = None) -> Cluster:
    bins = pgbin.find(major, Runner())
    return Cluster(major, bins, private_dir(f"pgproof-pg{major}-"), port, dict(env or {}))


def available_majors() -> list[int]:
    found = []
    for major in (15, 16, 17, 18):
        try:
            pgbin.find(major, Runner())
            found.append(major)
        except Exception:  # noqa: BLE001
            continue
    return found
