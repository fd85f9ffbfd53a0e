"""Audit reports from real restore tests: content, escaping, failures first, the hash chain
(edit, removal, insertion named; exit 1), and the HTML rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import load_json, seed
from tests.support.fixtures import Setup

pytestmark = pytest.mark.integration

NASTY = "<script>alert(1)</script>"


def _prepare(s: Setup) -> list[dict[str, Any]]:
    """A passed physical test, a passed logical test and a failed logical test (a custom
    check that fails), with a table whose name is an HTML injection attempt."""
    seed(s)
    s.cluster.sql(f'create table "{NASTY}" (id int)')
    s.cluster.sql(f'insert into "{NASTY}" values (1), (2)')

    def no_heartbeat(doc: dict[str, Any]) -> None:
        doc["targets"][0]["heartbeat"] = {"enabled": False}

    s.edit_config(no_heartbeat)
    s.pgproof("backup", "logical", check=True)
    s.pgproof("backup", "physical", check=True)
    s.wait_archived(s.cluster.switch_wal())
    passed = load_json(s.pgproof("verify", "--json").stdout)["results"]

    def failing_check(doc: dict[str, Any]) -> None:
        doc["targets"][0]["checks"] = [
            {"name": "nasty_table_full", "sql": f'select count(*) > 5 from "{NASTY}"'}
        ]

    s.edit_config(failing_check)
    failed = load_json(s.pgproof("verify", "--kind", "logical", "--json").stdout)["results"]
    assert [r["verdict"] for r in failed] == ["failed"]
    return [*passed, *failed]


def test_report_chain_and_chromium(setup15: Setup) -> None:
    s = setup15
    results = _prepare(s)
    failed_id = next(r["id"] for r in results if r["verdict"] == "failed")
    out = s.config_path.parent / "report.html"
    s.pgproof("report", "--out", str(out), check=True)
    html = out.read_text()
    assert NASTY not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    listing = html[html.rindex("</svg>") :]  # the restore tests, after the charts
    assert listing.index(failed_id) < min(
        listing.index(r["id"]) for r in results if r["verdict"] == "passed"
    )
    assert "chain intact" in html and "Recoverable window" in html
    assert html.count("<svg") >= 3 and "<script" not in html.lower().replace("&lt;script", "")
    assert 'src="http' not in html and "<link" not in html  # self-contained

    doc = load_json(s.pgproof("report", "--format", "json", check=True).stdout)
    target = doc["targets"][0]
    assert target["summary"] == {"tests": 3, "passed": 2, "failed": 1, "error": 0}
    assert target["results"][0]["id"] == failed_id
    assert target["chain"]["intact"] is True and target["chain"]["records"] == 3
    assert target["last_verified_backup"]["kind"] in ("logical", "physical")
    window = target["recoverable_window"]
    assert window["from"] and window["to"] and window["from"] <= window["to"]

    _chromium_renders(out)

    ok = s.pgproof("report", "--verify-chain")
    assert ok.returncode == 0 and "chain intact" in ok.stdout

    # edit a record in the filesystem repository: the verdict of the failed test flipped
    results_dir = s.repo_dir / "main" / "results"
    path = results_dir / f"{failed_id}.json"
    original = path.read_bytes()
    record = json.loads(original)
    record["verdict"] = "passed"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    edited = s.pgproof("report", "--verify-chain", "--json")
    assert edited.returncode == 1
    problems = load_json(edited.stdout)["targets"]["main"]["problems"]
    assert {"repository": "local", "record": failed_id, "kind": "edited"} in [
        {k: p[k] for k in ("repository", "record", "kind")} for p in problems
    ]
    path.write_bytes(original)
    assert s.pgproof("report", "--verify-chain").returncode == 0

    # remove the middle record from both repositories: its successor names the gap
    ordered = sorted(r["id"] for r in results)
    middle = ordered[1]
    (results_dir / f"{middle}.json").unlink()
    (results_dir / f"{middle}.json.pgproof-meta").unlink(missing_ok=True)
    from tests.integration.helpers import repos_of

    offsite = repos_of(s)[1]
    offsite.delete([f"main/results/{middle}.json"])
    removed = s.pgproof("report", "--verify-chain")
    assert removed.returncode == 1
    assert f"{ordered[2]}: removed" in removed.stdout and ordered[0] in removed.stdout

    # insert a forged record claiming to follow the first one
    forged = dict(json.loads((results_dir / f"{ordered[0]}.json").read_bytes()))
    forged["id"] = ordered[0][:-6] + "ffffff"
    import hashlib

    forged["prev_sha256"] = hashlib.sha256(
        (results_dir / f"{ordered[0]}.json").read_bytes()
    ).hexdigest()
    (results_dir / f"{forged['id']}.json").write_text(json.dumps(forged))
    inserted = s.pgproof("report", "--verify-chain", "--json")
    kinds = {
        (p["record"], p["kind"]) for p in load_json(inserted.stdout)["targets"]["main"]["problems"]
    }
    assert inserted.returncode == 1
    assert (forged["id"], "inserted") in kinds or (forged["id"], "missing") in kinds


def _chromium_renders(page: Path) -> None:
    """Headless Chromium renders the report to a screenshot, with nothing failing to load."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium not installed (scripts/setup installs Debian's chromium)")
    work = Path(tempfile.mkdtemp(prefix="pgproof-chromium-"))
    try:
        shot = work / "report.png"
        proc = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={work / 'profile'}",
                "--window-size=1200,2400",
                "--enable-logging=stderr",
                "--v=0",
                f"--screenshot={shot}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert shot.exists() and shot.stat().st_size > 10_000
        keep = os.environ.get("PGPROOF_KEEP_SCREENSHOT")  # a path, to look at the page
        if keep:
            shutil.copy(shot, keep)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        failures = [
            line
            for line in proc.stderr.splitlines()
            if "net::ERR_" in line or "Failed to load resource" in line or "Uncaught" in line
        ]
        assert failures == [], failures
        dom = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                f"--user-data-dir={work / 'profile2'}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert dom.returncode == 0
        assert "pgproof restore-test report" in dom.stdout
        assert "<script>alert(1)</script>" not in dom.stdout  # rendered as text, not a tag
    finally:
        shutil.rmtree(work, ignore_errors=True)
