from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from pgproof.backups import catalog
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.backups.storage.s3 import S3Repository
from pgproof.backups.storage.s3options import S3Options
from tests.support.fixtures import PGPROOF, Setup
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY


def repos_of(setup: Setup) -> list[Repository]:
    repos: list[Repository] = [FilesystemRepository("local", setup.repo_dir)]
    if setup.s3 is not None:
        repos.append(
            S3Repository(
                "offsite",
                S3Options(
                    bucket=setup.bucket,
                    endpoint_url=setup.s3.endpoint,
                    region="us-east-1",
                    access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY,
                    max_attempts=2,
                ),
            )
        )
    return repos


def complete_ids(repo: Repository, target: str = "main") -> list[str]:
    return [e.id for e in catalog.scan(repo, target) if e.complete]


def all_keys(repo: Repository, prefix: str = "main/") -> list[str]:
    return [i.key for i in repo.listing(prefix)]


def load_json(text: str) -> Any:
    return json.loads(text)


def seed(setup: Setup, rows: int = 1000) -> None:
    c = setup.cluster
    c.sql("create table orders (id serial primary key, note text not null)")
    c.sql(f"insert into orders (note) select 'order ' || g from generate_series(1, {rows}) g")
    c.sql("create database app")
    c.sql("create table items (id int primary key, name text)", dbname="app")
    c.sql("insert into items select g, 'item ' || g from generate_series(1, 250) g", dbname="app")
    c.sql("create role reader login")


@contextlib.contextmanager
def heartbeat_running(setup: Setup) -> Iterator[None]:
    """`pgproof heartbeat` (every 1 s in the test config) for the duration of the block."""
    beat = subprocess.Popen(
        [PGPROOF, "--config", str(setup.config_path), "heartbeat"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        beat.terminate()
        beat.wait(10)


def backup_under_heartbeat(setup: Setup, seconds_after: float) -> str:
    """As in production: the heartbeat (every 1 s) runs before, during and after the backup."""
    with heartbeat_running(setup):
        time.sleep(1.5)
        backup_id = setup.pgproof("backup", "physical", check=True, timeout=1800).stdout.strip()
        setup.cluster.sql(
            "create table if not exists live_writes (id serial primary key, note text)"
        )
        deadline = time.monotonic() + seconds_after
        i = 0
        while time.monotonic() < deadline:
            setup.cluster.sql(f"insert into live_writes (note) values ('live {i}')")
            i += 1
            time.sleep(0.2)
    setup.wait_archived(setup.cluster.switch_wal())
    return backup_id
