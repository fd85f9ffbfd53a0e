"""Backups as a cron script leaves them, made in the test by the recipe's own commands: a
PostgreSQL source archiving with ``cp %p`` (then ``gzip`` for older segments, as scripts
do), ``pg_dump -Fc -Z9 | gzip`` per database, a plain ``pg_dump`` and ``pg_dumpall
--globals-only``, and ``pg_basebackup -Ft -z`` folders."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port


@dataclass
class CronBackups:
    cluster: Cluster
    root: Path  # the folder the scripts write to (dumps/, base/, wal/)

    def sh(self, script: str) -> None:
        """A shell line as the postgres OS user (what the cron job runs)."""
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", "sh", "-ec", script],
            capture_output=True,
            text=True,
            env={"PATH": f"{self.cluster.bins.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        assert done.returncode == 0, done.stderr[-2000:]

    @property
    def conn(self) -> str:
        return f"-h {self.cluster.socket_dir} -p {self.cluster.port} -U postgres"

    def dump_run(self, stamp: str, databases: tuple[str, ...] = ("postgres", "shop")) -> None:
        """One run of the dump script: ``<db>_full_<stamp>.dump.gz`` (custom, -Z9, gzip'ed),
        ``globals_<stamp>.sql``, and ``<db>_<stamp>.sql.gz`` (plain) for the last one."""
        d = self.root / "dumps"
        for db in databases[:-1]:
            self.sh(f"pg_dump {self.conn} -Fc -Z9 {db} | gzip > {d}/{db}_full_{stamp}.dump.gz")
        last = databases[-1]
        self.sh(f"pg_dump {self.conn} {last} | gzip > {d}/{last}_{stamp}.sql.gz")
        self.sh(f"pg_dumpall {self.conn} --globals-only > {d}/globals_{stamp}.sql")

    def base_backup(self, stamp: str, *extra: str) -> Path:
        folder = self.root / "base" / stamp
        self.sh(f"pg_basebackup {self.conn} -Ft -z -c fast -D {folder} {' '.join(extra)}")
        return folder

    def gzip_archived(self) -> None:
        """What a nightly script does to the archive: gzip every segment but the newest."""
        wal = sorted(p for p in (self.root / "wal").iterdir() if len(p.name) == 24)
        for path in wal[:-1]:
            self.sh(f"gzip {path}")


@contextlib.contextmanager
def cron_backups(major: int = 15) -> Iterator[CronBackups]:
    """The source running with ``archive_command = 'cp %p <root>/wal/%f'``, a database
    ``shop`` with a role of its own and rows, no backup yet."""
    cluster = make_cluster(major, free_port())
    root = private_dir("pgproof-cron-")
    try:
        for sub in ("dumps", "base", "wal"):
            (root / sub).mkdir()
        subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
        cluster.initdb(checksums=True)
        cluster.set(
            archive_mode="on",
            archive_command=f"'test ! -f {root}/wal/%f && cp %p {root}/wal/%f'",
        )
        cluster.start()
        cluster.sql("create role shopkeeper login")
        cluster.sql("create database shop owner shopkeeper")
        cluster.sql(
            "create table items (id int primary key, name text not null);"
            "insert into items select g, 'item ' || g from generate_series(1, 5000) g;"
            "create index on items (name);"
            "alter table items owner to shopkeeper",
            dbname="shop",
        )
        cluster.pgbench("-i", "-q", "-s", "1")
        yield CronBackups(cluster, root)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def files_target(
    name: str, source: dict[str, object] | None = None, **extra: object
) -> dict[str, object]:
    """A pgproof target reading the repository ``cron`` (the scripts' folder) unless
    ``source`` says otherwise; records go to ``local`` (``write_config``)."""
    return {
        "name": name,
        "results": "local",
        "source": {"type": "files", "repository": "cron", **(source or {})},
        **extra,
    }


def write_config(
    base: Path,
    cron: dict[str, object],
    *targets: dict[str, object],
    extra_repos: Sequence[dict[str, object]] = (),
) -> Path:
    """``base/pgproof.yaml``: the repository ``cron`` (``cron``: its settings, a folder or an
    S3 prefix), ``extra_repos`` and a filesystem results repository ``local`` under
    ``base``."""
    results = base / "results"
    results.mkdir(exist_ok=True)
    config = base / "pgproof.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lock_dir": str(base / "locks"),
                "repositories": [
                    {"name": "local", "type": "filesystem", "path": str(results)},
                    {"name": "cron", **cron},
                    *extra_repos,
                ],
                "targets": list(targets),
            }
        )
    )
    return config
