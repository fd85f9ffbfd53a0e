"""The Grafana dashboard type-checks against @grafana/schema; a broken one does not; the
provisioning files point at it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.grafana_check import ROOT, check

DASHBOARD = ROOT / "grafana" / "dashboards" / "pgproof.json"


def _load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_matches_the_grafana_schema() -> None:
    result = check(_load())
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_dashboard_is_refused() -> None:
    cases: list[tuple[Callable[[dict[str, Any]], object], str]] = [
        (lambda d: d["panels"][1]["options"].update(colorMode="rainbow"), "rainbow"),
        (lambda d: d["panels"][1]["options"].pop("reduceOptions"), "reduceOptions"),
        (lambda d: d.update(graphTooltp=1), "graphTooltp"),
        (lambda d: d["panels"][4].update(gridPos={"h": "8", "w": 12, "x": 0, "y": 0}), "string"),
    ]
    for mutate, expected in cases:
        broken = copy.deepcopy(_load())
        mutate(broken)
        result = check(broken)
        assert result.returncode != 0
        assert expected in result.stdout, result.stdout


def test_dashboard_covers_the_issue_and_uses_only_pgproof_metrics() -> None:
    doc = _load()
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    text = " ".join(exprs)
    for metric in (
        "pgproof_backup_age_seconds",
        "pgproof_backup_size_bytes",
        "pgproof_backup_last_status",
        "pgproof_restore_test_last_status",
        "pgproof_restore_test_duration_seconds",
        "pgproof_restore_test_rpo_seconds",
        "pgproof_source_wal_ready_files",
        "pgproof_wal_archive_missing_segments",
    ):
        assert metric in text, metric
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_provisioning_points_at_the_dashboard() -> None:
    prov = ROOT / "grafana" / "provisioning"
    dashboards = yaml.safe_load((prov / "dashboards" / "pgproof.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"]
    sources = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    assert Path(DASHBOARD).exists()
