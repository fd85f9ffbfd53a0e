"""The result-record hash chain: edits, removals and insertions are named."""

from __future__ import annotations

import hashlib

from pgproof.verifier.chain import ChainRecord, compare_copies, verify_chain


def _chain(n: int) -> list[ChainRecord]:
    out: list[ChainRecord] = []
    prev = None
    for i in range(n):
        sha = hashlib.sha256(f"record {i} {prev}".encode()).hexdigest()
        out.append(ChainRecord(f"2026010{i}T000000Z-{i:06x}", sha, prev, sha))
        prev = sha
    return out


def test_an_intact_chain_has_no_problem() -> None:
    assert verify_chain("local", _chain(6)) == []
    assert verify_chain("local", []) == []


def test_an_edited_record_is_named() -> None:
    records = _chain(5)
    bad = records[2]
    records[2] = ChainRecord(bad.id, "f" * 64, bad.prev, bad.stored_sha256)
    problems = verify_chain("local", records)
    assert [(p.record, p.kind) for p in problems] == [(bad.id, "edited")]


def test_an_edit_with_its_metadata_rewritten_is_still_seen() -> None:
    records = _chain(5)
    bad = records[2]
    records[2] = ChainRecord(bad.id, "f" * 64, bad.prev, "f" * 64)
    problems = verify_chain("local", records)
    assert [(p.record, p.kind) for p in problems] == [(records[3].id, "removed")]
    assert bad.id in problems[0].detail  # "... or <bad> was edited"


def test_a_removed_record_is_named_by_its_successor() -> None:
    records = _chain(5)
    removed = records.pop(2)
    problems = verify_chain("local", records)
    assert [(p.record, p.kind) for p in problems] == [(records[2].id, "removed")]
    assert records[1].id in problems[0].detail
    assert removed.id not in {p.record for p in problems}


def test_removing_the_oldest_is_seen_on_the_new_first() -> None:
    records = _chain(4)[1:]
    assert [(p.record, p.kind) for p in verify_chain("local", records)] == [
        (records[0].id, "removed")
    ]


def test_an_inserted_record_is_named() -> None:
    records = _chain(4)
    forged = ChainRecord("20260101T120000Z-ffffff", "a" * 64, records[0].sha256, "a" * 64)
    problems = verify_chain("local", [*records, forged])
    assert [(p.record, p.kind) for p in problems] == [(forged.id, "inserted")]
    restart = ChainRecord("20260102T120000Z-eeeeee", "b" * 64, None, "b" * 64)
    problems = verify_chain("local", [*records, restart])
    assert (restart.id, "inserted") in [(p.record, p.kind) for p in problems]


def test_copies_across_repositories() -> None:
    local = _chain(3)
    offsite = list(local[:2]) + [ChainRecord(local[2].id, "c" * 64, local[2].prev, "c" * 64)]
    problems = compare_copies({"local": local, "offsite": offsite})
    assert {(p.repository, p.kind) for p in problems} == {
        ("local", "edited"),
        ("offsite", "edited"),
    }
    problems = compare_copies({"local": local, "offsite": local[:2]})
    assert [(p.repository, p.record, p.kind) for p in problems] == [
        ("offsite", local[2].id, "missing")
    ]
