"""``serve`` (the scheduler and the HTTP endpoint) and ``heartbeat`` (the source's beat)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pgproof.backups import heartbeat
from pgproof.backups.errors import BackupError, LockHeld
from pgproof.backups.lock import heartbeat_lock
from pgproof.backups.runner import Runner
from pgproof.backups.source import Source
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_heartbeat(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    target = targets[0]
    hb = target.settings.heartbeat
    try:
        source = Source(target.settings.source, Runner())
        if args.once:
            beat = heartbeat.beat(source, hb.every_seconds, hb.database)
            print(beat.at.isoformat())
            return EXIT_OK
    except BackupError as exc:
        err(f"heartbeat on {target.name}: {exc}")
        return EXIT_FAILED
    stop = _stop_on_signals()
    try:
        with heartbeat_lock(target.settings.lock_dir, target.name):  # one writer per target
            heartbeat.run_forever(
                source,
                hb.every_seconds,
                stop,
                hb.database,
                on_error=heartbeat.throttled(
                    lambda message: err(f"heartbeat on {target.name}: {message}")
                ),
            )
    except LockHeld as exc:
        err(str(exc))
        return EXIT_FAILED
    return EXIT_OK


def cmd_serve(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof import logs
    from pgproof.exporters.errors import ExporterError
    from pgproof.service import Service

    logs.setup(args.log_format or cfg.serve.log_format)
    try:
        service = Service(cfg, args.listen)
    except ExporterError as exc:
        err(str(exc))
        return EXIT_USAGE
    stop = _stop_on_signals()
    service.start()
    host, port = service.http.address
    logging.getLogger("pgproof.serve").info(
        "serving", extra={"url": f"{service.http.scheme}://{host}:{port}/metrics"}
    )
    stop.wait()
    service.stop()
    return EXIT_OK
