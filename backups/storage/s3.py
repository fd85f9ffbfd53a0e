"""A repository in an S3 bucket (AWS or any S3-compatible server).

Credentials come from boto3's standard chain (environment, shared files, instance roles), or
from the environment variables the config names. Uploads stream: objects smaller than one
part go up in a single PUT with their sha256 in user metadata and a Content-MD5; larger ones
go as a multipart upload whose parts are sent a few at a time (memory stays bounded by
part size x concurrency), and the completed object's ETag is checked against the MD5s of the
parts we sent. A failed upload is aborted, so no partial object or orphaned parts remain.
Throttling, 5xx answers and timeouts are retried with backoff by botocore's standard mode.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from pgproof.backups.errors import IntegrityError, ObjectNotFound, StorageError
from pgproof.backups.layout import write_once
from pgproof.backups.storage.base import (
    CHUNK_SIZE,
    HashingCounter,
    ObjectInfo,
    Repository,
    StoredObject,
)
from pgproof.backups.storage.s3options import MIN_PART_SIZE, S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


def _error_text(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code', '?')} (HTTP {status}): {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _is_not_found(exc: Exception) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")
    return False


class S3Repository(Repository):
    kind = "s3"

    def __init__(self, name: str, options: S3Options, client: S3Client | None = None):
        self.name = name
        self.options = options
        self.locks = options.lock_mode is not None
        if options.part_size < MIN_PART_SIZE:
            raise StorageError(name, f"part size must be at least {MIN_PART_SIZE} bytes")
        self.client: S3Client = client or self._make_client()

    def _make_client(self) -> S3Client:
        o = self.options
        session = boto3.session.Session(
            profile_name=o.profile,
            aws_access_key_id=o.access_key_id,
            aws_secret_access_key=o.secret_access_key,
            region_name=o.region,
        )
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": o.max_attempts},
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            max_pool_connections=max(10, o.concurrency * 2),
            s3={"addressing_style": "path" if o.force_path_style else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return session.client("s3", endpoint_url=o.endpoint_url, config=config)

    def describe(self) -> str:
        where = f"s3://{self.options.bucket}/{self.options.prefix}".rstrip("/")
        if self.options.endpoint_url:
            where += f" at {self.options.endpoint_url}"
        return where

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(self.name, f"invalid key {key!r}")
        prefix = self.options.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def _unkey(self, full: str) -> str:
        prefix = self.options.prefix.strip("/")
        return full[len(prefix) + 1 :] if prefix else full

    def _put_args(self, metadata: Mapping[str, str] | None, key: str = "") -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.options.sse:
            args["ServerSideEncryption"] = self.options.sse
            if self.options.sse == "aws:kms" and self.options.kms_key_id:
                args["SSEKMSKeyId"] = self.options.kms_key_id
        if self.options.storage_class:
            args["StorageClass"] = self.options.storage_class
        if metadata:
            args["Metadata"] = dict(metadata)
        if self.options.lock_mode and write_once(key):
            args["ObjectLockMode"] = self.options.lock_mode
            args["ObjectLockRetainUntilDate"] = self.retain_until()
        return args

    def retain_until(self) -> dt.datetime:
        """When an object written now may be deleted (Object Lock)."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=self.options.lock_days)

    def lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock enabled (StorageError when it cannot say)."""
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.options.bucket)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
                return False
            raise self._fail("cannot read the bucket's Object Lock configuration", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail("cannot read the bucket's Object Lock configuration", exc) from exc
        config = answer.get("ObjectLockConfiguration", {})
        return config.get("ObjectLockEnabled") == "Enabled"

    def require_locks(self) -> None:
        if self.locks and not self.lock_enabled():
            raise StorageError(
                self.name,
                f"bucket {self.options.bucket} does not have Object Lock enabled, which "
                "object_lock needs: enable it on the bucket (aws s3api "
                "put-object-lock-configuration, versioning on) or remove object_lock",
            )

    def locked_until(self, key: str) -> dt.datetime | None:
        if not self.locks:
            return None
        _, until = self.retention_of(key)
        return until if until is not None and until > dt.datetime.now(dt.UTC) else None

    def retention_of(self, key: str) -> tuple[str | None, dt.datetime | None]:
        """(mode, retain-until) of the object's current version; (None, None) unlocked."""
        try:
            answer = self.client.head_object(Bucket=self.options.bucket, Key=self._key(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot read {key}", exc) from exc
        return answer.get("ObjectLockMode"), answer.get("ObjectLockRetainUntilDate")

    def _fail(self, what: str, exc: Exception) -> StorageError:
        return StorageError(self.name, f"{what}: {_error_text(exc)}")

    # -- writing -----------------------------------------------------------------------
    def put(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        full = self._key(key)
        part_size = self.options.part_size
        counter = HashingCounter()
        buffer = bytearray()
        iterator = iter(chunks)
        for chunk in iterator:
            counter.update(chunk)
            buffer += chunk
            if len(buffer) >= part_size:
                return self._multipart(full, key, buffer, iterator, counter, metadata)
        data = bytes(buffer)
        meta = dict(metadata or {})
        meta.setdefault("sha256", counter.hexdigest())
        md5 = hashlib.md5(data, usedforsecurity=False)
        try:
            answer = self.client.put_object(
                Bucket=self.options.bucket,
                Key=full,
                Body=data,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
                **self._put_args(meta, key),
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot upload {key}", exc) from exc
        self._verify(key, full, counter.size, answer.get("ETag"), f'"{md5.hexdigest()}"', meta)
        return StoredObject(key, counter.size, counter.hexdigest())

    def _multipart(
        self,
        full: str,
        key: str,
        first: bytearray,
        rest: Iterator[bytes],
        counter: HashingCounter,
        metadata: Mapping[str, str] | None,
    ) -> StoredObject:
        bucket = self.options.bucket
        part_size = self.options.part_size
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=bucket, Key=full, **self._put_args(metadata, key)
            )["UploadId"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot start upload of {key}", exc) from exc
        parts: list[dict[str, Any]] = []
        pool = concurrent.futures.ThreadPoolExecutor(self.options.concurrency)
        pending: list[concurrent.futures.Future[dict[str, Any]]] = []

        def send(number: int, body: bytes) -> dict[str, Any]:
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            answer = self.client.upload_part(
                Bucket=bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=base64.b64encode(md5).decode(),
            )
            return {"PartNumber": number, "ETag": answer["ETag"], "md5": md5}

        def submit(body: bytes) -> None:
            # Bounded memory: at most `concurrency` parts in flight plus the one being filled.
            while len([f for f in pending if not f.done()]) >= self.options.concurrency:
                concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for done in [f for f in pending if f.done()]:
                done.result()  # raise early on a failed part
            pending.append(pool.submit(send, len(pending) + 1, body))

        try:
            buffer = first
            while len(buffer) >= part_size:
                submit(bytes(buffer[:part_size]))
                del buffer[:part_size]
            for chunk in rest:
                counter.update(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    submit(bytes(buffer[:part_size]))
                    del buffer[:part_size]
            if buffer or not pending:
                submit(bytes(buffer))
            buffer = bytearray()
            parts = [f.result() for f in pending]
            answer = self.client.complete_multipart_upload(
                Bucket=bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
                },
            )
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                pass  # cleanup_incomplete() aborts it later
            if isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
                raise self._fail(f"cannot upload {key}", exc) from exc
            raise
        pool.shutdown(wait=True)
        combined = hashlib.md5(b"".join(p["md5"] for p in parts), usedforsecurity=False)
        expected = f'"{combined.hexdigest()}-{len(parts)}"'
        self._verify(key, full, counter.size, answer.get("ETag"), expected, metadata)
        return StoredObject(key, counter.size, counter.hexdigest())

    def _verify(
        self,
        key: str,
        full: str,
        size: int,
        etag: str | None,
        expected_etag: str,
        metadata: Mapping[str, str] | None,
    ) -> None:
        """Check what the server stored: size, and the MD5-based ETag unless SSE-KMS hides it."""
        try:
            head = self.client.head_object(Bucket=self.options.bucket, Key=full)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot confirm upload of {key}", exc) from exc
        if head["ContentLength"] != size:
            raise IntegrityError(
                self.name, f"{key}: stored {head['ContentLength']} bytes, sent {size}"
            )
        if self.options.sse != "aws:kms" and etag and etag != expected_etag:
            raise IntegrityError(self.name, f"{key}: ETag {etag} does not match {expected_etag}")
        stored_meta = head.get("Metadata", {})
        for name, value in (metadata or {}).items():
            if stored_meta.get(name.lower()) != value:
                raise IntegrityError(self.name, f"{key}: metadata {name} was not stored")

    # -- reading -----------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.options.bucket, Key=self._key(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if _is_not_found(exc):
                return None
            raise self._fail(f"cannot stat {key}", exc) from exc
        return ObjectInfo(
            key, head["ContentLength"], head["LastModified"].timestamp(), head.get("Metadata", {})
        )

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            answer = self.client.get_object(Bucket=self.options.bucket, Key=self._key(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(self.name, f"{key} does not exist") from None
            raise self._fail(f"cannot read {key}", exc) from exc
        return self._body(answer["Body"], key, chunk_size)

    def _body(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot read {key}", exc) from exc
        finally:
            body.close()

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.options.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        self._unkey(item["Key"]), item["Size"], item["LastModified"].timestamp()
                    )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot list {prefix}", exc) from exc

    def probe(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.options.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"bucket {self.options.bucket}", exc) from exc

    def child_names(self, prefix: str, start_after: str | None = None) -> list[str]:
        """One delimiter listing: common prefixes are the sub-folders."""
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix.rstrip("/")) + "/"
        args: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": full, "Delimiter": "/"}
        if start_after is not None:
            args["StartAfter"] = full + start_after
        names: list[str] = []
        try:
            for page in paginator.paginate(**args):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(full) :]
                    if start_after is None or name.rstrip("/") > start_after:
                        names.append(name)
                names.extend(item["Key"][len(full) :] for item in page.get("Contents", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"cannot list {prefix}", exc) from exc
        return names

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _versions(self, batch: list[str]) -> list[dict[str, str]]:
        """Every version and delete marker of the keys (an Object Lock bucket is versioned:
        deleting without a version id only hides an object)."""
        wanted = set(batch)
        found: list[dict[str, str]] = []
        paginator = self.client.get_paginator("list_object_versions")
        for folder in sorted({k.rsplit("/", 1)[0] + "/" for k in batch}):  # one listing each
            for page in paginator.paginate(Bucket=self.options.bucket, Prefix=folder):
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if v["Key"] in wanted:
                        found.append({"Key": v["Key"], "VersionId": v["VersionId"]})
        return found

    def _delete_batch(self, batch: list[str]) -> None:
        try:
            objects: list[dict[str, str]] = (
                self._versions(batch) if self.locks else [{"Key": k} for k in batch]
            )
            if not objects:
                return
            answer = self.client.delete_objects(
                Bucket=self.options.bucket,
                Delete={"Objects": objects, "Quiet": True},  # type: ignore[typeddict-item]
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("cannot delete", exc) from exc
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            raise StorageError(
                self.name, f"cannot delete {first.get('Key')}: {first.get('Message')}"
            )

    def cleanup_incomplete(self, prefix: str, older_than_seconds: float) -> list[str]:
        """Abort multipart uploads left behind by a killed process."""
        removed: list[str] = []
        cutoff = time.time() - older_than_seconds
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.options.bucket, Prefix=self._key(prefix)):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() > cutoff:
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.options.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed.append(self._unkey(upload["Key"]))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("cannot list incomplete uploads", exc) from exc
        return removed

    def close(self) -> None:
        self.client.close()
