"""The hash chain of result records: each record carries ``prev_sha256``, the sha256 of the
previous record of its target as stored. Verifying it names every record edited, removed or
inserted. Pure functions over what was read; ``read_chain`` reads (through
``verifier.records``, the record's one reader).

Evidence used, per repository, in record-id (= time) order:
- a successor that names its predecessor's exact bytes: that link holds;
- the sha256 recorded as metadata when the record was stored: differing bytes were edited;
- a successor naming bytes no record has: a record was removed there (or its predecessor
  edited: both are named);
- records a successor skips over, that nothing names: inserted;
- the same record id with different bytes, or missing, in another repository of the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pgproof.backups.errors import BackupError
from pgproof.backups.storage.base import Repository
from pgproof.verifier import records, signing
from pgproof.verifier.records import ResultRecord

Kind = Literal[
    "edited", "removed", "inserted", "unreadable", "missing", "unsigned", "forged", "unknown-key"
]


@dataclass(frozen=True)
class ChainRecord:
    id: str
    sha256: str  # of the bytes as read now
    prev: str | None  # the record's prev_sha256
    stored_sha256: str | None = None  # metadata written with the record (None: not recorded)
    readable: bool = True
    record: ResultRecord | None = field(default=None, compare=False)  # reports read it
    problem: str = ""  # why it does not read
    payload: bytes | None = field(default=None, compare=False)  # what a signature covers

    @classmethod
    def of(cls, stored: records.StoredRecord) -> ChainRecord:
        return cls(
            stored.id,
            stored.sha256,
            stored.prev_sha256,
            stored.stored_sha256,
            stored.record is not None,
            stored.record,
            stored.problem,
            stored.payload,
        )


@dataclass(frozen=True)
class ChainProblem:
    repository: str
    record: str  # a record id (or the id of the record after a removed one)
    kind: Kind
    detail: str

    def __str__(self) -> str:
        return f"{self.repository}: {self.record}: {self.kind}: {self.detail}"


def verify_chain(repository: str, records: Sequence[ChainRecord]) -> list[ChainProblem]:
    """Problems of one repository's chain of one target (records in any order)."""
    ordered = sorted(records, key=lambda r: r.id)
    by_sha = {r.sha256: i for i, r in enumerate(ordered)}
    named = {r.prev for r in ordered if r.prev}
    problems: list[ChainProblem] = []

    def add(record: str, kind: Kind, detail: str) -> None:
        problems.append(ChainProblem(repository, record, kind, detail))

    edited: set[str] = set()
    for r in ordered:
        if not r.readable:
            why = f" ({r.problem})" if r.problem else ""
            add(r.id, "unreadable", f"not a result record{why}: edited or damaged")
            edited.add(r.id)
        elif r.stored_sha256 and r.stored_sha256 != r.sha256:
            add(r.id, "edited", f"bytes hash to {r.sha256[:12]}, stored as {r.stored_sha256[:12]}")
            edited.add(r.id)
    inserted: set[str] = set()
    for i, r in enumerate(ordered):
        if i == 0:
            if r.prev is not None and r.prev not in by_sha:
                add(r.id, "removed", f"the records before it are gone (it follows {r.prev[:12]})")
            continue
        before = ordered[i - 1]
        if r.prev == before.sha256:
            continue
        if r.prev is not None and r.prev in by_sha and by_sha[r.prev] < i - 1:
            for skipped in ordered[by_sha[r.prev] + 1 : i]:
                if skipped.sha256 not in named and skipped.id not in inserted:
                    inserted.add(skipped.id)
                    add(skipped.id, "inserted", f"not in the chain: {r.id} follows an older record")
            continue
        if r.prev is None:
            add(r.id, "inserted", "claims to start the chain although records precede it")
            inserted.add(r.id)
            continue
        if before.id in edited:
            continue  # already named: its successor no longer finds its bytes
        add(
            r.id,
            "removed",
            f"follows {r.prev[:12]}, which no record has: a record between {before.id} and "
            f"{r.id} was removed, or {before.id} was edited",
        )
    return problems


