"""The service's jobs: the config's schedules (``schedule`` library, UTC), one queue and
worker per target (jobs of a target never overlap, and a failing one never stops the others),
each job a ``pgproof`` child process in its own process group (its memory, crashes and
clean-up are its own), and the heartbeat kept running per target.

Shutdown (SIGTERM to the service): nothing new starts; each running job gets SIGTERM (a
restore test removes its sandbox, a backup stops and leaves no manifest), then after a grace
period its whole process group is killed; locks are flocks and go with the processes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import schedule

from pgproof import lifeline
from pgproof.backups import process
from pgproof.schedules import Schedule
from pgproof.verifier.records import RecordError, ResultRecord

log = logging.getLogger("pgproof.jobs")

JOB_ARGS: Mapping[str, tuple[str, ...]] = {
    "logical": ("backup", "logical", "--json"),
    "physical": ("backup", "physical", "--json"),
    "verify": ("verify", "--pitr", "random", "--json"),
    "retention": ("retention", "--json"),
    "check": ("check", "--json"),
}


def plan(when: Schedule, scheduler: schedule.Scheduler) -> schedule.Job:
    """The ``schedule`` library's job for a parsed schedule (daily ones in UTC)."""
    every = scheduler.every(when.every)
    job: schedule.Job = {  # the library's unit properties are untyped
        "second": lambda: every.seconds,
        "minute": lambda: every.minutes,
        "hour": lambda: every.hours,
        "day": lambda: every.days,
    }[when.unit]()
    if when.at is not None:
        job = job.at(when.at, "UTC") if when.unit == "day" else job.at(when.at)
    return job


@dataclass(frozen=True)
class JobResult:
    target: str
    job: str
    exit_code: int
    seconds: float
    summary: str
    stderr_tail: str


