"""pgBackRest's backup chains, on each release and PostgreSQL major it runs here (issue 22):
PostgreSQL 15 with 2.45 and 2.55.1, 16 and 17 with 2.55.1 (2.45 knows up to 15). A full, a
diff and an incr: the incr's restore test passes; then one data file of the full is damaged
(the diff and the incr refer to it): the incr's restore test is failed naming the file and
the full that holds it, and `check` names the file once, with the sets that depend on it,
instead of "checksum invalid: 1" per backup. The repository's bytes never change but for
the damage the test itself made."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgproof.backups.pgbackrest import PgBackRest
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings
from tests.support.pgbackrest import (
    Release,
    Stanzas,
    pgbackrest_stanzas,
    releases,
    target,
    tree_hash,
    write_pgproof_config,
)
from tests.support.pgcluster import available_majors, private_dir
from tests.support.pgproofcli import PgproofCli

pytestmark = [pytest.mark.integration]

CASES = [
    (major, release)
    for release in releases()
    for major in release.majors
    if major in available_majors() and (major == 15 or release.version != "2.45")
]


@dataclass
class Chain(PgproofCli):
    config: Path
    stanzas: Stanzas
    release: Release
    labels: tuple[str, str, str]  # full, diff, incr


@pytest.fixture(
    scope="module", params=CASES, ids=[f"pg{m}-pgbackrest-{r.version}" for m, r in CASES]
)
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    major, release = request.param
    with pgbackrest_stanzas(major, binary=release.binary) as st:
        base = private_dir("pgproof-brchain-")
        try:
            config = write_pgproof_config(
                base,
                target("chain", st.plain, conninfo=st.cluster.conninfo(), binary=release.binary),
            )
            for kind in ("full", "diff", "incr"):
                st.cluster.sql(f"create table t_{kind} as select generate_series(1, 5000) g")
                st.backup(kind, plain_only=True)
            settings = PgBackRestSettings("main", str(st.plain), binary=release.binary)
            with PgBackRest(settings, Runner()) as tool:
                backups = tool.info().backups
            assert [b.type for b in backups] == ["full", "diff", "incr"]
            full, diff, incr = (b.label for b in backups)
            assert backups[2].references == (full, diff)
            yield Chain(config, st, release, (full, diff, incr))
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_an_incr_passes_then_damage_in_its_full_is_located(chain: Chain) -> None:
    full, diff, incr = chain.labels
    repo = chain.stanzas.repos[0]
    r = chain.verify("chain", "--backup", incr)
    assert r.verdict == "passed", f"{r.cause}\n{[(c.name, c.verdict, c.detail) for c in r.checks]}"
    # a file the full holds and the diff and incr refer to (pgbench's accounts table)
    victim = max((repo / "backup" / "main" / full).rglob("pg_data/base/*/*.gz"), key=_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = tree_hash(repo)
    named = f"{full}/{victim.relative_to(repo / 'backup' / 'main' / full)}"

    r = chain.verify("chain", "--backup", incr)
    print(f"pg{chain.stanzas.cluster.major} pgBackRest {chain.release.version}:", r.cause)
    assert r.verdict == "failed", r.cause
    assert named in r.cause and f"in full backup {full}" in r.cause, r.cause
    assert f"diff {diff}, incr {incr} depend on" in r.cause, r.cause

    checked = chain.pgproof("check", "--target", "chain", "--json")
    problems = json.loads(checked.stdout)["targets"][0]["problems"]
    print("check:", problems)
    assert checked.returncode == 1
    located = [p for p in problems if named in p]
    assert len(located) == 1, problems  # once, not once per backup that depends on it
    assert f"in full backup {full}, which diff {diff}, incr {incr} depend on" in located[0]
    assert not any("checksum invalid: 1" in p for p in problems), problems
    assert tree_hash(repo) == before  # read, never written


def _size(path: Path) -> int:
    return path.stat().st_size
