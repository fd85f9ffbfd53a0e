"""The verdict of a restore test, without a server: a fake sandbox and scripted restore tests
through ``verify``'s seams. What the checks found, and what stopped the test, become one
verdict and one cause; the record is stored, chained and reads back through its one reader."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgproof.backups import ids
from pgproof.backups.errors import StorageError
from pgproof.backups.runner import CommandResult, Runner
from pgproof.backups.settings import FilesystemRepoSettings, SourceSettings, TargetSettings
from pgproof.backups.storage.base import Repository, StoredObject
from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.verifier import chain, records, sandboxconf
from pgproof.verifier.errors import RestoreFailed, SandboxError, VerifierError
from pgproof.verifier.job import RestoreJob, VerifyRequest
from pgproof.verifier.records import CheckResult, RecordError, ResultRecord
from pgproof.verifier.run import RestoreTest, verify
from pgproof.verifier.sandbox import Sandbox
from pgproof.verifier.settings import VerifierSettings
from pgproof.verifier.verdicts import Verdict
from tests.support import synthetic


class FakeSandbox(Sandbox):
    """Nothing runs: it only remembers that it was destroyed."""

    kind = "fake"

    def __init__(self, root: Path, major: int):
        self.major, self.memory_mb, self.user = major, 256, "postgres"
        self.root = root
        self.destroyed = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    def initdb(self, checksums: bool = False, superuser: str | None = None) -> None:
        raise AssertionError("a scripted restore test does not restore")

    def configure(
        self,
        *,
        fast: bool,
        preload: list[str] | None = None,
        recovery: sandboxconf.Recovery | None = None,
    ) -> None:
        raise AssertionError("not used")

    def start(self, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
        raise AssertionError("not used")

    def stop(self, mode: str = "fast") -> None:
        pass

    def destroy(self) -> None:
        self.destroyed = True

    def run(self, program: str, args: list[str], timeout: float, **kw: Any) -> CommandResult:
        raise AssertionError("not used")

    def libraries(self) -> set[str]:
        return set()

    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str:
        return "host=/nonexistent"

    def client_env(self) -> dict[str, str]:
        return {}


def found(*verdicts: Verdict, then: BaseException | None = None) -> RestoreTest:
    """A restore test whose checks come out as ``verdicts`` (then ``then`` is raised)."""

    def body(job: RestoreJob) -> None:
        job.findings.bytes_restored = 1234
        for i, v in enumerate(verdicts):
            job.findings.checks.append(CheckResult(f"check{i}", v, f"{v} detail {i}"))
        if then is not None:
            raise then

    return body


class Bench:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.repos: list[Repository] = []
        for name in ("local", "second"):
            (tmp_path / name).mkdir()
            self.repos.append(FilesystemRepository(name, tmp_path / name))
        self.backup = synthetic.manifest("main", 1, "logical")
        for repo in self.repos:
            synthetic.Writer(repo).manifest(self.backup)
        self.sandboxes: list[FakeSandbox] = []
        self.request = VerifyRequest(
            target=TargetSettings(
                "main",
                SourceSettings("host=/nonexistent dbname=app"),
                tuple(FilesystemRepoSettings(r.name, str(tmp_path / r.name)) for r in self.repos),
            ),
            kind="logical",
            # "nobody" exists everywhere; sharing allowed: no scan of this machine's clusters
            settings=VerifierSettings(
                workdir=str(tmp_path / "sandboxes"),
                sandbox_user="nobody",
                share_sandbox_user=True,
            ),
        )

    def factory(self, major: int, runner: Runner) -> Sandbox:
        sandbox = FakeSandbox(self.tmp_path, major)
        self.sandboxes.append(sandbox)
        return sandbox

    def verify(self, test: RestoreTest, repos: Sequence[Repository] | None = None) -> ResultRecord:
        return verify(
            self.request,
            repos or self.repos,
            Runner(),
            "test",
            sandbox_factory=self.factory,
            restore_tests={"logical": test},
        )


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)


def test_every_check_passed_is_passed(bench: Bench) -> None:
    r = bench.verify(found("passed", "passed"))
    assert (r.verdict, r.cause) == ("passed", "")
    assert r.sandbox == "fake" and r.bytes_restored == 1234 and "total" in r.phases
    assert r.backup is not None and r.backup.repository == "local"
    assert bench.sandboxes[0].destroyed


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (("passed", "failed", "error"), "failed"),  # damage beats "could not judge"
        (("error", "passed"), "error"),
        (("failed",), "failed"),
        ((), "error"),  # nothing was checked: never passed
    ],
)
def test_checks_add_up_to_the_verdict(
    bench: Bench, verdicts: tuple[Verdict, ...], expected: str
) -> None:
    r = bench.verify(found(*verdicts))
    assert r.verdict == expected
    bad = [f"check{i}: {v} detail {i}" for i, v in enumerate(verdicts) if v != "passed"]
    assert r.cause == "; ".join(bad[:3])


@pytest.mark.parametrize(
    ("raised", "verdict", "cause"),
    [
        (RestoreFailed("pg_verifybackup: checksum mismatch"), "failed", "checksum mismatch"),
        (SandboxError("the sandbox lacks postgis"), "error", "lacks postgis"),
        (psycopg.OperationalError("server closed the connection"), "error", "query failed"),
        (OSError(errno.ENOSPC, "No space left on device", "/x"), "error", "No space left"),
        (StorageError("local", "unreachable"), "error", "unreachable"),
    ],
)
def test_what_stopped_the_test_decides_and_is_the_cause(
    bench: Bench, raised: BaseException, verdict: str, cause: str
) -> None:
    r = bench.verify(found("passed", then=raised))
    assert r.verdict == verdict and cause in r.cause
    assert [c.verdict for c in r.checks] == ["passed"]  # what ran before is kept as evidence
    assert bench.sandboxes[0].destroyed


def test_a_failed_check_is_not_hidden_by_a_later_error(bench: Bench) -> None:
    # a check found damage, then a later step could not run: the damage is the verdict
    r = bench.verify(found("failed"))
    assert r.verdict == "failed"
    r = bench.verify(found("passed", "error"))
    assert r.verdict == "error"


def test_records_are_stored_everywhere_chained_and_read_back(bench: Bench) -> None:
    first = bench.verify(found("passed"))
    second = bench.verify(found("failed"))
    for repo in bench.repos:
        stored = records.read_all(repo, "main", metadata=True)
        assert [s.record for s in stored] == [first, second]
        assert second.prev_sha256 == stored[0].sha256
        assert stored[0].sha256 == hashlib.sha256(first.to_json()).hexdigest()
    checked, problems, errors = chain.verify_target(bench.repos, "main")
    assert (checked, problems, errors) == (2, [], {})
    assert records.last_passed_backups(records.readable(stored)) == {bench.backup.id}


def test_a_record_no_repository_takes_is_an_error_not_a_silent_pass(
    bench: Bench, tmp_path: Path
) -> None:
    class Refusing(FilesystemRepository):
        def put_bytes(
            self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
        ) -> StoredObject:
            raise StorageError(self.name, "read-only")

    refusing = [Refusing(r.name, tmp_path / r.name) for r in bench.repos]
    with pytest.raises(VerifierError, match="could not be stored anywhere"):
        bench.verify(found("passed"), refusing)
    # one of two takes it: the record is returned and stored there
    r = bench.verify(found("passed"), [refusing[0], bench.repos[1]])
    assert [s.id for s in records.read_all(bench.repos[1], "main")] == [r.id]


def record_doc(**changes: object) -> dict[str, object]:
    doc = synthetic.record("main", 1, synthetic.manifest("main", 1, "physical"))
    doc.update(changes)
    return doc


def test_the_reader_round_trips_and_reads_older_records() -> None:
    doc = record_doc(pitr={"requested": "latest", "mode": "latest", "reached_lsn": "0/3000028"})
    r = ResultRecord.from_dict(doc)
    assert r.pitr is not None and r.pitr.reached_lsn == "0/3000028"
    assert ResultRecord.from_json(r.to_json()) == r
    for newer in ("sandbox_image", "sandbox", "pitr", "bytes_restored", "prev_sha256", "format"):
        del doc[newer]  # as an older pgproof wrote it
    old = ResultRecord.from_dict(doc)
    assert (old.sandbox_image, old.pitr, old.prev_sha256) == ("", None, None)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"verdict": "passd"}, "verdict 'passd'"),
        ({"kind": "incremental"}, "kind 'incremental'"),
        ({"format": 2}, "newer than this pgproof reads"),
        ({"backup_id": ""}, "backup_id is missing"),
        ({"checks": [{"name": "x", "verdict": "ok"}]}, "check verdict 'ok'"),
        ({"prev_sha256": 7}, "prev_sha256"),
        ({"bytes_restored": "many"}, "bytes_restored"),
    ],
)
def test_the_reader_refuses_what_is_not_a_record(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        ResultRecord.from_dict(record_doc(**changes))
    stored = records.parse_stored("main/results/x.json", json.dumps(record_doc(**changes)).encode())
    assert stored.record is None and problem.split()[0] in stored.problem
    assert records.parse_stored("main/results/y.json", b"{not json").problem.startswith("not JSON")


def test_a_check_keeps_its_evidence_frozen() -> None:
    c = CheckResult("amcheck", "passed", "", {"seconds": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.verdict = "failed"  # type: ignore[misc]


def test_result_ids_keep_chain_order_within_a_second() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
    made = [ids.new_result_id(now)]
    for _ in range(20):
        made.append(ids.new_result_id(now, after=made[-1]))
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(ids.is_result_id(i) for i in made)
    # a clock that went back still sorts after the newest record
    assert ids.new_result_id(now - dt.timedelta(hours=1), after=made[-1]) > made[-1]
    # a later second starts afresh
    assert ids.new_result_id(now + dt.timedelta(seconds=1), after=made[-1]).startswith(
        "20261129T120001Z-"
    )


def test_a_signing_key_signs_every_record_and_a_bad_one_stops_before_the_test(
    bench: Bench,
) -> None:
    from pgproof.verifier import chain, signing

    private, public = signing.generate(bench.tmp_path / "records.ed25519")
    bench.request = dataclasses.replace(
        bench.request,
        settings=dataclasses.replace(bench.request.settings, signing_key_file=str(private)),
    )
    signed = bench.verify(found("passed"))
    assert signed.signature is not None and signed.signature.algorithm == "ed25519"
    trust = signing.trust_of([str(public)], None)
    assert trust is not None
    _, problems, _ = chain.verify_target(bench.repos, "main", trust.keys)
    assert problems == []
    private.chmod(0o644)
    with pytest.raises(signing.SigningKeyError, match="readable by others"):
        bench.verify(found("passed"))
    assert len(bench.sandboxes) == 1  # no restore test ran without its signature


def _damage_manifest(repo: Repository, backup_id: str) -> None:
    key = f"main/backups/{backup_id}/manifest.json"
    repo.put_bytes(key, b'{"format": 1, "id": "trunc')


def test_a_damaged_newest_manifest_fails_latest_with_a_record(bench: Bench) -> None:
    """Issue 22, item 5: the newest backup's manifest exists and cannot be read in every
    repository: "latest" is failed naming it, never a quiet test of the older backup."""
    newer = synthetic.manifest("main", 2, "logical")
    for repo in bench.repos:
        synthetic.Writer(repo).manifest(newer)
        _damage_manifest(repo, newer.id)
    record = bench.verify(found("passed"))
    assert record.verdict == "failed" and record.backup_id == newer.id
    assert f"main/backups/{newer.id}/manifest.json" in record.cause
    assert "the newest logical backup" in record.cause
    assert not bench.sandboxes  # nothing was restored
    assert records.newest(bench.repos, "main") is not None  # the record is stored


def test_an_intact_copy_elsewhere_or_an_older_damage_is_tested_as_usual(bench: Bench) -> None:
    newer = synthetic.manifest("main", 2, "logical")
    for repo in bench.repos:
        synthetic.Writer(repo).manifest(newer)
    _damage_manifest(bench.repos[0], newer.id)  # the second repository's copy is intact
    record = bench.verify(found("passed"))
    assert record.verdict == "passed" and record.backup_id == newer.id
    assert record.backup is not None and record.backup.repository == "second"
    _damage_manifest(bench.repos[1], bench.backup.id)  # an older backup's damage: check's
    _damage_manifest(bench.repos[0], bench.backup.id)
    assert bench.verify(found("passed")).verdict == "passed"


def test_a_damaged_manifest_of_the_other_kind_is_not_this_kinds_latest(bench: Bench) -> None:
    physical = synthetic.manifest("main", 3, "physical")
    for repo in bench.repos:
        synthetic.Writer(repo).manifest(physical)
        _damage_manifest(repo, physical.id)
    record = bench.verify(found("passed"))
    assert record.verdict == "passed" and record.backup_id == bench.backup.id


def test_backup_ids_name_their_kind() -> None:
    assert ids.kind_of_backup_id("20261124T011502Z-logical-3fa9") == "logical"
    assert ids.kind_of_backup_id("20261124T011502Z-physical-0001") == "physical"
    assert ids.kind_of_backup_id("20261124T011502Z-9c01ab") is None
    assert ids.kind_of_backup_id("20261124T011502F") is None


def test_a_check_that_ran_out_of_room_is_an_error_not_damage(bench: Bench) -> None:
    """Issue 22, item 4: a check stopped by the sandbox's lack (pg_dump out of memory in the
    full read) is no evidence of damage: the record is an error naming the lack."""

    def body(job: RestoreJob) -> None:
        job.findings.checks.append(CheckResult("row_counts", "passed", "3 tables match"))
        job.findings.checks.append(
            CheckResult("readable", "failed", "unreadable data in app: pg_dump: out of memory")
        )

    record = bench.verify(body)
    assert record.verdict == "error", record.cause
    assert "ran out of memory" in record.cause and "verifier.memory_mb" in record.cause
    assert [c.verdict for c in record.checks] == ["passed", "error"]