@dataclass
class ChildRunner:
    """Runs ``pgproof --config C <args> --target T`` and keeps track of what runs."""

    config_path: str
    timeouts: Mapping[str, float]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _running: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def argv(self, target: str, job: str) -> list[str]:
        return self.command(target, JOB_ARGS[job])

    def command(self, target: str, args: Sequence[str]) -> list[str]:
        """``pgproof --config C <args> --target T`` with this interpreter."""
        return [
            sys.executable,
            "-m",
            "pgproof",
            "--config",
            self.config_path,
            *args,
            "--target",
            target,
        ]

    def run(self, target: str, job: str) -> JobResult:
        began = time.monotonic()
        proc = process.spawn(  # its own process group: killed as a whole if need be
            self.argv(target, job),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=lifeline.child_env(dict(self.env)),  # dies with serve
        )
        with self._lock:
            self._running[proc.pid] = proc
        try:
            try:
                out, err = proc.communicate(timeout=self.timeouts.get(job, 24 * 3600))
            except subprocess.TimeoutExpired:
                self._end(proc, grace=30)
                out, err = proc.communicate()
                err += f"\njob timed out after {self.timeouts.get(job)} s".encode()
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
        return JobResult(
            target,
            job,
            proc.returncode,
            time.monotonic() - began,
            _summary(job, out),
            err.decode(errors="replace")[-2000:],
        )

    def _end(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        """SIGTERM to the job (it stops its own tools), then after ``grace`` seconds SIGKILL
        to its whole process group."""
        process.stop_child(proc, grace, group=True, term_group=False)

    def terminate_all(self, grace: float) -> None:
        self.stopping.set()
        with self._lock:
            running = list(self._running.values())
        threads = [threading.Thread(target=self._end, args=(p, grace)) for p in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _summary(job: str, out: bytes) -> str:
    try:
        doc: Any = json.loads(out or b"null")
    except ValueError:
        return out.decode(errors="replace").strip()[-300:]
    if not isinstance(doc, dict):
        return ""
    if job in ("logical", "physical"):
        problem = doc.get("failed") or doc.get("error") or ""
        return f"backup {doc.get('backup_id') or '-'} ok={doc.get('ok')} {problem}".strip()
    if job == "verify":
        return ", ".join(_result_summary(raw) for raw in doc.get("results") or [])
    if job == "check":
        return f"healthy={doc.get('healthy')}"
    if job == "retention":
        rows = doc.get("retention") or []
        backups = sum(len(r.get("delete_backups", [])) for r in rows)
        wal = sum(len(r.get("delete_wal", [])) for r in rows)
        return f"deleted {backups} backups and {wal} WAL files"
    return json.dumps(doc)[:300]


def _result_summary(raw: object) -> str:
    try:
        r = ResultRecord.from_dict(raw)
    except RecordError as exc:
        return f"unreadable result ({exc})"
    return f"{r.kind} {r.backup_id}: {r.verdict}"


class TargetWorker(threading.Thread):
    """Runs one target's jobs one at a time, in the order they came; a job already waiting
    is not queued twice."""

    def __init__(
        self,
        target: str,
        runner: ChildRunner,
        slots: threading.Semaphore,
        on_done: Callable[[JobResult], None],
    ):
        super().__init__(name=f"pgproof-jobs-{target}", daemon=True)
        self.target = target
        self.runner = runner
        self.slots = slots
        self.on_done = on_done
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.waiting: set[str] = set()
        self.current: str | None = None
        self._lock = threading.Lock()

    def submit(self, job: str) -> bool:
        with self._lock:
            if job in self.waiting:
                return False
            self.waiting.add(job)
        self.queue.put(job)
        return True

    def stop(self) -> None:
        self.queue.put(None)

    def run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None or self.runner.stopping.is_set():
                return
            with self._lock:
                self.waiting.discard(job)
            with self.slots:
                if self.runner.stopping.is_set():
                    return
                self.current = job
                log.info("job started", extra={"target": self.target, "job": job})
                try:
                    result = self.runner.run(self.target, job)
                except Exception as exc:  # noqa: BLE001 - one job never stops the others
                    log.exception("job could not run", extra={"target": self.target, "job": job})
                    result = JobResult(self.target, job, -1, 0.0, "", str(exc))
                finally:
                    self.current = None
            try:
                self.on_done(result)
            except Exception:  # noqa: BLE001
                log.exception("after-job hook failed")


class Heartbeat:
    """Keeps ``pgproof heartbeat --target T`` running; restarts it (with a growing pause)
    whenever it exits. A failed beat (the source down) is retried by the process itself and
    reported on its stderr, which is read as it comes (a pipe nobody reads would fill and stop
    the heartbeat) and logged: each new message, a repeated one at most once a minute."""

    REPEAT_SECONDS = 60.0

    def __init__(self, target: str, runner: ChildRunner):
        self.target = target
        self.runner = runner
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.last_error = ""
        self._reader: threading.Thread | None = None

    def tend(self, now: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            if self._reader is not None:
                self._reader.join(5)
            log.warning(
                "heartbeat exited",
                extra={
                    "target": self.target,
                    "code": self.proc.returncode,
                    "stderr": self.last_error,
                },
            )
            self.proc = None
            self.restarts += 1
            self.next_start = now + min(60.0, 2.0 ** min(self.restarts, 6))
        if now < self.next_start or self.runner.stopping.is_set():
            return
        self.last_error = ""
        self.proc = process.spawn(
            self.runner.command(self.target, ("heartbeat",)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=lifeline.child_env(dict(self.runner.env)),  # dies with serve
        )
        self._reader = threading.Thread(
            target=self._read_errors,
            args=(self.proc,),
            name=f"pgproof-heartbeat-{self.target}",
            daemon=True,
        )
        self._reader.start()

    def _read_errors(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        logged_at = 0.0
        with proc.stderr as stream:
            for raw in stream:
                line = raw.decode(errors="replace").strip()[-500:]
                if not line:
                    continue
                now = time.monotonic()
                if line != self.last_error or now - logged_at >= self.REPEAT_SECONDS:
                    log.warning("heartbeat failed", extra={"target": self.target, "error": line})
                    logged_at = now
                self.last_error = line

    def stop(self) -> None:
        if self.proc is not None:
            process.stop_child(self.proc, process.GRACE_SECONDS, group=True, term_group=False)
        if self._reader is not None:
            self._reader.join(5)


def build_schedule(
    schedules: Mapping[str, Mapping[str, Schedule]],
    submit: Callable[[str, str], None],
) -> schedule.Scheduler:
    """One ``schedule`` job per (target, job) of the config."""
    scheduler = schedule.Scheduler()
    for target, jobs in schedules.items():
        for job, when in jobs.items():
            plan(when, scheduler).do(submit, target, job).tag(target, job)
    return scheduler


def describe(scheduler: schedule.Scheduler) -> Sequence[dict[str, str]]:
    return [
        {
            "tags": ",".join(sorted(str(t) for t in j.tags)),
            "next_run": j.next_run.isoformat() if j.next_run else "",
        }
        for j in scheduler.get_jobs()
    ]
