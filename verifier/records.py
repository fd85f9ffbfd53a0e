"""Restore-test result records: one JSON document per run, hash-chained per target.

This module owns the document: its typed, frozen model (``ResultRecord``), its one strict
reader (``ResultRecord.from_json`` / ``read``) and its writer (``store``). Every other
package (reports, the chain check, metrics, retention, ``list``) reads records through it.

Each record carries ``prev_sha256``: the sha256 of the previous record of the same target
(the exact bytes stored), so editing, removing or inserting a record breaks the chain
(``pgproof report --verify-chain``). Records are written to every repository of the target
under ``<target>/results/<result-id>.json``; a restore test never writes anything else.

Format 1 is read whatever pgproof version wrote it: fields added since (``sandbox_image``,
``pitr``...) read as their defaults; a record of a newer format is refused by name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pgproof.backups.errors import BackupError
from pgproof.backups.kinds import Kind, is_kind
from pgproof.backups.layout import results_prefix
from pgproof.backups.storage.base import Repository
from pgproof.verifier.verdicts import Verdict, combine, is_verdict

RECORD_FORMAT = 1


class RecordError(ValueError):
    """A stored document that is not a result record this pgproof can read."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: object) -> CheckResult:
        doc = _object(raw, "a check")
        verdict = doc.get("verdict")
        if not is_verdict(verdict):
            raise RecordError(f"check verdict {verdict!r} is not passed, failed or error")
        return cls(
            _text(doc, "name", required=True),
            verdict,
            _text(doc, "detail"),
            _object(doc.get("evidence") or {}, "evidence"),
        )


@dataclass(frozen=True)
class Pitr:
    """Where a physical restore test asked recovery to stop, and where it did stop."""

    requested: str  # latest | random | immediate | time:... | lsn:... | xid:... | name:...
    mode: str
    target_time: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # recovery_target_* as set
    reached_lsn: str | None = None
    reached_time: str | None = None  # the last replayed commit
    stop_reason: str | None = None
    newest_recoverable: str | None = None  # what the archive could give back at the test

    @classmethod
    def from_dict(cls, raw: object) -> Pitr | None:
        doc = _object(raw, "pitr")
        if not doc:
            return None  # a logical restore test: no recovery
        settings = _object(doc.get("settings") or {}, "pitr.settings")
        return cls(
            _text(doc, "requested", required=True),
            _text(doc, "mode"),
            _opt_text(doc, "target_time"),
            {str(k): str(v) for k, v in settings.items()},
            _opt_text(doc, "reached_lsn"),
            _opt_text(doc, "reached_time"),
            _opt_text(doc, "stop_reason"),
            _opt_text(doc, "newest_recoverable"),
        )


@dataclass(frozen=True)
class BackupRef:
    """The tested backup as it was found: where, how big, when it ended."""

    repository: str
    size_bytes: int = 0
    finished_at: str = ""
    compression: str = ""
    # another tool's backup: where its time comes from (the tool's listing, a file or folder
    # name, a file's mtime, its backup_label) and the files tested ("" / (): pgproof's own)
    time_from: str = ""
    files: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: object) -> BackupRef | None:
        doc = _object(raw, "backup")
        if not doc:
            return None
        files = doc.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise RecordError("backup.files is not a list of names")
        return cls(
            _text(doc, "repository"),
            _int(doc, "size_bytes"),
            _text(doc, "finished_at"),
            _text(doc, "compression"),
            _text(doc, "time_from"),
            tuple(files),
        )


@dataclass(frozen=True)
class Signature:
    """Who vouches for a record: an Ed25519 signature (``verifier.signing``) over the record's
    canonical bytes without this field (``payload_of``), by the key ``key_id`` names."""

    key_id: str
    value: str  # base64
    algorithm: str = "ed25519"

    @classmethod
    def from_dict(cls, raw: object) -> Signature | None:
        doc = _object(raw, "signature")
        if not doc:
            return None
        return cls(
            _text(doc, "key_id", required=True),
            _text(doc, "value", required=True),
            _text(doc, "algorithm") or "ed25519",
        )


