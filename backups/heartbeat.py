"""The heartbeat: a one-row table on the source, updated every N seconds.

After a point-in-time recovery to T the restored ``pgproof.heartbeat`` row must be at or
before T and no older than T minus the interval (plus slack): proof that replay stopped in
the right place. ``beat_at`` is taken with clock_timestamp() just before commit.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from backups.errors import SourceError
from backups.source import Source

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
    with source.connect(database) as conn:
        conn.execute(DDL)
        row = conn.execute(
            BEAT, {"interval": interval, "writer": f"pgproof@{socket.gethostname()}"}
        ).fetchone()
    assert row is not None
    return Beat(row[0])


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
