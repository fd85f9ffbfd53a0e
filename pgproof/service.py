"""``pgproof serve``: the exporter, the HTTP endpoint and the alert loop, until SIGTERM.

The alert loop runs in its own thread: evaluating and mailing never delays a backup or a
restore test, and a failing SMTP server only delays the mail.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from alerts.conditions import Thresholds, evaluate
from alerts.notifier import Notifier, NotifierSettings
from alerts.smtp import SmtpSettings
from backups.storage.base import Repository
from backups.storage.factory import open_all
from exporters.collector import registry
from exporters.exporter import ExportedTarget, Exporter
from exporters.http import HttpEndpoint, Request, Response, metrics_handler
from pgproof import __version__
from pgproof.config import Config

log = logging.getLogger("pgproof.serve")


def exported_targets(cfg: Config) -> list[ExportedTarget]:
    out = []
    for t in cfg.targets:
        kinds = tuple(k for k in ("logical", "physical") if k in t.schedule)
        out.append(
            ExportedTarget(
                t.name,
                tuple(r.name for r in t.settings.repositories),
                t.settings.source,
                kinds or ("logical", "physical"),
                {
                    "backup_max_age_seconds": t.settings.max_backup_age_seconds,
                    "restore_test_max_age_seconds": cfg.alerts.max_restore_test_age_seconds,
                    "wal_stalled_after_seconds": cfg.alerts.wal_stalled_after_seconds,
                    "wal_backlog_max_files": cfg.alerts.wal_backlog_files,
                },
            )
        )
    return out


def build_exporter(cfg: Config, repos: list[Repository]) -> Exporter:
    return Exporter(exported_targets(cfg), repos, cfg.exporter, __version__)


def build_notifier(cfg: Config) -> Notifier | None:
    email = cfg.alerts.email
    if email is None:
        return None
    smtp = SmtpSettings(
        email.host,
        email.port,
        email.sender,
        email.to,
        email.starttls,
        email.tls,
        email.username,
        email.password_env,
        email.password_file,
        email.ca_file,
        email.verify,
        email.timeout_seconds,
    )
    state_file = cfg.alerts.state_file or os.path.join(cfg.lock_dir, "alerts-state.json")
    return Notifier(
        NotifierSettings(
            smtp,
            state_file,
            cfg.alerts.repeat_interval_seconds,
            templates_dir=email.templates_dir,
        )
    )


def thresholds(cfg: Config) -> Thresholds:
    a = cfg.alerts
    return Thresholds(
        {t.name: t.settings.max_backup_age_seconds for t in cfg.targets},
        a.max_backup_age_seconds,
        a.max_restore_test_age_seconds,
        a.wal_stalled_after_seconds,
        a.wal_backlog_files,
    )


@dataclass
class Service:
    cfg: Config
    listen: str | None = None

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self.repos = open_all(self.cfg.repositories, quick=True)
        self.exporter = build_exporter(self.cfg, self.repos)
        self.notifier = build_notifier(self.cfg)
        self.thresholds = thresholds(self.cfg)
        self.http = HttpEndpoint(
            self.listen or self.cfg.http.listen,
            {
                "/metrics": metrics_handler(registry(self.exporter)),
                "/healthz": self._healthz,
                "/": self._index,
            },
            self.cfg.http.web_config_file,
        )
        self._alert_thread: threading.Thread | None = None
        self.last_evaluation: float | None = None

    def _index(self, request: Request) -> Response:
        body = (
            "<!doctype html><title>pgproof</title><h1>pgproof</h1>"
            '<p><a href="/metrics">metrics</a> &middot; <a href="/healthz">healthz</a></p>'
        )
        return Response(200, "text/html; charset=utf-8", body.encode())

    def _healthz(self, request: Request) -> Response:
        snaps = self.exporter.snapshots()
        alive = self.exporter.alive()
        doc = {
            "status": "ok" if alive else "refresh thread stopped",
            "version": __version__,
            "repositories": {n: {"up": s.up, "error": s.error} for n, s in sorted(snaps.items())},
            "last_alert_evaluation": self.last_evaluation,
        }
        return Response(200 if alive else 503, "application/json", json.dumps(doc).encode())

    def evaluate_alerts(self) -> None:
        statuses = list(self.exporter.statuses())
        alerts = evaluate(statuses, time.time(), self.thresholds)
        self.last_evaluation = time.time()
        if self.notifier is not None:
            self.notifier.process(alerts)

    def _alert_loop(self) -> None:
        every = self.cfg.alerts.evaluate_every_seconds
        while not self.stop_event.wait(every):
            try:
                self.evaluate_alerts()
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad evaluation
                log.exception("alert evaluation failed")

    def start(self) -> None:
        self.exporter.start()
        self.http.start()
        self._alert_thread = threading.Thread(
            target=self._alert_loop, name="pgproof-alerts", daemon=True
        )
        self._alert_thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.http.close()
        self.exporter.close()
        if self._alert_thread is not None:
            self._alert_thread.join(timeout=60)
        for repo in self.repos:
            repo.close()