def payload_of(doc: Mapping[str, Any]) -> bytes:
    """The bytes a record's signature covers: its JSON document without ``signature``,
    canonical (sorted keys, no spaces), so that any reader computes the same bytes."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ResultRecord:
    id: str
    target: str
    backup_id: str
    kind: Kind
    started_at: str
    finished_at: str
    verdict: Verdict
    cause: str = ""
    pitr: Pitr | None = None
    checks: tuple[CheckResult, ...] = ()
    phases: Mapping[str, float] = field(default_factory=dict)
    rpo_seconds: float | None = None
    bytes_restored: int = 0
    pg_version: str = ""
    sandbox: str = ""
    sandbox_image: str = ""  # the container sandbox's image
    pgproof_version: str = ""
    backup: BackupRef | None = None
    prev_sha256: str | None = None
    format: int = RECORD_FORMAT
    signature: Signature | None = None  # None: unsigned (no signing key configured)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["pitr"] = doc["pitr"] or {}  # the stored shape: {} when there was no recovery
        doc["backup"] = doc["backup"] or {}
        if doc["signature"] is None:
            del doc["signature"]  # an unsigned record is stored as before signing existed
        return doc

    def payload(self) -> bytes:
        """What a signature of this record covers (``payload_of``)."""
        return payload_of(self.to_dict())

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_dict(cls, raw: object) -> ResultRecord:
        doc = _object(raw, "a result record")
        fmt = doc.get("format", RECORD_FORMAT)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise RecordError(f"format {fmt!r} is not a record format")
        if fmt > RECORD_FORMAT:
            raise RecordError(f"format {fmt} is newer than this pgproof reads ({RECORD_FORMAT})")
        kind, verdict = doc.get("kind"), doc.get("verdict")
        if not is_kind(kind):
            raise RecordError(f"kind {kind!r} is not logical or physical")
        if not is_verdict(verdict):
            raise RecordError(f"verdict {verdict!r} is not passed, failed or error")
        checks = doc.get("checks") or []
        if not isinstance(checks, list):
            raise RecordError("checks is not a list")
        phases = _object(doc.get("phases") or {}, "phases")
        rpo = doc.get("rpo_seconds")
        prev = doc.get("prev_sha256")
        if prev is not None and not isinstance(prev, str):
            raise RecordError("prev_sha256 is not a string")
        return cls(
            id=_text(doc, "id", required=True),
            target=_text(doc, "target", required=True),
            backup_id=_text(doc, "backup_id", required=True),
            kind=kind,
            started_at=_text(doc, "started_at", required=True),
            finished_at=_text(doc, "finished_at", required=True),
            verdict=verdict,
            cause=_text(doc, "cause"),
            pitr=Pitr.from_dict(doc.get("pitr") or {}),
            checks=tuple(CheckResult.from_dict(c) for c in checks),
            phases={str(k): float(v) for k, v in phases.items() if _number(v)},
            rpo_seconds=float(rpo) if isinstance(rpo, int | float) and _number(rpo) else None,
            bytes_restored=_int(doc, "bytes_restored"),
            pg_version=_text(doc, "pg_version"),
            sandbox=_text(doc, "sandbox"),
            sandbox_image=_text(doc, "sandbox_image"),
            pgproof_version=_text(doc, "pgproof_version"),
            backup=BackupRef.from_dict(doc.get("backup") or {}),
            prev_sha256=prev,
            format=fmt,
            signature=Signature.from_dict(doc.get("signature") or {}),
        )

    @classmethod
    def from_json(cls, data: bytes) -> ResultRecord:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise RecordError(f"not JSON: {exc}") from None
        return cls.from_dict(raw)


def decide(checks: Sequence[CheckResult]) -> Verdict:
    """The verdict of a restore test whose steps all ran: its checks' verdicts combined."""
    return combine(c.verdict for c in checks)


def cause_of(checks: Sequence[CheckResult]) -> str:
    """What made a test not pass, from its checks (the first three that did not pass)."""
    bad = [c for c in checks if c.verdict != "passed"]
    return "; ".join(f"{c.name}: {c.detail}" for c in bad[:3])


