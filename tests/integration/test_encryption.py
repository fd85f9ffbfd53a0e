"""Client-side encryption (issue 15) against real PostgreSQL, SeaweedFS and moto's KMS.

An encrypted filesystem and S3 repository hold nothing readable without the master key and
restore-test (logical, physical PITR) to ``passed``; every broken case is a verdict naming
the object (damage: ``failed`` with decrypt-failed; a key this host lacks: ``error`` with
key-unavailable), and nothing stored changes while it is judged.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgproof.backups import crypto, pgbin
from pgproof.backups.runner import Runner
from tests.integration.helpers import heartbeat_running
from tests.support.fixtures import PGPROOF, Setup, destroy_setup, make_setup, s3_env
from tests.support.monitoring import exporter_once
from tests.support.motoserver import MotoS3, moto_s3
from tests.support.pgbackrest import tree_hash
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration


def new_key(directory: Path, name: str) -> Path:
    """A master key made by `pgproof keys generate`, owned by postgres (wal-push runs as it)."""
    path = directory / name
    subprocess.run(
        [PGPROOF, "keys", "generate", "--type", "master", "--out", str(path)], check=True
    )
    pg = pwd.getpwnam("postgres")
    os.chown(path, pg.pw_uid, pg.pw_gid)
    return path


def kid(path: Path) -> str:
    return crypto.key_id(base64.b64decode(path.read_text()))


def configure(setup: Setup, **encryption: Any) -> None:
    """Each named repository's ``encryption`` settings (None: plain)."""
    doc = yaml.safe_load(setup.config_path.read_text())
    for repo in doc["repositories"]:
        if repo["name"] in encryption:
            if encryption[repo["name"]] is None:
                repo.pop("encryption", None)
            else:
                repo["encryption"] = encryption[repo["name"]]
    setup.config_path.write_text(yaml.safe_dump(doc))


def keys_dir(setup: Setup) -> Path:
    path = setup.config_path.parent / "keys"
    path.mkdir(exist_ok=True, mode=0o755)
    return path


def verify(setup: Setup, *args: str) -> dict[str, Any]:
    done = setup.pgproof("verify", "--json", *args)
    assert done.stdout, done.stderr
    (record,) = json.loads(done.stdout)["results"]
    return dict(record)


def stored_objects(setup: Setup) -> dict[str, bytes]:
    return {
        str(p.relative_to(setup.repo_dir)): p.read_bytes()
        for p in sorted(setup.repo_dir.rglob("*"))
        if p.is_file() and not p.name.endswith(".pgproof-meta")
    }


@pytest.fixture
def encrypted(seaweed: SeaweedS3) -> Iterator[Setup]:
    s = make_setup(15, seaweed)
    try:
        keys = keys_dir(s)
        configure(
            s,
            local={"key_file": str(new_key(keys, "local.key"))},
            offsite={"key_file": str(new_key(keys, "offsite.key"))},
        )
        yield s
    finally:
        destroy_setup(s)


