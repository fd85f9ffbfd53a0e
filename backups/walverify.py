"""Every stored copy of every archived WAL segment, verified: its stored bytes against the
sha256 recorded when it was pushed, and its first page header (system identifier, timeline,
page address, segment size) against its name and the cluster's backups.

A copy that verified once is remembered by its listing signature (size and modification
time) in a document stored in the repository itself (:class:`WalVerified`), so a daily
``check`` over an archive of 100,000 segments re-reads only new or changed copies, whichever
host runs it. The rules are pure
(:func:`copy_problem`); :func:`verify_archive` does the reading.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pgproof.backups import compression, walnames
from pgproof.backups.errors import BackupError, DecryptFailed
from pgproof.backups.layout import wal_verified_key
from pgproof.backups.storage.base import ObjectInfo, Repository

MEMORY_FORMAT = 1


def copy_problem(
    name: str,
    stored: bytes,
    metadata: Mapping[str, str],
    segment_size: int,
    system_identifiers: frozenset[int],
) -> str | None:
    """What is wrong with one stored copy of segment ``name``, or None. ``system_identifiers``:
    those of the target's backups (empty: not checked)."""
    recorded = metadata.get("sha256")
    if recorded and hashlib.sha256(stored).hexdigest() != recorded:
        return "stored bytes do not match their sha256 (corrupted)"
    try:
        head = (
            compression.zstd_head(stored, 8192)
            if name.endswith(compression.ZSTD_SUFFIX)
            else stored[:8192]
        )
    except compression.ZstdError as exc:
        return f"does not decompress: {exc}"
    try:
        header = walnames.parse_segment_header(head)
    except ValueError as exc:
        return f"not a WAL segment: {exc}"
    base = name.removesuffix(compression.ZSTD_SUFFIX)
    timeline, segno = walnames.parse_segment_name(base, segment_size)
    if header.segment_size != segment_size:
        return f"page header says segment size {header.segment_size}, expected {segment_size}"
    if system_identifiers and header.system_identifier not in system_identifiers:
        theirs = ", ".join(str(s) for s in sorted(system_identifiers))
        return (
            f"belongs to another cluster (system identifier {header.system_identifier}, "
            f"the backups': {theirs})"
        )
    # the first segment of a new timeline starts as a copy of its parent's: an older
    # timeline in the header is normal, a newer one is not
    if header.timeline > timeline:
        return f"page header says timeline {header.timeline}, the name says {timeline}"
    if header.page_address != segno * segment_size:
        return (
            f"page header address {walnames.format_lsn(header.page_address)}, the name says "
            f"{walnames.format_lsn(segno * segment_size)} (a segment stored under another name)"
        )
    return None


def signature(info: ObjectInfo) -> str:
    return f"{info.size}:{info.mtime:.6f}"


@dataclass
class ArchiveVerification:
    verified: int = 0  # copies read and found intact now
    remembered: int = 0  # copies skipped: intact when last read, unchanged since
    corrupt: dict[str, str] = field(default_factory=dict)  # segment -> problem
    # key -> signature of each intact copy (and its master key id when encrypted)
    memory: dict[str, str] = field(default_factory=dict)


def verify_archive(
    repo: Repository,
    segment_keys: Mapping[str, ObjectInfo],
    segment_size: int,
    system_identifiers: frozenset[int],
    memory: Mapping[str, str],
    on_file: Callable[[str], None] | None = None,
) -> ArchiveVerification:
    """Read and check every copy in ``segment_keys`` (key -> listing info) not remembered
    as intact with the same signature. StorageError when a copy cannot be read."""
    result = ArchiveVerification()
    for key, info in sorted(segment_keys.items()):
        name = key.rsplit("/", 1)[-1]
        sig = signature(info)
        remembered = memory.get(key, "")
        if remembered.split(" ", 1)[0] == sig:  # "<signature>[ <master key id>]"
            result.remembered += 1
            result.memory[key] = remembered
            continue
        if on_file:
            on_file(f"{repo.name}:wal/{name}")
        head = repo.head(key)
        try:
            stored = repo.read_bytes(key)
        except DecryptFailed as exc:  # encrypted, and it does not authenticate: damage
            problem: str | None = str(exc)
        else:
            problem = copy_problem(
                name, stored, head.metadata if head else {}, segment_size, system_identifiers
            )
        result.verified += 1
        if problem:
            result.corrupt[name.removesuffix(compression.ZSTD_SUFFIX)] = problem
        else:
            kid = repo.key_id_of(key)
            result.memory[key] = f"{sig} {kid}" if kid else sig
    return result


def key_ids_of(memory: Mapping[str, str]) -> dict[str, str]:
    """Copy key -> the master key id remembered with it (encrypted repositories)."""
    return {k: v.split(" ", 1)[1] for k, v in memory.items() if " " in v}


@dataclass(frozen=True)
class WalVerified:
    """What ``check`` last found in one repository's WAL archive, stored in that repository
    (``<target>/jobs/wal-verified.json``): the copies it read intact (key -> listing
    signature: not read again while unchanged) and the bad ones (segment -> problem), which
    the exporter reports as ``pgproof_repository_wal_corrupt_segments``."""

    checked_at: str
    copies: Mapping[str, str]
    corrupt: Mapping[str, str]
    format: int = MEMORY_FORMAT

    def to_json(self) -> bytes:
        doc = {
            "format": self.format,
            "checked_at": self.checked_at,
            "copies": dict(self.copies),
            "corrupt": dict(self.corrupt),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WalVerified:
        """ValueError for anything that is not a readable document of this format."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != MEMORY_FORMAT:
            raise ValueError("not a WAL verification document of format 1")
        copies, corrupt = doc.get("copies"), doc.get("corrupt")
        if not isinstance(copies, dict) or not isinstance(corrupt, dict):
            raise ValueError("copies and corrupt must be objects")
        return cls(
            str(doc.get("checked_at", "")),
            {str(k): str(v) for k, v in copies.items()},
            {str(k): str(v) for k, v in corrupt.items()},
        )


def read_state(repo: Repository, target: str) -> WalVerified | None:
    """The stored state; None when there is none or it cannot be read (then every copy is
    read again: a lost or damaged state never hides a bad copy)."""
    try:
        return WalVerified.from_json(repo.read_bytes(wal_verified_key(target)))
    except (BackupError, ValueError):
        return None


def write_state(repo: Repository, target: str, state: WalVerified) -> None:
    repo.put_bytes(wal_verified_key(target), state.to_json())
