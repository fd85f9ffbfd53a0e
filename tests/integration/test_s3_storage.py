"""The S3 repository against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator

import pytest

from pgproof.backups.errors import ObjectNotFound, StorageError
from pgproof.backups.storage.s3 import S3Repository
from pgproof.backups.storage.s3options import S3Options
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

pytestmark = pytest.mark.integration
PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(seaweed: SeaweedS3) -> str:
    name = f"st-{secrets.token_hex(4)}"
    seaweed.make_bucket(name)
    return name


def repo(seaweed: SeaweedS3, bucket: str, **kw: object) -> S3Repository:
    options = S3Options(
        bucket=bucket,
        prefix="pre/fix",
        endpoint_url=seaweed.endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        part_size=PART,
        max_attempts=2,
        **kw,  # type: ignore[arg-type]
    )
    return S3Repository("offsite", options)


SEED = os.urandom(1 << 20)


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    for i in range(0, total, size):
        yield SEED[: min(size, total - i)]


@pytest.mark.parametrize("sse", [None, "AES256"])
def test_single_and_multipart_with_encryption_and_storage_class(
    seaweed: SeaweedS3, bucket: str, sse: str | None
) -> None:
    r = repo(seaweed, bucket, sse=sse, storage_class="STANDARD_IA")
    small = r.put_bytes("t/wal/a", b"x" * 1000, {"source-sha256": "abc"})
    assert small.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    info = r.head("t/wal/a")
    assert info is not None and info.metadata["source-sha256"] == "abc"
    assert info.metadata["sha256"] == small.sha256

    data = b"".join(chunks(3 * PART + 12345))
    big = r.put("t/backups/b/base.tar.zst", chunks(3 * PART + 12345))
    assert (big.size, big.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert r.read_bytes("t/backups/b/base.tar.zst") == data
    head = seaweed.client().head_object(Bucket=bucket, Key="pre/fix/t/backups/b/base.tar.zst")
    assert head.get("StorageClass") == "STANDARD_IA"
    if sse:
        assert head.get("ServerSideEncryption") == sse
    assert [i.key for i in r.listing("t/")] == ["t/backups/b/base.tar.zst", "t/wal/a"]
    r.delete(["t/wal/a", "t/backups/b/base.tar.zst", "t/never/was"])
    assert list(r.listing("t/")) == []
    with pytest.raises(ObjectNotFound):
        r.read_bytes("t/wal/a")


def test_failed_stream_aborts_the_multipart_upload(seaweed: SeaweedS3, bucket: str) -> None:
    r = repo(seaweed, bucket)

    def broken() -> Iterator[bytes]:
        yield from chunks(2 * PART + 100)
        raise RuntimeError("pg_basebackup died")

    with pytest.raises(RuntimeError):
        r.put("t/backups/b/base.tar.zst", broken())
    assert list(r.listing("t/")) == []
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_cleanup_aborts_uploads_left_by_a_killed_process(seaweed: SeaweedS3, bucket: str) -> None:
    client = seaweed.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="pre/fix/t/backups/x/base")
    client.upload_part(
        Bucket=bucket,
        Key="pre/fix/t/backups/x/base",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"z" * PART,
    )
    r = repo(seaweed, bucket)
    assert r.cleanup_incomplete("t/backups/", 3600) == []  # too young to be abandoned
    assert r.cleanup_incomplete("t/backups/", 0) == ["t/backups/x/base"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_unreachable_server_is_a_storage_error() -> None:
    options = S3Options(
        bucket="b",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="a",
        secret_access_key="b",
        max_attempts=1,
        connect_timeout=1,
    )
    with pytest.raises(StorageError, match="cannot stat t/x"):
        S3Repository("offsite", options).head("t/x")
