"""moto's server for what SeaweedFS does not do: S3 Object Lock, and AWS KMS. Bound to
127.0.0.1 on a free port, stopped by its PID."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mypy_boto3_s3.client import S3Client

from tests.support.ports import free_port, wait_port
from tests.support.seaweed import s3_client


@dataclass
class MotoS3:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> S3Client:
        return s3_client(self.endpoint)

    def make_bucket(self, name: str, lock: bool = True) -> None:
        """A bucket with Object Lock enabled (versioned), unless ``lock`` is False."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)

    def kms_client(self) -> Any:
        import boto3

        return boto3.client(
            "kms",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def forget_everything(self) -> None:
        """moto's reset: every backend forgets its state (KMS keys as after their deletion)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def moto_s3() -> Iterator[MotoS3]:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoS3(proc, port)
    try:
        wait_port(port)
        yield server
    finally:
        server.stop()
