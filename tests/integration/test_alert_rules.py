"""The Prometheus rules: promtool checks them and runs their unit tests; every condition of
pgproof's own email alerts has a rule of the same name."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "prometheus" / "pgproof.rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "pgproof.test.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not installed (apt-get install prometheus; scripts/setup does it)")
    return found


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_rule_unit_tests() -> None:
    proc = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_is_unit_tested_and_every_email_condition_has_a_rule() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"]}
    assert names == tested
    conditions = (ROOT / "alerts" / "conditions.py").read_text()
    emailed = set(re.findall(r'"(Pgproof[A-Za-z]+)"', conditions))
    assert emailed and emailed <= names, emailed - names
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert rule["annotations"]["runbook_url"].startswith("https://")


def test_every_runbook_link_points_at_a_readme_heading() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("#")
    }
    rules = yaml.safe_load(RULES.read_text())
    anchors = {
        r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        for g in rules["groups"]
        for r in g["rules"]
    }
    conditions = (ROOT / "alerts" / "conditions.py").read_text()
    anchors |= set(re.findall(r'"(runbook-[a-z-]+)"', conditions))
    assert anchors and anchors <= headings, anchors - headings
