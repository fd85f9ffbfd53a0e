"""Least privilege (issue 15): a restore test needs only to read backups and WAL and to write
its record under ``results/``. Proven on a filesystem repository whose backup and WAL trees
are read-only bind mounts (read-only even for root, as pgproof runs here): both restore
tests pass, their records are stored, and not a byte of the trees changes."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.fixtures import Setup, destroy_setup, make_setup
from tests.support.pgbackrest import tree_hash

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def read_only(*trees: Path) -> Iterator[None]:
    """Each tree bind-mounted onto itself read-only for the block."""
    mounted: list[Path] = []
    try:
        for tree in trees:
            subprocess.run(["mount", "--bind", str(tree), str(tree)], check=True)
            mounted.append(tree)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(tree)], check=True)
        yield
    finally:
        for tree in reversed(mounted):
            subprocess.run(["umount", str(tree)], check=False)


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = make_setup(15, None)
    try:
        doc = yaml.safe_load(s.config_path.read_text())
        doc["targets"][0]["heartbeat"] = {"enabled": False}
        s.config_path.write_text(yaml.safe_dump(doc))
        yield s
    finally:
        destroy_setup(s)


def test_restore_tests_only_read_backups_and_wal(setup: Setup) -> None:
    s = setup
    s.cluster.pgbench("-i", "-q", "-s", "1")
    s.pgproof("backup", "logical", check=True)
    s.pgproof("backup", "physical", check=True)
    s.wait_archived(s.cluster.switch_wal())
    backups, wal = s.repo_dir / "main" / "backups", s.repo_dir / "main" / "wal"
    before = (tree_hash(backups), tree_hash(wal))
    with read_only(backups, wal):
        probe = subprocess.run(["touch", str(backups / "probe")], capture_output=True)
        assert probe.returncode != 0  # read-only even for root
        for kind in ("logical", "physical"):
            done = s.pgproof("verify", "--kind", kind, "--json")
            (record,) = json.loads(done.stdout)["results"]
            assert record["verdict"] == "passed", (kind, record["cause"])
        checked = s.pgproof("check", "--json")
        assert json.loads(checked.stdout)["healthy"], checked.stdout
    assert (tree_hash(backups), tree_hash(wal)) == before
    assert len(list((s.repo_dir / "main" / "results").glob("*.json"))) == 2
