"""``pgproof serve``: the scheduled jobs, the exporter, the HTTP endpoint (metrics, health,
reports) and the alert loop, until SIGTERM.

Each part has its own thread: a job (a child process) never delays a scrape, evaluating and
mailing never delays a job, and a failing SMTP server only delays the mail.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from pgproof import __version__, lifeline
from pgproof.alerts.conditions import evaluate
from pgproof.alerts.notifier import Notifier, NotifierSettings
from pgproof.backups.foreign import expected_kinds
from pgproof.backups.kinds import KINDS
from pgproof.backups.lock import lock_files
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.factory import open_all
from pgproof.config import Config
from pgproof.exporters.collector import registry
from pgproof.exporters.exporter import ExportedTarget, Exporter
from pgproof.exporters.http import HttpEndpoint, Request, Response
from pgproof.exporters.scrape import metrics_handler
from pgproof.exporters.settings import AlertLimits
from pgproof.scheduling import (
    ChildRunner,
    Heartbeat,
    JobResult,
    TargetWorker,
    build_schedule,
    describe,
)
from pgproof.verifier import report, signing
from pgproof.verifier.errors import VerifierError
from pgproof.verifier.run import reap
from pgproof.verifier.sandbox import reap_leftovers

log = logging.getLogger("pgproof.serve")


def exported_targets(cfg: Config) -> list[ExportedTarget]:
    out = []
    for t in cfg.targets:
        kinds: tuple[str, ...] = tuple(k for k in KINDS if k in t.schedule) or KINDS
        foreign = t.settings.foreign
        if foreign is not None:  # the kinds the tool makes, listed by it
            kinds = expected_kinds(foreign)
        out.append(
            ExportedTarget(
                t.name,
                tuple(r.name for r in t.settings.repositories),
                t.settings.source if t.settings.source.conninfo else None,
                kinds,
                cfg.limits_for(t),
                foreign,
            )
        )
    return out


def build_exporter(cfg: Config, repos: list[Repository]) -> Exporter:
    return Exporter(exported_targets(cfg), repos, cfg.exporter, __version__)


def build_notifier(cfg: Config) -> Notifier | None:
    email = cfg.alerts.email
    if email is None:
        return None
    state_file = cfg.alerts.state_file or os.path.join(cfg.lock_dir, "alerts-state.json")
    return Notifier(
        NotifierSettings(
            email,
            state_file,
            cfg.alerts.repeat_interval_seconds,
            templates_dir=email.templates_dir,
        )
    )


def alert_limits(cfg: Config) -> dict[str, AlertLimits]:
    return {t.name: cfg.limits_for(t) for t in cfg.targets}


_RESULT_PATH = re.compile(
    r"^/reports/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})/([0-9]{8}T[0-9]{6}Z-[0-9a-f]{1,16})\.(html|json)$"
)
REPORT_CACHE_SECONDS = 30.0


class _ReportPages:
    """One build of the report and its pages, each rendered once, on first request."""

    def __init__(self, built: float, model: dict[str, Any]):
        self.built = built
        self.model = model
        self._pages: dict[str, Response] = {}
        self._lock = threading.Lock()

    def page(self, path: str) -> Response:
        with self._lock:
            cached = self._pages.get(path)
        if cached is not None:
            return cached
        response = self._render(path)
        if response.status == 200:
            with self._lock:
                self._pages[path] = response
        return response

    def _render(self, path: str) -> Response:
        if path in ("/reports/", "/reports/index.html"):
            html = report.render_html(self.model, links=True)
            return Response(200, "text/html; charset=utf-8", html.encode())
        if path == "/reports/report.json":
            return Response(200, "application/json", report.to_json(self.model).encode())
        match = _RESULT_PATH.match(path)
        if match:
            target, result_id, ext = match.groups()
            for t in self.model["targets"]:
                if t["target"] != target:
                    continue
                for rec in t["results"]:
                    if rec.get("id") == result_id:
                        if ext == "json":
                            body = json.dumps(rec, indent=2, sort_keys=True, default=str)
                            return Response(200, "application/json", body.encode())
                        html = report.render_result_html(target, rec)
                        return Response(200, "text/html; charset=utf-8", html.encode())
        return Response(404, "text/plain; charset=utf-8", b"Not Found\n")


@dataclass
class Service:
    cfg: Config
    listen: str | None = None

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self.repos = open_all(self.cfg.repositories, quick=True)
        self.exporter = build_exporter(self.cfg, self.repos)
        self.notifier = build_notifier(self.cfg)
        self.limits = alert_limits(self.cfg)
        self.http = HttpEndpoint(
            self.listen or self.cfg.http.listen,
            {
                "/metrics": metrics_handler(registry(self.exporter)),
                "/healthz": self._healthz,
                "/": self._index,
            },
            self.cfg.http.web_config_file,
            prefix_routes={"/reports/": self._reports},
            limits=self.cfg.http.limits,
        )
        timeouts = {
            "verify": self.cfg.verifier.timeout_seconds * 2 + 600,
            "logical": 24 * 3600.0,
            "physical": 24 * 3600.0,
            "retention": 6 * 3600.0,
            "check": 24 * 3600.0,
        }
        self.runner = ChildRunner(os.path.abspath(self.cfg.path), timeouts)
        self.slots = threading.Semaphore(self.cfg.serve.max_parallel_jobs)
        self.workers = {
            t.name: TargetWorker(t.name, self.runner, self.slots, self._job_done)
            for t in self.cfg.targets
        }
        self.heartbeats = [
            Heartbeat(t.name, self.runner) for t in self.cfg.targets if t.settings.heartbeat.enabled
        ]
        self.scheduler = build_schedule({t.name: t.schedule for t in self.cfg.targets}, self.submit)
        self.jobs_done: list[JobResult] = []
        self._alert_thread: threading.Thread | None = None
        self._tick_thread: threading.Thread | None = None
        self.last_evaluation: float | None = None
        self._report_cache: _ReportPages | None = None
        self._report_lock = threading.Lock()

    # -- jobs --------------------------------------------------------------------------
    def submit(self, target: str, job: str) -> None:
        if self.stop_event.is_set():
            return
        if self.workers[target].submit(job):
            log.info("job queued", extra={"target": target, "job": job})
        else:
            log.info("job already waiting, not queued again", extra={"target": target, "job": job})

    def _job_done(self, result: JobResult) -> None:
        fields = {
            "target": result.target,
            "job": result.job,
            "exit_code": result.exit_code,
            "seconds": round(result.seconds, 3),
            "summary": result.summary,
        }
        if result.exit_code == 0:
            log.info("job finished", extra=fields)
        elif self.runner.stopping.is_set():
            log.warning("job stopped by shutdown", extra=fields)
        else:
            log.warning("job failed", extra={**fields, "stderr": result.stderr_tail.strip()[-600:]})
        self.jobs_done.append(result)
        del self.jobs_done[:-1000]
        self.exporter.poke()
        with self._report_lock:
            self._report_cache = None

    def _tick(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                self.scheduler.run_pending()
                now = time.monotonic()
                for beat in self.heartbeats:
                    beat.tend(now)
            except Exception:  # noqa: BLE001 - the clock must keep ticking
                log.exception("scheduler tick failed")

    # -- HTTP --------------------------------------------------------------------------
    def _index(self, request: Request) -> Response:
        body = (
            "<!doctype html><title>pgproof</title><h1>pgproof</h1>"
            '<p><a href="/reports/">restore-test report</a> &middot; '
            '<a href="/metrics">metrics</a> &middot; <a href="/healthz">healthz</a></p>'
        )
        return Response(200, "text/html; charset=utf-8", body.encode())

    def _healthz(self, request: Request) -> Response:
        snaps = self.exporter.snapshots()
        alive = self.exporter.alive() and (
            self._tick_thread is None or self._tick_thread.is_alive()
        )
        doc = {
            "status": "ok" if alive else "a service thread stopped",
            "version": __version__,
            "repositories": {n: {"up": s.up, "error": s.error} for n, s in sorted(snaps.items())},
            "last_alert_evaluation": self.last_evaluation,
            "jobs": {
                name: {"running": w.current, "waiting": sorted(w.waiting)}
                for name, w in self.workers.items()
            },
            "schedule": list(describe(self.scheduler)),
        }
        return Response(200 if alive else 503, "application/json", json.dumps(doc).encode())

    def report_model(self) -> dict[str, Any]:
        return self._report_pages().model

    def _report_pages(self) -> _ReportPages:
        """The rendered report, rebuilt when a job finished or after REPORT_CACHE_SECONDS;
        one rebuild at a time, every other request is served from memory."""
        with self._report_lock:
            cached = self._report_cache
            if cached is not None and time.monotonic() - cached.built < REPORT_CACHE_SECONDS:
                return cached
            v = self.cfg.verifier
            try:
                trust = signing.trust_of(v.trusted_keys, v.unsigned_before)
            except signing.SigningKeyError as exc:  # the page says signatures were not checked
                log.error("report: %s", exc)
                trust = None
            model = report.build(
                report.inputs([t.settings for t in self.cfg.targets], self.repos),
                __version__,
                trust=trust,
            )
            pages = _ReportPages(time.monotonic(), model)
            self._report_cache = pages
            return pages

    def _reports(self, request: Request) -> Response:
        return self._report_pages().page(request.path)

    # -- alerts ------------------------------------------------------------------------
    def evaluate_alerts(self) -> None:
        statuses = list(self.exporter.statuses())
        alerts = evaluate(statuses, time.time(), self.limits)
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

    # -- life cycle --------------------------------------------------------------------
    def _reap(self) -> list[str]:
        """Sandbox containers and directories of dead runs."""
        v = self.cfg.verifier
        container = v.container if v.sandbox == "container" else None
        try:
            return reap(self.cfg.verifier.workdir, container)
        except VerifierError as exc:
            log.warning("cannot look for leftover containers", extra={"error": str(exc)})
            return reap_leftovers(self.cfg.verifier.workdir)

    def start(self) -> None:
        locks = [
            str(path) for t in self.cfg.targets for path in lock_files(t.settings.lock_dir, t.name)
        ]
        stopped = lifeline.stop_leftovers(locks)
        if stopped:
            log.warning(
                "stopped jobs and heartbeats left by a killed serve", extra={"stopped": stopped}
            )
        removed = self._reap()
        if removed:
            log.warning("removed sandboxes left by a killed run", extra={"sandboxes": removed})
        self.exporter.start()
        self.http.start()
        for worker in self.workers.values():
            worker.start()
        self._alert_thread = threading.Thread(
            target=self._alert_loop, name="pgproof-alerts", daemon=True
        )
        self._alert_thread.start()
        self._tick_thread = threading.Thread(target=self._tick, name="pgproof-tick", daemon=True)
        self._tick_thread.start()
        for entry in describe(self.scheduler):
            log.info("scheduled", extra=entry)

    def stop(self) -> None:
        """Nothing new starts; running jobs get SIGTERM, then their process groups are
        killed after the grace period; sandboxes left behind are removed."""
        log.info("stopping", extra={"grace_seconds": self.cfg.serve.shutdown_grace_seconds})
        self.stop_event.set()
        self.runner.terminate_all(self.cfg.serve.shutdown_grace_seconds)
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            if worker.is_alive():
                worker.join(timeout=30)
        for beat in self.heartbeats:
            beat.stop()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=10)
        removed = self._reap()
        if removed:
            log.warning("removed sandboxes of stopped jobs", extra={"sandboxes": removed})
        self.http.close()
        self.exporter.close()
        if self._alert_thread is not None:
            self._alert_thread.join(timeout=60)
        for repo in self.repos:
            repo.close()
        log.info("stopped")
