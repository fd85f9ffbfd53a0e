"""Object Lock (issue 15): an S3 repository with ``object_lock`` writes every backup object,
WAL segment and record with a retain-until date; deleting a locked object fails; retention
keeps what is still locked and says why; ``check`` names objects without a lock in force; a
bucket without Object Lock is refused before anything is written. Against moto's S3 server
(SeaweedFS has no Object Lock)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
import yaml

from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.motoserver import MotoS3, moto_s3

pytestmark = pytest.mark.integration
DAYS = 7


def _lock(setup: Setup, **repo: object) -> None:
    doc = yaml.safe_load(setup.config_path.read_text())
    offsite = next(r for r in doc["repositories"] if r["name"] == "offsite")
    offsite.update(repo)
    doc["targets"][0]["heartbeat"] = {"enabled": False}  # no heartbeat process runs here
    setup.config_path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def locked(moto: MotoS3) -> Iterator[Setup]:
    setup = make_setup(15, moto)
    try:
        _lock(setup, object_lock={"mode": "COMPLIANCE", "days": DAYS})
        setup.cluster.pgbench("-i", "-q", "-s", "1")
        yield setup
    finally:
        destroy_setup(setup)


def _objects(moto: MotoS3, bucket: str) -> list[str]:
    answer = moto.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def test_every_write_once_object_is_locked_and_cannot_be_deleted(
    locked: Setup, moto: MotoS3
) -> None:
    s = locked
    s.pgproof("backup", "logical", check=True)
    s.pgproof("backup", "physical", check=True)
    s.wait_archived(s.cluster.switch_wal())
    verified = json.loads(s.pgproof("verify", "--kind", "physical", "--json").stdout)
    assert verified["passed"], verified
    client = moto.client()
    keys = _objects(moto, s.bucket)
    write_once = [k for k in keys if k.split("/")[1] in ("backups", "wal", "results")]
    assert any("/wal/" in k for k in write_once) and any("/results/" in k for k in write_once)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=DAYS - 1)
    for key in write_once:
        head = client.head_object(Bucket=s.bucket, Key=key)
        assert head.get("ObjectLockMode") == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] > soon, key
    for key in (k for k in keys if "/jobs/" in k):  # rewritten by every job: not locked
        assert "ObjectLockMode" not in client.head_object(Bucket=s.bucket, Key=key)
    # deleting a locked object (its version: a plain delete only hides it) fails
    victim = next(k for k in write_once if k.endswith("manifest.json"))
    version = client.head_object(Bucket=s.bucket, Key=victim)["VersionId"]
    answer = client.delete_objects(
        Bucket=s.bucket, Delete={"Objects": [{"Key": victim, "VersionId": version}]}
    )
    assert answer.get("Errors") and answer["Errors"][0]["Code"] == "AccessDenied"
    check = json.loads(s.pgproof("check", "--json").stdout)
    assert check["healthy"], check  # every lock in place


def test_retention_keeps_locked_backups_and_says_until_when(locked: Setup, moto: MotoS3) -> None:
    s = locked
    for _ in range(2):
        s.pgproof("backup", "logical", check=True)
    doc = yaml.safe_load(s.config_path.read_text())
    doc["targets"][0]["retention"] = {"full_backups": 1}
    s.config_path.write_text(yaml.safe_dump(doc))
    before = _objects(moto, s.bucket)
    done = s.pgproof("retention", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["repository"]: r for r in json.loads(done.stdout)["retention"]}
    offsite, local = rows["offsite"], rows["local"]
    assert offsite["delete_backups"] == [] and len(offsite["locked"]) == 1, offsite
    (why,) = offsite["locked"].values()
    assert why.startswith("locked until ") and "Object Lock" in why
    assert len(local["delete_backups"]) == 1  # the filesystem copy goes as the policy says
    assert _objects(moto, s.bucket) == before  # nothing was deleted, nothing hidden


def test_an_unlocked_object_is_named_by_check(locked: Setup, moto: MotoS3) -> None:
    s = locked
    s.pgproof("backup", "logical", check=True)
    client = moto.client()
    key = next(k for k in _objects(moto, s.bucket) if "/backups/" in k)
    body = client.get_object(Bucket=s.bucket, Key=key)["Body"].read()
    head = client.head_object(Bucket=s.bucket, Key=key)
    # someone rewrote it without a lock (a new version on top of the locked one)
    client.put_object(Bucket=s.bucket, Key=key, Body=body, Metadata=head["Metadata"])
    check = json.loads(s.pgproof("check", "--json").stdout)
    assert not check["healthy"]
    problems = [p for p in check["targets"][0]["problems"] if "Object Lock" in p]
    assert problems and key in problems[0], problems


def test_a_bucket_without_object_lock_is_refused_before_writing(moto: MotoS3) -> None:
    setup = make_setup(15, None)
    try:
        moto.make_bucket("no-lock", lock=False)
        doc = yaml.safe_load(setup.config_path.read_text())
        doc["repositories"].append(
            {
                "name": "offsite",
                "type": "s3",
                "bucket": "no-lock",
                "endpoint_url": moto.endpoint,
                "region": "us-east-1",
                "access_key_id_env": "PGPROOF_TEST_S3_KEY",
                "secret_access_key_env": "PGPROOF_TEST_S3_SECRET",
                "object_lock": {"mode": "GOVERNANCE", "days": 3},
            }
        )
        doc["targets"][0]["repositories"] = ["local", "offsite"]
        setup.config_path.write_text(yaml.safe_dump(doc))
        done = setup.pgproof("backup", "logical", "--json")
        assert done.returncode == 1
        assert "does not have Object Lock enabled" in done.stdout + done.stderr
        assert "no-lock" in done.stdout + done.stderr
        listed = moto.client().list_objects_v2(Bucket="no-lock").get("Contents", [])
        assert [o["Key"] for o in listed if "/backups/" in o["Key"]] == []
    finally:
        destroy_setup(setup)