@dataclass(frozen=True)
class StoredRecord:
    """One record as stored: its bytes' sha256 and, when it reads, the record itself."""

    key: str
    id: str  # from the key
    sha256: str
    record: ResultRecord | None
    problem: str = ""  # why it does not read (record is None)
    prev_sha256: str | None = None  # even of a record that does not read, when it names one
    stored_sha256: str | None = None  # the metadata written with it (read_all(metadata=True))
    payload: bytes | None = None  # what its signature covers, from the stored document itself


def parse_stored(key: str, data: bytes, stored_sha256: str | None = None) -> StoredRecord:
    """The one place stored bytes become a record (or the reason they do not)."""
    record_id = _id_of(key)
    sha = hashlib.sha256(data).hexdigest()
    try:
        record = ResultRecord.from_json(data)
    except RecordError as exc:
        prev = None
        try:
            raw = json.loads(data)
            named = raw.get("prev_sha256") if isinstance(raw, dict) else None
            prev = named if isinstance(named, str) else None
        except ValueError:
            pass
        return StoredRecord(key, record_id, sha, None, str(exc), prev, stored_sha256)
    # the signature covers the document as stored (not as this pgproof would write it again)
    payload = payload_of(json.loads(data))
    return StoredRecord(key, record_id, sha, record, "", record.prev_sha256, stored_sha256, payload)


def record_keys(repo: Repository, target: str) -> list[str]:
    """Keys of the target's records in id (= time) order."""
    return sorted(i.key for i in repo.listing(results_prefix(target)) if i.key.endswith(".json"))


def read_all(repo: Repository, target: str, metadata: bool = False) -> list[StoredRecord]:
    """Every record of ``target`` in ``repo``, in id order (BackupError when the repository
    cannot be read). ``metadata``: also the sha256 stored beside each (one more request
    per record on S3; the chain check needs it)."""
    out = []
    for key in record_keys(repo, target):
        stored = None
        if metadata:
            head = repo.head(key)
            stored = head.metadata.get("sha256") if head is not None else None
        out.append(parse_stored(key, repo.read_bytes(key), stored))
    return out


def readable(stored: Iterable[StoredRecord]) -> list[ResultRecord]:
    return [s.record for s in stored if s.record is not None]


def newest_per_backup(found: Iterable[ResultRecord]) -> dict[str, ResultRecord]:
    """backup id -> its newest restore test."""
    newest: dict[str, ResultRecord] = {}
    for r in found:
        if r.backup_id not in newest or r.finished_at > newest[r.backup_id].finished_at:
            newest[r.backup_id] = r
    return newest


def last_passed_backups(found: Iterable[ResultRecord]) -> set[str]:
    """Backup ids of the newest passed restore test of each kind (what retention keeps)."""
    newest: dict[str, ResultRecord] = {}
    for r in found:
        if r.passed and (r.kind not in newest or r.finished_at > newest[r.kind].finished_at):
            newest[r.kind] = r
    return {r.backup_id for r in newest.values()}


def newest(repos: Sequence[Repository], target: str) -> tuple[str, str] | None:
    """(id, sha256 of its bytes) of the newest record of the target, from the first readable
    repository; only that record is read. None when the target has no record yet."""
    for repo in repos:
        try:
            keys = record_keys(repo, target)
            if not keys:
                return None
            return _id_of(keys[-1]), hashlib.sha256(repo.read_bytes(keys[-1])).hexdigest()
        except BackupError:
            continue
    return None


def store(repos: Sequence[Repository], record: ResultRecord) -> dict[str, str]:
    """Write the record to every repository; returns {repository: error} for failures."""
    data = record.to_json()
    key = f"{results_prefix(record.target)}{record.id}.json"
    failed: dict[str, str] = {}
    for repo in repos:
        try:
            repo.put_bytes(key, data, {"sha256": hashlib.sha256(data).hexdigest()})
        except BackupError as exc:
            failed[repo.name] = str(exc)
    return failed


def _id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def _object(raw: object, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecordError(f"{what} is not a JSON object")
    return raw


def _text(doc: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise RecordError(f"{key} is missing or not text")
    return value


def _opt_text(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"{key} is not text")
    return value


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{key} is not an integer")
    return value