def test_encrypted_repositories_hold_no_plaintext_and_restore_tests_pass(
    encrypted: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = encrypted
    for name, value in s3_env().items():  # the exporter runs in this process
        monkeypatch.setenv(name, value)
    s.cluster.pgbench("-i", "-q", "-s", "1")
    s.pgproof("backup", "logical", check=True)
    with heartbeat_running(s):
        s.pgproof("backup", "physical", check=True)
        s.cluster.pgbench("-c", "2", "-T", "3")
    s.wait_archived(s.cluster.switch_wal())

    # nothing readable at rest, in either repository: every object is pgproof's framing,
    # and no name from inside the database shows through (manifests list every table)
    local = stored_objects(s)
    s3 = s.s3
    assert s3 is not None
    client = s3.client()
    remote = {
        o["Key"]: client.get_object(Bucket=s.bucket, Key=o["Key"])["Body"].read()
        for o in client.list_objects_v2(Bucket=s.bucket)["Contents"]
    }
    for where, objects in (("local", local), ("offsite", remote)):
        data = {k: v for k, v in objects.items() if not k.endswith("jobs/keys.json")}
        assert len(data) > 10, where
        plain = [k for k, v in data.items() if not v.startswith(crypto.MAGIC)]
        assert not plain, (where, plain)
        assert not [k for k, v in data.items() if b"pgbench_accounts" in v], where

    logical = verify(s, "--kind", "logical")
    assert logical["verdict"] == "passed", logical["cause"]
    physical = verify(s, "--kind", "physical", "--pitr", "random")
    assert physical["verdict"] == "passed", physical["cause"]
    assert {c["name"] for c in physical["checks"]} >= {"amcheck", "heartbeat"}

    # serve's exporter reads the encrypted repositories with the same keys
    text, _alerts = exporter_once(s.config_path)
    for repo in ("local", "offsite"):
        assert f'pgproof_repository_up{{repository="{repo}"}} 1.0' in text
    for kind in ("logical", "physical"):
        assert f'pgproof_restore_test_last_status{{kind="{kind}",target="main"}} 1.0' in text
        assert f'pgproof_backup_age_seconds{{kind="{kind}",target="main"}}' in text

    checked = s.pgproof("check", "--json")
    assert json.loads(checked.stdout)["healthy"], checked.stdout
    (report,) = json.loads(checked.stdout)["targets"]
    for repo, key in (("local", "local.key"), ("offsite", "offsite.key")):
        (rep,) = [r for r in report["repositories"] if r["repository"] == repo]
        enc = rep["encryption"]
        expected = kid(keys_dir(s) / key)
        assert enc["current_key"] == expected
        assert enc["counted"] == "every object"
        assert set(enc["objects_per_key"]) == {expected}
        assert enc["objects_per_key"][expected] > 10


@pytest.fixture
def local_only() -> Iterator[Setup]:
    """One encrypted filesystem repository holding a logical and a physical backup."""
    s = make_setup(15, None)
    try:
        doc = yaml.safe_load(s.config_path.read_text())
        doc["targets"][0]["heartbeat"] = {"enabled": False}  # no heartbeat process here
        s.config_path.write_text(yaml.safe_dump(doc))
        configure(s, local={"key_file": str(new_key(keys_dir(s), "first.key"))})
        s.cluster.pgbench("-i", "-q", "-s", "1")
        s.pgproof("backup", "logical", check=True)
        s.pgproof("backup", "physical", check=True)
        s.wait_archived(s.cluster.switch_wal())
        yield s
    finally:
        destroy_setup(s)


def trees(s: Setup) -> tuple[str, str]:
    return tree_hash(s.repo_dir / "main" / "backups"), tree_hash(s.repo_dir / "main" / "wal")


def segments(s: Setup) -> list[Path]:
    wal = s.repo_dir / "main" / "wal"
    return sorted(
        p for p in wal.iterdir() if len(p.name) == 28 and p.name.endswith(".zst")
    )  # compressed segments, not their metadata sidecars


def base_file(s: Setup) -> Path:
    (base,) = (s.repo_dir / "main" / "backups").glob("*/base.tar.zst")
    return base


def test_damaged_encrypted_objects_fail_naming_the_object(local_only: Setup) -> None:
    s = local_only
    before = trees(s)
    newest, older = segments(s)[-1], segments(s)[-2]
    base = base_file(s)
    originals = {p: p.read_bytes() for p in (newest, older, base)}

    def flipped() -> None:
        data = bytearray(originals[newest])
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(bytes(data))

    cases = {
        "a flipped byte in a WAL segment": (flipped, newest.name),
        "a truncated base backup": (lambda: base.write_bytes(originals[base][:-100]), base.name),
        "a segment swapped with another": (
            lambda: newest.write_bytes(originals[older]),
            newest.name,
        ),
    }
    for what, (damage, named) in cases.items():
        damage()
        try:
            record = verify(s, "--kind", "physical", "--pitr", "latest")
            print(f"{what}: {record['verdict']}: {record['cause']}")
            assert record["verdict"] == "failed", (what, record["verdict"], record["cause"])
            assert "decrypt-failed" in record["cause"], (what, record["cause"])
            assert named.split(".")[0] in record["cause"], (what, record["cause"])
            checked = json.loads(s.pgproof("check", "--json").stdout)
            assert not checked["healthy"], what
            problems = " ".join(checked["targets"][0]["problems"])
            assert "decrypt-failed" in problems and named.split(".")[0] in problems, problems
        finally:
            for path, data in originals.items():
                path.write_bytes(data)
    assert trees(s) == before  # judged, never changed
    record = verify(s, "--kind", "physical", "--pitr", "latest")
    assert record["verdict"] == "passed", record["cause"]


def test_keys_this_host_lacks_are_errors_naming_the_object(local_only: Setup) -> None:
    s = local_only
    keys = keys_dir(s)
    first = keys / "first.key"
    before = trees(s)

    # a wrong master key: another key's id, so every object is key-unavailable, named
    configure(s, local={"key_file": str(new_key(keys, "wrong.key"))})
    done = s.pgproof("verify", "--kind", "logical")
    print(f"wrong master key: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1, done.stderr
    assert "key-unavailable" in done.stderr and "main/" in done.stderr, done.stderr
    assert kid(first) in done.stderr
    assert first.read_text().strip() not in done.stderr + done.stdout  # never the key

    # a key file that is not there, or that others can read: refused before anything runs
    configure(s, local={"key_file": str(keys / "absent.key")})
    done = s.pgproof("verify", "--kind", "logical")
    print(f"absent key file: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1 and "absent.key: No such file" in done.stderr, done.stderr
    first.chmod(0o644)
    configure(s, local={"key_file": str(first)})
    done = s.pgproof("verify", "--kind", "logical")
    print(f"key file readable by others: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1 and "readable by others" in done.stderr, done.stderr
    first.chmod(0o600)
    assert trees(s) == before  # refused or judged: nothing written, nothing lost

    # rotation: a new current key, the old one kept for what it encrypted
    second = new_key(keys, "second.key")
    configure(s, local={"key_file": str(second), "previous": [{"key_file": str(first)}]})
    record = verify(s, "--kind", "logical")
    assert record["verdict"] == "passed", record["cause"]
    s.pgproof("backup", "logical", check=True)
    checked = json.loads(s.pgproof("check", "--json").stdout)
    assert checked["healthy"], checked["targets"][0]["problems"]
    per_key = checked["targets"][0]["repositories"][0]["encryption"]["objects_per_key"]
    assert set(per_key) == {kid(first), kid(second)}, per_key

    # the old key removed while objects still need it: refused, naming it
    configure(s, local={"key_file": str(second)})
    done = s.pgproof("verify", "--kind", "logical")
    print(f"old key removed: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1, done.stdout
    assert "key-unavailable" in done.stderr and kid(first) in done.stderr, done.stderr
    checked = json.loads(s.pgproof("check", "--json").stdout)
    assert any(kid(first) in p for p in checked["targets"][0]["problems"])
    kept = trees(s)
    pruned = s.pgproof("retention")  # would plan blind to what the old key encrypts
    assert "key-unavailable" in pruned.stderr and kid(first) in pruned.stderr, pruned.stderr
    assert trees(s) == kept  # nothing deleted
    assert trees(s)[1] == before[1]  # the WAL archive untouched throughout


def test_kms_wrapped_repository_passes_and_a_deleted_kms_key_is_key_unavailable(
    seaweed: SeaweedS3,
) -> None:
    """Data keys wrapped by moto's KMS, objects in SeaweedFS; then KMS forgets the key (moto
    reset: as after a deletion's waiting period; moto's Decrypt ignores a pending deletion)."""
    with moto_s3() as moto:
        s = make_setup(15, seaweed)
        try:
            _kms_case(s, moto)
        finally:
            destroy_setup(s)


def _kms_case(s: Setup, moto: MotoS3) -> None:
    kms = moto.kms_client()
    arn = kms.create_key(Description="pgproof test")["KeyMetadata"]["Arn"]
    doc = yaml.safe_load(s.config_path.read_text())
    doc["targets"][0]["heartbeat"] = {"enabled": False}
    doc["targets"][0]["repositories"] = ["offsite"]
    s.config_path.write_text(yaml.safe_dump(doc))
    configure(s, offsite={"kms_key_id": arn, "kms_endpoint_url": moto.endpoint})
    s.cluster.pgbench("-i", "-q", "-s", "1")
    s.pgproof("backup", "logical", check=True)
    assert s.s3 is not None
    client = s.s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s.bucket)["Contents"]]
    dump = next(k for k in keys if k.endswith(".dump"))
    head = client.get_object(Bucket=s.bucket, Key=dump)["Body"].read()
    assert crypto.key_id_of(head, dump) == arn  # the header names the key, not a secret
    record = verify(s, "--kind", "logical")
    assert record["verdict"] == "passed", record["cause"]

    moto.forget_everything()
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s.bucket)["Contents"])
    done = s.pgproof("verify", "--kind", "logical")
    print(f"KMS key gone: exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 1, done.stdout
    assert "key-unavailable" in done.stderr and arn in done.stderr, done.stderr
    assert "main/" in done.stderr, done.stderr  # the object is named
    after = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s.bucket)["Contents"])
    assert after == listed  # nothing written or lost


