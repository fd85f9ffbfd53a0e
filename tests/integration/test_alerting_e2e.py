"""End to end: a real Prometheus scrapes the real exporter, evaluates pgproof's rules, a real
Alertmanager routes the firing alert (a stale backup) to a real SMTP server that requires
STARTTLS, and the email arrives; pgproof's own email for the same condition arrives too.

The rules are pgproof's own file with each ``for:`` set to 0s (minutes of waiting prove
nothing more about routing); everything else is as shipped.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import seed
from tests.support.fixtures import Setup
from tests.support.monitoring import Server, alertmanager, prometheus, smtp_server
from tests.support.serve import serve, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _rules_without_waiting() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(
        (ROOT / "alerts" / "prometheus" / "pgproof.rules.yml").read_text()
    )
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    return rules


def _query(prom: Server, expr: str) -> Any:
    return prom.get_json("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def test_stale_backup_reaches_the_mailbox_through_prometheus_and_alertmanager(
    fs_only15: Setup,
) -> None:
    s = fs_only15
    seed(s)
    s.pgproof("backup", "logical", check=True)
    with smtp_server() as smtp:

        def change(doc: dict[str, Any]) -> None:
            target = doc["targets"][0]
            target["max_backup_age"] = "3s"
            target["schedule"] = {"logical": "daily 02:00"}
            target["heartbeat"] = {"enabled": False}
            doc["exporter"] = {"refresh": "1s"}
            doc["alerts"] = {
                "evaluate_every": "1s",
                "state_file": str(s.config_path.parent / "alerts-state.json"),
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "starttls": True,
                    "ca_file": str(smtp.cert),
                    "from": "pgproof@example.com",
                    "to": ["dba@example.com"],
                },
            }

        s.edit_config(change)
        am_config = {
            "route": {
                "receiver": "dba",
                "group_by": ["alertname", "target"],
                "group_wait": "1s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "dba",
                    "email_configs": [
                        {
                            "to": "oncall@example.com",
                            "from": "alertmanager@example.com",
                            "smarthost": f"127.0.0.1:{smtp.port}",
                            "require_tls": True,
                            "tls_config": {"ca_file": str(smtp.cert)},
                            "send_resolved": False,
                        }
                    ],
                }
            ],
        }
        with alertmanager(am_config) as am, serve(s.config_path) as srv:
            port = srv.base_url.rsplit(":", 1)[1]
            prom_config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]}]
                },
                "scrape_configs": [
                    {"job_name": "pgproof", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                ],
            }
            with prometheus(prom_config, _rules_without_waiting()) as prom:

                def alertmanager_mail() -> bool:
                    return any(
                        "PgproofBackupTooOld" in subject for subject in smtp.mailbox.subjects()
                    )

                wait_for(alertmanager_mail, timeout=90, every=0.5)
                wait_for(
                    lambda: any(
                        subj.startswith("[pgproof] FIRING") and "logical backup" in subj
                        for subj in smtp.mailbox.subjects()
                    ),
                    timeout=60,
                    every=0.5,
                )
                assert all(smtp.mailbox.tls_seen), "a message came without STARTTLS"
                with smtp.mailbox.lock:
                    ours = next(
                        m
                        for m in smtp.mailbox.messages
                        if str(m["Subject"]).startswith("[pgproof]")
                    )
                    theirs = next(
                        m
                        for m in smtp.mailbox.messages
                        if "PgproofBackupTooOld" in str(m["Subject"])
                    )
                assert "oncall@example.com" in str(theirs["To"])
                body = {part.get_content_type(): part for part in ours.walk()}
                assert {"text/plain", "text/html"} <= set(body)
                text = body["text/plain"].get_payload(decode=True)
                assert isinstance(text, bytes) and b"runbook" in text

                # Prometheus sees the same value; the alert is active there
                alerts = prom.get_json("/api/v1/alerts")["data"]["alerts"]
                assert any(
                    a["labels"]["alertname"] == "PgproofBackupTooOld"
                    and a["labels"]["kind"] == "logical"
                    for a in alerts
                )
                # every dashboard query is valid PromQL and most have data here
                dashboard = json.loads(
                    (ROOT / "grafana" / "dashboards" / "pgproof.json").read_text()
                )
                empty = []
                for panel in dashboard["panels"]:
                    for target in panel.get("targets", []):
                        expr = target["expr"].replace("$target", ".*")
                        answer = _query(prom, expr)
                        assert answer["status"] == "success", (expr, answer)
                        if not answer["data"]["result"]:
                            empty.append(panel["title"])
                assert "Newest backup age" not in empty and "Last backup job" not in empty
    # the notification state survives: a restart would not repeat the email at once
    state = json.loads((s.config_path.parent / "alerts-state.json").read_text())
    assert any(v["last_sent"] for v in state["alerts"].values())
