"""Signed restore-test records (issue 15): a record signed by the verifying host's key reads
as signed; one edited and re-chained by someone without the key reads as forged, one signed
by a key the config does not trust as unknown-key, one without a signature as unsigned (unless
it predates ``unsigned_before``). Keys are refused when others can read them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.verifier import chain, records, signing
from pgproof.verifier.records import CheckResult, ResultRecord


def _record(i: int, prev: str | None = None) -> ResultRecord:
    return ResultRecord(
        id=f"2026120{i}T000000Z-{i:06x}",
        target="main",
        backup_id=f"b{i}",
        kind="physical",
        started_at=f"2026-12-0{i}T00:00:00.000Z",
        finished_at=f"2026-12-0{i}T00:01:00.000Z",
        verdict="passed",
        checks=(CheckResult("amcheck", "passed", "ok", {"seconds": 1.5, "n": 3}),),
        phases={"total": 60.0},
        rpo_seconds=12.25,
        prev_sha256=prev,
    )


def _keys(tmp_path: Path, name: str = "host") -> tuple[Path, Path]:
    return signing.generate(tmp_path / f"{name}.key")


def _repo(tmp_path: Path, name: str) -> FilesystemRepository:
    (tmp_path / name).mkdir()
    return FilesystemRepository(name, tmp_path / name)


def _store_chain(repo: FilesystemRepository, key_file: Path | None, n: int) -> None:
    key = signing.load_private(str(key_file)) if key_file else None
    prev = None
    for i in range(1, n + 1):
        record = _record(i, prev)
        if key is not None:
            record = signing.sign(record, key)
        assert records.store([repo], record) == {}
        prev = hashlib.sha256(record.to_json()).hexdigest()


def _problems(repo: FilesystemRepository, trust: signing.Trust) -> list[tuple[str, str]]:
    _, problems, errors = chain.verify_target([repo], "main", trust.keys, trust.unsigned_before)
    assert errors == {}
    return [(p.record, p.kind) for p in problems]


def test_records_signed_by_a_trusted_key_verify(tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    repo = _repo(tmp_path, "local")
    _store_chain(repo, private, 3)
    trust = signing.trust_of([str(public)], None)
    assert trust is not None
    assert _problems(repo, trust) == []
    stored = records.read_all(repo, "main")
    found = signing.check(stored[0].record, stored[0].payload, trust.keys)
    assert (found.state, found.signer) == ("signed", "host.key.pub")


def test_an_edited_and_rechained_record_is_forged(tmp_path: Path) -> None:
    """Whoever can write results/ edits a failed test into a pass, fixes the stored sha256
    and the next record's prev_sha256: the chain holds, the signatures do not."""
    private, public = _keys(tmp_path)
    repo = _repo(tmp_path, "local")
    _store_chain(repo, private, 3)
    keys = records.record_keys(repo, "main")
    doc = json.loads(repo.read_bytes(keys[1]))
    doc["verdict"], doc["cause"] = "failed", "edited"
    edited = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    repo.put_bytes(keys[1], edited, {"sha256": hashlib.sha256(edited).hexdigest()})
    after = json.loads(repo.read_bytes(keys[2]))
    after["prev_sha256"] = hashlib.sha256(edited).hexdigest()
    rechained = json.dumps(after, indent=2, sort_keys=True).encode() + b"\n"
    repo.put_bytes(keys[2], rechained, {"sha256": hashlib.sha256(rechained).hexdigest()})
    trust = signing.trust_of([str(public)], None)
    assert trust is not None
    named = _problems(repo, trust)
    assert named == [
        (records._id_of(keys[1]), "forged"),
        (records._id_of(keys[2]), "forged"),
    ], named  # nothing else: the chain itself was mended


def test_unknown_keys_and_unsigned_records_are_named(tmp_path: Path) -> None:
    private, _ = _keys(tmp_path, "old")
    _, trusted_public = _keys(tmp_path, "current")
    repo = _repo(tmp_path, "local")
    _store_chain(repo, private, 2)
    trust = signing.trust_of([str(trusted_public)], None)
    assert trust is not None
    assert {k for _, k in _problems(repo, trust)} == {"unknown-key"}
    plain = _repo(tmp_path, "plain")
    _store_chain(plain, None, 3)
    assert {k for _, k in _problems(plain, trust)} == {"unsigned"}
    # the history from before signing was set up is accepted when the config says so
    before = dataclasses.replace(trust, unsigned_before="2026-12-03T00:00:00.000Z")
    assert _problems(plain, before) == [("20261203T000000Z-000003", "unsigned")]


def test_rotation_keeps_old_records_verifiable(tmp_path: Path) -> None:
    old_private, old_public = _keys(tmp_path, "2025")
    new_private, new_public = _keys(tmp_path, "2026")
    repo = _repo(tmp_path, "local")
    first = signing.sign(_record(1), signing.load_private(str(old_private)))
    records.store([repo], first)
    second = signing.sign(
        _record(2, hashlib.sha256(first.to_json()).hexdigest()),
        signing.load_private(str(new_private)),
    )
    records.store([repo], second)
    trust = signing.trust_of([str(old_public), str(new_public)], None)
    assert trust is not None
    assert _problems(repo, trust) == []


def test_key_files_readable_by_others_or_of_another_kind_are_refused(tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    private.chmod(0o640)
    with pytest.raises(signing.SigningKeyError, match="readable by others"):
        signing.load_private(str(private))
    with pytest.raises(signing.SigningKeyError, match="not a PEM public key"):
        signing.trusted([str(private)])
    with pytest.raises(signing.SigningKeyError, match="never overwrites"):
        signing.generate(private)
    with pytest.raises(signing.SigningKeyError, match="No such file"):
        signing.load_private(str(tmp_path / "absent.key"))


def test_the_cli_writes_keys_without_showing_them(tmp_path: Path) -> None:
    out = tmp_path / "records.ed25519"
    done = subprocess.run(
        [sys.executable, "-m", "pgproof", "keys", "generate", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(done.stdout)
    assert doc["files"] == [str(out), f"{out}.pub"] and len(doc["key_id"]) == 16
    assert out.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in done.stdout + done.stderr
    again = subprocess.run(
        [sys.executable, "-m", "pgproof", "keys", "generate", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "never overwrites" in again.stderr
    master = tmp_path / "master.key"
    subprocess.run(
        [sys.executable, "-m", "pgproof", "keys", "generate", "--type", "master", "--out",
         str(master)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert master.stat().st_mode & 0o777 == 0o600 and len(master.read_text().strip()) == 44
