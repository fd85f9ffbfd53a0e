"""The heartbeat: a one-row table on the source, updated every N seconds.

After a point-in-time recovery to T the restored ``pgproof.heartbeat`` row must be at or
before T and no older than T minus the interval (plus slack): proof that replay stopped in
the right place. ``beat_at`` is taken with clock_timestamp() just before commit.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgproof.backups.errors import SourceError
from pgproof.backups.source import Source

DDL = """
create schema if not exists pgproof;
create table if not exists pgproof.heartbeat (
    id smallint primary key default 1 check (id = 1),
    beat_at timestamptz not null,
    beats bigint not null,
    interval_seconds double precision not null,
    writer text not null
);
"""

BEAT = """
insert into pgproof.heartbeat as h (id, beat_at, beats, interval_seconds, writer)
values (1, clock_timestamp(), 1, %(interval)s, %(writer)s)
on conflict (id) do update
   set beat_at = clock_timestamp(), beats = h.beats + 1,
       interval_seconds = excluded.interval_seconds, writer = excluded.writer
returning beat_at
"""


@dataclass(frozen=True)
class Beat:
    at: dt.datetime


def beat(source: Source, interval: float, database: str | None = None) -> Beat:
    """One beat; SourceError for anything the source says or does (unreachable, restarting,
    read-only, in recovery during a failover), so that the caller can wait and retry."""
    with source.connect(database) as conn, source.errors("writing the heartbeat"):
        row = conn.execute("select pg_is_in_recovery()").fetchone()
        if row is not None and row[0]:
            raise SourceError(
                f"source {source.describe()} is in recovery (a standby, or a failover in "
                f"progress): the heartbeat waits for a primary"
            )
        conn.execute(DDL)
        row = conn.execute(
            BEAT, {"interval": interval, "writer": f"pgproof@{socket.gethostname()}"}
        ).fetchone()
    assert row is not None
    return Beat(row[0])


@dataclass
class _Reported:
    message: str = ""
    at: float = float("-inf")
    repeats: int = 0


def throttled(
    report: Callable[[str], None],
    every: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[SourceError], None]:
    """An error hook for :func:`run_forever` that reports a new message at once and the same
    one again at most every ``every`` seconds, with how often it happened meanwhile (a
    source down for an hour is 60 lines, not 360)."""
    last = _Reported()

    def hook(exc: SourceError) -> None:
        message, now = str(exc), clock()
        if message == last.message and now - last.at < every:
            last.repeats += 1
            return
        again = message == last.message and last.repeats > 0
        suffix = f" (and {last.repeats} more times since the last report)" if again else ""
        report(message + suffix)
        last.message, last.at, last.repeats = message, now, 0

    return hook


def run_forever(
    source: Source,
    interval: float,
    stop: threading.Event,
    database: str | None = None,
    on_error: Callable[[SourceError], None] | None = None,
) -> int:
    """Beat until ``stop`` is set; a failed beat is reported and retried next tick."""
    beats = 0
    while not stop.is_set():
        try:
            beat(source, interval, database)
            beats += 1
        except SourceError as exc:
            if on_error is not None:
                on_error(exc)
        stop.wait(interval)
    return beats