def verify_signatures(
    repository: str,
    records: Sequence[ChainRecord],
    keys: Mapping[str, signing.TrustedKey],
    unsigned_before: str | None = None,
) -> list[ChainProblem]:
    """Each readable record signed by a trusted key. ``unsigned_before``: records started
    before that time (ISO) may be unsigned (the history from before signing was set up);
    after it an unsigned record is a problem, so stripping signatures forges nothing."""
    problems = []
    for r in sorted(records, key=lambda r: r.id):
        if not r.readable:
            continue  # named as unreadable already
        found = signing.check(r.record, r.payload, keys)
        if found.state == "signed":
            continue
        if (
            found.state == "unsigned"
            and unsigned_before
            and r.record is not None
            and (r.record.started_at < unsigned_before)
        ):
            continue
        problems.append(ChainProblem(repository, r.id, found.state, found.detail))
    return problems


def compare_copies(copies: Mapping[str, Sequence[ChainRecord]]) -> list[ChainProblem]:
    """The same target's records across repositories: every record everywhere, same bytes."""
    problems = []
    all_ids = sorted({r.id for records in copies.values() for r in records})
    by_repo = {repo: {r.id: r for r in records} for repo, records in copies.items()}
    for record_id in all_ids:
        shas = {repo: recs[record_id].sha256 for repo, recs in by_repo.items() if record_id in recs}
        for repo in sorted(copies):
            if record_id not in by_repo[repo]:
                holders = ", ".join(sorted(shas))
                problems.append(
                    ChainProblem(repo, record_id, "missing", f"absent here, present in {holders}")
                )
        if len(set(shas.values())) > 1:
            detail = ", ".join(f"{repo} {sha[:12]}" for repo, sha in sorted(shas.items()))
            for repo in sorted(shas):
                problems.append(ChainProblem(repo, record_id, "edited", f"copies differ: {detail}"))
    return problems


def read_chain(repo: Repository, target: str) -> list[ChainRecord]:
    """Every record of ``target`` in ``repo`` with its metadata hash (BackupError when the
    repository cannot be read)."""
    return [ChainRecord.of(s) for s in records.read_all(repo, target, metadata=True)]


Copies = dict[str, list[ChainRecord]]


def read_copies(repos: Sequence[Repository], target: str) -> tuple[Copies, dict[str, str]]:
    """Every repository's records of ``target``; {repository: error} for unreadable ones."""
    copies: Copies = {}
    errors: dict[str, str] = {}
    for repo in repos:
        try:
            copies[repo.name] = read_chain(repo, target)
        except BackupError as exc:
            errors[repo.name] = str(exc)
    return copies, errors


def verify_copies(
    copies: Copies,
    keys: Mapping[str, signing.TrustedKey] | None = None,
    unsigned_before: str | None = None,
) -> list[ChainProblem]:
    """The chain of each copy, the copies against each other and, with ``keys`` (the
    trusted public keys), every record's signature."""
    problems: list[ChainProblem] = []
    for name, found in copies.items():
        problems.extend(verify_chain(name, found))
        if keys is not None:
            problems.extend(verify_signatures(name, found, keys, unsigned_before))
    if len(copies) > 1:
        problems.extend(compare_copies(copies))
    return problems


def verify_target(
    repos: Sequence[Repository],
    target: str,
    keys: Mapping[str, signing.TrustedKey] | None = None,
    unsigned_before: str | None = None,
) -> tuple[int, list[ChainProblem], dict[str, str]]:
    """(records checked, problems, {repository: error} for those that could not be read)."""
    copies, errors = read_copies(repos, target)
    checked = len({r.id for records in copies.values() for r in records})
    return checked, verify_copies(copies, keys, unsigned_before), errors
