"""The verdict-truth corpus: restore tests of databases nobody on this project designed must
pass, with every check run. PostgreSQL's own regression database (PG 15) and the rich-schema
script (partitions, large objects, encodings, database properties, roles, extensions...) on
every major this machine has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import backup_under_heartbeat, load_json
from tests.support.corpus import (
    RegressionRun,
    build_regression,
    load_rich_schema,
    object_counts,
)
from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.pgcluster import available_majors

pytestmark = pytest.mark.integration

LOGICAL_CHECKS = {"restore_errors", "row_counts", "database_properties", "roles", "amcheck"}
# "readable" applies only to backups without data checksums (the corpus has them on)
PHYSICAL_CHECKS = {"verifybackup", "wal_replay", "heartbeat", "amcheck", "checksums"}


def verify(setup: Setup, *args: str) -> dict[str, Any]:
    proc = setup.pgproof("verify", "--json", *args, timeout=1800)
    assert proc.stdout, proc.stderr
    record: dict[str, Any] = load_json(proc.stdout)["results"][0]
    assert proc.returncode == 0, f"{record['verdict']}: {record['cause']}"
    return record


def assert_every_check_passed(record: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    checks = {c["name"]: c for c in record["checks"]}
    assert set(checks) >= expected, sorted(checks)
    bad = {n: c["detail"] for n, c in checks.items() if c["verdict"] != "passed"}
    assert not bad, bad
    # every check ran: none passed by not applying
    skipped = [
        n for n, c in checks.items() if n in expected and c["evidence"].get("applicable") is False
    ]
    assert not skipped, skipped
    return checks


@pytest.fixture(scope="module")
def regression() -> Iterator[tuple[Setup, RegressionRun]]:
    if 15 not in available_majors():
        pytest.skip("PostgreSQL 15 not installed")
    setup = make_setup(15, None)
    try:
        run = build_regression(setup.cluster)
        yield setup, run
    finally:
        destroy_setup(setup)


def test_regression_database_logical_restore_test_passes(
    regression: tuple[Setup, RegressionRun],
) -> None:
    setup, run = regression
    assert run.tests > 150, run  # the parallel schedule ran (diffs do not matter here)
    print(f"regression database: {run}, {object_counts(setup.cluster)}")
    setup.pgproof("backup", "logical", check=True, timeout=1800)
    record = verify(setup, "--kind", "logical")
    checks = assert_every_check_passed(record, LOGICAL_CHECKS)
    assert "regression" in checks["database_properties"]["evidence"]["databases"]
    assert checks["row_counts"]["evidence"]["tables"] > 500
    # partitioned tables with primary keys are in the regression database: the partitioned
    # indexes (no storage) are not checked, the partitions' indexes are
    print("regression logical:", {n: c["evidence"] for n, c in checks.items()}, record["phases"])
    assert checks["amcheck"]["evidence"]["user_indexes"] > 100
    assert checks["amcheck"]["evidence"]["user_heap_tables"] > 300


def test_regression_database_physical_restore_tests_pass(
    regression: tuple[Setup, RegressionRun],
) -> None:
    setup, _ = regression
    backup_under_heartbeat(setup, 4)
    for pitr in ("latest", "random"):
        record = verify(setup, "--kind", "physical", "--pitr", pitr)
        checks = assert_every_check_passed(record, PHYSICAL_CHECKS)
        print(f"regression physical {pitr}:", checks["amcheck"]["evidence"], record["phases"])
        assert checks["amcheck"]["evidence"]["user_indexes"] > 100


# every supported major: a version whose binaries are missing is skipped by name
RICH_MAJORS = (15, 16, 17, 18)


@pytest.fixture(params=RICH_MAJORS, ids=lambda m: f"pg{m}")
def rich(request: pytest.FixtureRequest) -> Iterator[Setup]:
    pg_major = int(request.param)
    if pg_major not in available_majors():
        pytest.skip(f"PostgreSQL {pg_major} binaries not installed")
    setup = make_setup(pg_major, None)
    try:
        load_rich_schema(setup.cluster)
        yield setup
    finally:
        destroy_setup(setup)


def test_rich_schema_restore_tests_pass(rich: Setup) -> None:
    setup = rich
    print(f"rich schema PG {setup.cluster.major}: {object_counts(setup.cluster)}")
    setup.pgproof("backup", "logical", check=True)
    record = verify(setup, "--kind", "logical")
    checks = assert_every_check_passed(record, LOGICAL_CHECKS)
    props = checks["database_properties"]["evidence"]
    assert {"shop", "latin1db", "sqlascii", "eucjp", "postgres"} <= set(props["databases"])
    assert props["large_objects"] == 5
    assert checks["roles"]["evidence"]["roles"] >= 4
    major = setup.cluster.major
    print(f"rich schema PG {major} logical: {record['phases']}")

    backup_under_heartbeat(setup, 4)
    record = verify(setup, "--kind", "physical", "--pitr", "random")
    assert_every_check_passed(record, PHYSICAL_CHECKS)
    print(f"rich schema PG {major} physical random: {record['phases']}")
