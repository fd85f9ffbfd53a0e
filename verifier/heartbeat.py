"""The heartbeat proof of a point-in-time recovery, and the archived WAL as its witness.

``pgproof heartbeat`` (or ``serve``) updates one row on the source every N seconds. After a
recovery to a point whose time is known, the restored row must hold the newest beat before
that point: no later (replay went past the target) and not older than the window (replay
stopped early). A beat outside the window alone cannot tell a broken replay from a heartbeat
that was not running, so the archived WAL is asked: if it holds a heartbeat commit newer
than the restored beat (and not past the point reached), the restored copy lacks data the
archive has: ``failed``. If it holds none, nobody was beating: ``error``, naming the
heartbeat process. A point reached without a known time (no commit after the backup) is
checked against the backup's own span.

The decision and the parsing of pg_waldump's output are pure functions (unit-tested); the
sandbox is read by :func:`check`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgproof.backups import walnames
from pgproof.verifier import pitr, waldump
from pgproof.verifier.records import CheckResult
from pgproof.verifier.sandbox import Sandbox

NAME = "heartbeat"
MAX_SEGMENTS = 32  # the WAL searched backwards from the point reached, at most
RUN_HINT = "is `pgproof heartbeat` (or `pgproof serve`) running for this target?"

_RECORD = re.compile(r"\btx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+)")
_REL = re.compile(r"\brel (\d+)/(\d+)/(\d+)")
_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d [0-9:.]+ [A-Z]+)")


@dataclass(frozen=True)
class Window:
    """Where the newest restored beat must be: [start, end]."""

    start: dt.datetime
    end: dt.datetime
    anchor: str  # what ``end`` is: the target time, the last replayed commit, the backup
    quiet: str | None = None  # what the WAL shows between ``end`` and a later target time

    def describe(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()} ({self.anchor})"


def window(
    target_time: dt.datetime | None,
    last_transaction: dt.datetime | None,
    newest_commit: dt.datetime | None,
    backup_started: dt.datetime,
    backup_finished: dt.datetime,
    span: float,
    *,
    replayed_commit: dt.datetime | None = None,
    next_commit: dt.datetime | None = None,
) -> Window:
    """The window for the point reached. ``span`` is the beat interval plus slack.

    With a target time, replay applies every commit up to the target and stops before the
    first one after it (``next_commit``, from the server's log). When the last replayed
    commit (``replayed_commit``; none: the backup's end) lies more than a span before the
    target, the WAL shows that the source committed nothing in between (it was down, being
    restored onto a new timeline, or idle): the proof is judged at that commit, and the
    window says so, instead of asking for beats the source never wrote."""
    gap = dt.timedelta(seconds=span)
    if target_time is not None:
        if next_commit is not None and next_commit > target_time:
            last = replayed_commit
            moment = last if last is not None else backup_finished
            if moment < target_time - gap:
                quiet = (
                    f"the archived WAL holds no commit between {moment.isoformat()} ("
                    + ("the last replayed commit" if last is not None else "the backup's end")
                    + f") and the recovery target time {target_time.isoformat()}: replay "
                    f"stopped before the next commit, at {next_commit.isoformat()}"
                )
                if last is None:
                    return Window(
                        backup_started - gap, moment, "end of the backup, no later commit", quiet
                    )
                return Window(moment - gap, moment, "last replayed commit", quiet)
        return Window(target_time - gap, target_time, "recovery target time")
    latest = last_transaction or newest_commit
    if latest is not None:
        return Window(latest - gap, latest, "last replayed commit")
    # nothing committed after the backup: the point reached is the backup's end
    return Window(backup_started - gap, backup_finished, "end of the backup, no later commit")


@dataclass(frozen=True)
class Restored:
    beat_at: dt.datetime | None  # None: the table exists but has no row
    beats: int
    relation: tuple[int, int, int]  # tablespace, database, relfilenode: WAL's name for it


@dataclass(frozen=True)
class ArchiveBeats:
    """Heartbeat commits the archived WAL holds up to the point reached."""

    commits: tuple[tuple[dt.datetime, str], ...]  # (commit time, commit LSN), oldest first
    searched_segments: int
    complete: bool  # the search reached back far enough to see every newer beat

    def newer_than(
        self, moment: dt.datetime | None, until: dt.datetime
    ) -> list[tuple[dt.datetime, str]]:
        # a beat's commit follows its beat_at by a moment: a second of tolerance
        floor = None if moment is None else moment + dt.timedelta(seconds=1)
        return [(t, lsn) for t, lsn in self.commits if (floor is None or t > floor) and t <= until]


def judge(
    restored: Restored | None,
    win: Window,
    archive: ArchiveBeats | None,
    evidence: dict[str, object],
) -> CheckResult:
    """The verdict. ``archive`` is only needed when the restored beat is outside the window."""
    if restored is None:
        return CheckResult(
            NAME,
            "error",
            f"pgproof.heartbeat is not in the restored data: no beat was ever written before "
            f"{win.end.isoformat()}; {RUN_HINT}",
            evidence,
        )
    beat = restored.beat_at
    if beat is not None:
        evidence["beat_at"] = beat.isoformat()
        evidence["beats"] = restored.beats
        if beat > win.end:
            return CheckResult(
                NAME,
                "failed",
                f"replay went past the target: a beat at {beat.isoformat()} is after "
                f"{win.end.isoformat()} ({win.anchor})",
                evidence,
            )
        if beat >= win.start:
            quiet = f"; {win.quiet}" if win.quiet else ""
            return CheckResult(
                NAME,
                "passed",
                f"newest beat {beat.isoformat()} is within {win.describe()}{quiet}",
                evidence,
            )
    if archive is None:
        return CheckResult(NAME, "error", "the archived WAL could not be searched", evidence)
    evidence["archive_searched_segments"] = archive.searched_segments
    missing = archive.newer_than(beat, win.end)
    shown = beat.isoformat() if beat is not None else "no beat at all"
    if missing:
        newest_time, newest_lsn = missing[-1]
        evidence["archive_newest_beat"] = {"time": newest_time.isoformat(), "lsn": newest_lsn}
        return CheckResult(
            NAME,
            "failed",
            f"the restored copy lacks {len(missing)} beat(s) the archived WAL holds: the newest "
            f"restored is {shown}, the archive has one committed at {newest_time.isoformat()} "
            f"(LSN {newest_lsn}); replay stopped early or lost data",
            evidence,
        )
    reach = "" if archive.complete else f" (searched the last {archive.searched_segments} segments)"
    return CheckResult(
        NAME,
        "error",
        f"the heartbeat was not beating: newest beat {shown}, expected within "
        f"{win.describe()}, and the archived WAL holds no later beat{reach}; {RUN_HINT}",
        evidence,
    )


def parse_waldump(
    text: str, relation: tuple[int, int, int], until_lsn: int
) -> tuple[list[tuple[dt.datetime, str]], dt.datetime | None]:
    """(heartbeat commits as (time, LSN), the oldest commit time of any transaction) in one
    segment's pg_waldump output, records after ``until_lsn`` left out."""
    touching: set[str] = set()
    commits: list[tuple[str, dt.datetime, str]] = []
    oldest = None
    wanted = tuple(str(n) for n in relation)
    for line in text.splitlines():
        rec = _RECORD.search(line)
        if rec is None or walnames.parse_lsn(rec.group(2)) > until_lsn:
            continue
        xid, lsn = rec.group(1), rec.group(2)
        commit = _COMMIT.search(line)
        if commit is not None:
            when = pitr.parse_time(commit.group(1))
            commits.append((xid, when, lsn))
            oldest = when if oldest is None or when < oldest else oldest
            continue
        if xid != "0" and any(m.groups() == wanted for m in _REL.finditer(line)):
            touching.add(xid)
    return [(when, lsn) for xid, when, lsn in commits if xid in touching], oldest


def read_restored(sandbox: Sandbox, dbname: str) -> Restored | None:
    with sandbox.connect(dbname) as conn:
        try:
            rel = conn.execute(
                "select coalesce(nullif(c.reltablespace, 0), d.dattablespace)::bigint,"
                " d.oid::bigint, pg_relation_filenode(c.oid)::bigint"
                " from pg_class c, pg_database d"
                " where c.oid = 'pgproof.heartbeat'::regclass and d.datname = current_database()"
            ).fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return None
        row = conn.execute("select beat_at, beats from pgproof.heartbeat where id = 1").fetchone()
    assert rel is not None
    relation = (int(rel[0]), int(rel[1]), int(rel[2]))
    if row is None:
        return Restored(None, 0, relation)
    return Restored(row[0], int(row[1]), relation)


def search_archive(
    sandbox: Sandbox,
    waldir: Path,
    segments: Sequence[str],
    relation: tuple[int, int, int],
    reached_lsn: int,
    since: dt.datetime | None,
    segment_size: int,
) -> ArchiveBeats:
    """Heartbeat commits in the prefetched WAL, from the segment of the point reached
    backwards until a segment starts before ``since`` (or MAX_SEGMENTS)."""
    reached_seg = walnames.lsn_segment(reached_lsn, segment_size)
    path = [s for s in segments if walnames.parse_segment_name(s, segment_size)[1] <= reached_seg]
    found: list[tuple[dt.datetime, str]] = []
    searched = 0
    complete = False
    for name in reversed(path[-MAX_SEGMENTS:]):
        out = waldump.dump_segment(sandbox, waldir, name, [], scratch="heartbeat-wal")
        if out is None:
            break
        searched += 1
        beats, oldest = parse_waldump(out, relation, reached_lsn)
        found = beats + found
        if since is not None and oldest is not None and oldest < since:
            complete = True
            break
    else:
        complete = len(path) <= MAX_SEGMENTS
    return ArchiveBeats(tuple(found), searched, complete)
