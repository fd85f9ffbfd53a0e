"""A PostgreSQL source backed up by the real barman-cloud (PyPI's ``barman[cloud]``, in the
venv scripts/setup makes) into SeaweedFS S3: ``barman-cloud-wal-archive -z`` as the
archive_command, ``barman-cloud-backup -z`` for base backups, the layout CloudNativePG's
Barman Cloud plugin writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.pgbackrest import write_pgproof_config
from tests.support.pgcluster import Cluster, make_cluster
from tests.support.ports import free_port
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

SERVER = "pg"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
}


def barman_bin() -> Path | None:
    """Where barman-cloud's commands are (scripts/env.sh exports PGPROOF_BARMAN_BIN)."""
    for candidate in (
        os.environ.get("PGPROOF_BARMAN_BIN"),
        str(Path(__file__).resolve().parents[2] / ".venv-barman" / "bin"),
    ):
        if candidate and (Path(candidate) / "barman-cloud-restore").exists():
            return Path(candidate)
    found = shutil.which("barman-cloud-restore")
    return Path(found).parent if found else None


@dataclass
class BarmanSource:
    cluster: Cluster
    s3: SeaweedS3
    bucket: str
    prefix: str
    bin: Path

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def backup(self) -> str:
        """``barman-cloud-backup`` as the postgres OS user (it reads the data directory)."""
        env = [f"{k}={v}" for k, v in CREDENTIALS.items()]
        env += [f"PGHOST={self.cluster.socket_dir}", f"PGPORT={self.cluster.port}"]
        done = subprocess.run(
            [
                "runuser", "-u", "postgres", "--", "env", *env,
                str(self.bin / "barman-cloud-backup"), f"--endpoint-url={self.s3.endpoint}",
                "-z", "--immediate-checkpoint", "-U", "postgres", self.url, SERVER,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    def keys(self, prefix: str | None = None) -> list[str]:
        client = self.s3.client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix or self.prefix}/"
        ):
            found += [o["Key"] for o in page.get("Contents", [])]
        return sorted(found)

    def copy_to(self, prefix: str, skip: tuple[str, ...] = ()) -> None:
        """A copy of the whole server folder under another prefix (server-side copies),
        leaving out keys that end with one of ``skip``."""
        client = self.s3.client()
        for key in self.keys():
            if key.endswith(skip):
                continue
            dest = prefix + key[len(self.prefix) :]
            client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": key}
            )

    def tree_hash(self, prefix: str | None = None) -> str:
        """Every key and byte under the prefix (equal before and after: nothing written)."""
        client = self.s3.client()
        h = hashlib.sha256()
        for key in self.keys(prefix):
            h.update(key.encode())
            h.update(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return h.hexdigest()


@contextlib.contextmanager
def barman_source(s3: SeaweedS3, major: int, bucket: str, scale: int = 1) -> Iterator[BarmanSource]:
    """The source running and archiving with barman-cloud-wal-archive, pgbench data loaded,
    no base backup yet."""
    bin_dir = barman_bin()
    assert bin_dir is not None, "barman-cloud not installed (scripts/setup)"
    s3.make_bucket(bucket)
    cluster = make_cluster(major, free_port())
    source = BarmanSource(cluster, s3, bucket, "cluster-a", bin_dir)
    try:
        cluster.initdb(checksums=True)
        env = " ".join(f"{k}={v}" for k, v in CREDENTIALS.items())
        archive = (
            f"{env} {bin_dir}/barman-cloud-wal-archive --endpoint-url={s3.endpoint} -z "
            f"{source.url} {SERVER} %p"
        )
        cluster.set(archive_mode="on", archive_command=f"'{archive}'", archive_timeout="0")
        cluster.start()
        cluster.pgbench("-i", "-q", "-s", str(scale), timeout=7200)
        yield source
    finally:
        cluster.destroy()


def _repo(s3: SeaweedS3, name: str, bucket: str, prefix: str) -> dict[str, object]:
    return {
        "name": name,
        "type": "s3",
        "bucket": bucket,
        "prefix": prefix,
        "endpoint_url": s3.endpoint,
        "region": "us-east-1",
        "access_key_id_env": "PGPROOF_TEST_S3_KEY",
        "secret_access_key_env": "PGPROOF_TEST_S3_SECRET",
    }


def _target(name: str, repo: str, bin_dir: Path, **extra: object) -> dict[str, object]:
    source = {"type": "barman-cloud", "repository": repo, "server": SERVER, "bin_dir": str(bin_dir)}
    return {"name": name, "results": "local", "source": source, **extra}


def write_barman_config(
    base: Path, s3: SeaweedS3, src: BarmanSource, targets: dict[str, str], **first: object
) -> Path:
    """One target per prefix (``targets``: name -> prefix); the first takes ``first``."""
    config = write_pgproof_config(
        base,
        *(
            _target(name, name, src.bin, **(first if i == 0 else {}))
            for i, name in enumerate(targets)
        ),
    )
    doc = yaml.safe_load(config.read_text())
    doc["repositories"] += [_repo(s3, n, src.bucket, p) for n, p in targets.items()]
    config.write_text(yaml.safe_dump(doc))
    return config