def test_fetch_gives_a_restore_by_hand_its_plaintext_files(local_only: Setup) -> None:
    s = local_only
    listed = json.loads(s.pgproof("list", "--json").stdout)["backups"]
    ids = {b["kind"]: b["id"] for b in listed if b.get("state") == "complete"}
    out = s.config_path.parent / "fetched"
    done = s.pgproof("fetch", "--backup", ids["logical"], "--out", str(out / "logical"), "--json")
    assert done.returncode == 0, done.stderr
    fetched = json.loads(done.stdout)
    dumps = [Path(f) for f in fetched["files"] if f.endswith(".dump")]
    assert dumps and all(p.read_bytes().startswith(b"PGDMP") for p in dumps)  # pg_restore's
    newest = pgbin.find(max(pgbin.installed_majors()), Runner())  # as new as the pg_dump
    listing = subprocess.run(
        [str(newest.path("pg_restore")), "--list", str(dumps[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    done = s.pgproof("fetch", "--backup", ids["physical"], "--out", str(out / "physical"))
    assert done.returncode == 0, done.stderr
    members = subprocess.run(
        f"zstd -dc {out / 'physical' / 'base.tar.zst'} | tar -t",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "PG_VERSION" in members and "backup_label" in members

    # into a directory that holds files: refused; a damaged object: named, nothing partial
    again = s.pgproof("fetch", "--backup", ids["physical"], "--out", str(out / "physical"))
    assert again.returncode == 2 and "not empty" in again.stderr
    base = base_file(s)
    original = base.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    base.write_bytes(bytes(damaged))
    try:
        bad = s.pgproof("fetch", "--backup", ids["physical"], "--out", str(out / "damaged"))
    finally:
        base.write_bytes(original)
    assert bad.returncode == 1 and "decrypt-failed" in bad.stderr, bad.stderr
    assert "base.tar.zst" in bad.stderr
    assert not list((out / "damaged").glob("base.tar.zst*"))
