"""Fixtures over real servers: PostgreSQL clusters, SeaweedFS, and pgproof configs."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from mypy_boto3_s3.client import S3Client

from pgproof.verifier.records import ResultRecord
from tests.support.pgcluster import Cluster, available_majors, make_cluster, private_dir
from tests.support.ports import free_port
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3, start_seaweed

VENV_BIN = Path(sys.executable).parent
PGPROOF = str(VENV_BIN / "pgproof")


def postgres_can_run_pgproof() -> bool:
    probe = subprocess.run(
        ["runuser", "-u", "postgres", "--", PGPROOF, "--version"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    server = start_seaweed()
    try:
        yield server
    finally:
        server.stop()


class S3Server(Protocol):
    """A real S3 server a test runs (SeaweedFS; moto's for Object Lock)."""

    @property
    def endpoint(self) -> str: ...

    def make_bucket(self, name: str) -> None: ...

    def client(self) -> S3Client: ...


@dataclass
class Setup:
    """A source cluster archiving through pgproof into a filesystem and an S3 repository."""

    cluster: Cluster
    config_path: Path
    repo_dir: Path
    bucket: str
    s3: S3Server | None
    target: str = "main"

    def pgproof(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, **s3_env(), **(env or {}))
        proc = subprocess.run(
            [PGPROOF, "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pgproof {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
            )
        return proc

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        doc = yaml.safe_load(self.config_path.read_text())
        change(doc)
        self.config_path.write_text(yaml.safe_dump(doc))

    def wait_archived(self, name: str, timeout: float = 60) -> None:
        """Wait until ``name`` is in the filesystem repository's WAL archive."""
        deadline = time.monotonic() + timeout
        wal = self.repo_dir / self.target / "wal"
        while not ((wal / (name + ".zst")).exists() or (wal / name).exists()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} not archived after {timeout} s:\n{self.cluster.log_tail()}"
                )
            time.sleep(0.1)


def s3_env() -> dict[str, str]:
    return {"PGPROOF_TEST_S3_KEY": ACCESS_KEY, "PGPROOF_TEST_S3_SECRET": SECRET_KEY}


def timed_verify(config: Path, kind: str) -> tuple[float, ResultRecord]:
    """``pgproof verify --kind KIND --json`` (PITR latest): its wall time and its record;
    RuntimeError unless it passed (a benchmark of a failing restore test measures nothing)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [PGPROOF, "--config", str(config), "verify", "--kind", kind, "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ, **s3_env()),
        check=False,
    )
    elapsed = time.perf_counter() - started
    record = ResultRecord.from_dict(json.loads(proc.stdout)["results"][0])
    if not record.passed:
        raise RuntimeError(f"verify {kind} ({record.sandbox}): {record.verdict}: {record.cause}")
    return elapsed, record


def write_config(
    path: Path,
    cluster: Cluster,
    repo_dir: Path,
    s3: S3Server | None,
    bucket: str,
    lock_dir: Path,
    extra_target: dict[str, object] | None = None,
) -> None:
    repos: list[dict[str, object]] = [
        {"name": "local", "type": "filesystem", "path": str(repo_dir)}
    ]
    names = ["local"]
    if s3 is not None:
        repos.append(
            {
                "name": "offsite",
                "type": "s3",
                "bucket": bucket,
                "endpoint_url": s3.endpoint,
                "region": "us-east-1",
                "access_key_id_env": "PGPROOF_TEST_S3_KEY",
                "secret_access_key_env": "PGPROOF_TEST_S3_SECRET",
                "part_size_mb": 5,
            }
        )
        names.append("offsite")
    target: dict[str, object] = {
        "name": "main",
        "conninfo": cluster.conninfo(),
        "repositories": names,
        "max_backup_age": "1h",
        "heartbeat": {"enabled": True, "every_seconds": 1},
        "physical": {"wal_wait_seconds": 60},
        **(extra_target or {}),
    }
    doc = {"lock_dir": str(lock_dir), "repositories": repos, "targets": [target]}
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o644)


def make_setup(
    major: int, s3: S3Server | None, archive: bool = True, checksums: bool = True
) -> Setup:
    if not postgres_can_run_pgproof():
        pytest.skip("the postgres OS user cannot run this venv's pgproof (venv under /root?)")
    base = private_dir("pgproof-setup-")
    repo_dir = base / "repo"
    repo_dir.mkdir()
    os.chown(repo_dir, base.stat().st_uid, base.stat().st_gid)
    bucket = f"pgproof-{secrets.token_hex(4)}"
    if s3 is not None:
        s3.make_bucket(bucket)
    cluster = make_cluster(major, free_port(), env=s3_env())
    config_path = base / "pgproof.yaml"
    write_config(config_path, cluster, repo_dir, s3, bucket, base / "locks")
    settings = {"archive_mode": "off"}
    if archive:
        settings = {
            "archive_mode": "on",
            "archive_command": f"'{PGPROOF} --config {config_path} wal-push %p'",
            "archive_timeout": "0",
        }
    cluster.initdb(checksums=checksums, settings=settings)
    cluster.start()
    return Setup(cluster, config_path, repo_dir, bucket, s3)


def destroy_setup(setup: Setup) -> None:
    setup.cluster.destroy()
    shutil.rmtree(setup.config_path.parent, ignore_errors=True)


@pytest.fixture(params=available_majors() or [15], ids=lambda m: f"pg{m}")
def pg_major(request: pytest.FixtureRequest) -> int:
    major = int(request.param)
    if major not in available_majors():
        pytest.skip(f"PostgreSQL {major} binaries not installed (scripts/fetch-postgres {major})")
    return major


@pytest.fixture
def setup15(seaweed: SeaweedS3) -> Iterator[Setup]:
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    s = make_setup(15, seaweed)
    try:
        yield s
    finally:
        destroy_setup(s)


@pytest.fixture
def setup_matrix(seaweed: SeaweedS3, pg_major: int) -> Iterator[Setup]:
    s = make_setup(pg_major, seaweed)
    try:
        yield s
    finally:
        destroy_setup(s)


@pytest.fixture
def fs_only15() -> Iterator[Setup]:
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    s = make_setup(15, None)
    try:
        yield s
    finally:
        destroy_setup(s)


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A real small filesystem (tmpfs) to fill up; skips when mounting is not allowed."""
    mount_point = private_dir("pgproof-tmpfs-")
    probe = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()
