"""PITR targets and what a recovery log says it reached: pure functions."""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass

from pgproof.backups import walnames
from pgproof.verifier.errors import TargetError

_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_LAST_TX = re.compile(
    r"last completed transaction was at log time (\d{4}-\d\d-\d\d [0-9:.]+[+-]\d\d)"
)
_STOPPING = re.compile(
    r"recovery stopping (before|after|at) (.+?)(?:, time (\d{4}-\d\d-\d\d [0-9:.]+[+-]\d\d))?\s*$",
    re.M,
)
_TARGET_MISSED = "recovery ended before configured recovery target was reached"
_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d [0-9:.]+ [A-Z]+)")


@dataclass(frozen=True)
class Target:
    mode: str  # latest | immediate | time | lsn | xid | name
    settings: dict[str, str]
    time: dt.datetime | None = None

    def describe(self) -> str:
        return (
            self.mode
            if not self.settings
            else ", ".join(f"{k}={v}" for k, v in self.settings.items())
        )


def parse_time(text: str) -> dt.datetime:
    """ISO-like timestamps; without a zone they are UTC."""
    cleaned = text.strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
    if re.search(r"[+-]\d\d$", cleaned):
        cleaned += ":00"
    try:
        moment = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        raise TargetError(f"not a timestamp: {text!r} (use e.g. 2026-11-24T10:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def pg_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def consistent_by(backup_end: dt.datetime) -> dt.datetime:
    """The earliest time a recovery target may name: the backup's end, or the next whole
    second when the end is known only to the second (pgBackRest's and barman's listings
    truncate it): a target before the backup's end record stops recovery before the copy is
    consistent, and PostgreSQL refuses to start."""
    if backup_end.microsecond == 0:
        return backup_end + dt.timedelta(seconds=1)
    return backup_end


def choose(
    spec: str,
    backup_end: dt.datetime,
    newest_commit: dt.datetime | None,
    rng: random.Random | None = None,
) -> Target:
    """Turn ``--pitr`` into recovery settings; TargetError for impossible targets."""
    backup_end = consistent_by(backup_end)
    spec = (spec or "latest").strip()
    if spec == "latest":
        return Target("latest", {})
    if spec == "immediate":
        return Target("immediate", {"recovery_target": "immediate"})
    if spec == "random":
        if newest_commit is None or newest_commit <= backup_end:
            return Target("latest", {})  # nothing committed after the backup: replay all
        span = (newest_commit - backup_end).total_seconds()
        moment = backup_end + dt.timedelta(seconds=(rng or random.Random()).uniform(0, span))
        return Target("time", {"recovery_target_time": pg_time(moment)}, moment)
    kind, sep, value = spec.partition(":")
    if sep and kind in ("lsn", "xid", "name"):
        if kind == "lsn":
            try:
                walnames.parse_lsn(value)
            except ValueError as exc:
                raise TargetError(str(exc)) from None
        if kind == "xid" and not value.isdigit():
            raise TargetError(f"not a transaction id: {value!r}")
        return Target(kind, {f"recovery_target_{kind}": value})
    moment = parse_time(spec)
    if moment < backup_end:
        raise TargetError(
            f"PITR target {moment.isoformat()} is before the backup's end "
            f"({backup_end.isoformat()}): pick a later time or an older backup"
        )
    return Target("time", {"recovery_target_time": pg_time(moment)}, moment)


@dataclass(frozen=True)
class Reached:
    lsn: str | None
    last_transaction: dt.datetime | None
    stop_reason: str | None
    target_missed: bool
    replayed_commit: dt.datetime | None = None  # the last commit (or abort) replay applied
    stop_time: dt.datetime | None = None  # the time of the record replay stopped at

    @property
    def next_commit(self) -> dt.datetime | None:
        """The commit after the target that replay stopped before, if it did."""
        if self.stop_reason is not None and self.stop_reason.startswith("stopping before"):
            return self.stop_time
        return None


def read_log(log: str) -> Reached:
    redo = _REDO_DONE.findall(log)
    last = _LAST_TX.findall(log)
    stop = _STOPPING.findall(log)
    when = (
        parse_time(last[-1])
        if last
        else (parse_time(stop[-1][2]) if stop and stop[-1][2] else None)
    )
    reason = f"stopping {stop[-1][0]} {stop[-1][1]}" if stop else None
    return Reached(
        redo[-1] if redo else None,
        when,
        reason,
        _TARGET_MISSED in log,
        replayed_commit=parse_time(last[-1]) if last else None,
        stop_time=parse_time(stop[-1][2]) if stop and stop[-1][2] else None,
    )


def newest_commit(waldump_output: str) -> dt.datetime | None:
    found = _COMMIT.findall(waldump_output)
    return parse_time(found[-1]) if found else None


_TABLESPACE_CREATE = re.compile(
    r'WAL redo at ([0-9A-F]+/[0-9A-F]+) for Tablespace/CREATE: (\d+) "((?:[^"\\]|\\.)*)"'
)


@dataclass(frozen=True)
class TablespaceCreated:
    lsn: str
    oid: int
    location: str


def tablespace_created(log: str) -> TablespaceCreated | None:
    """The CREATE TABLESPACE record replay stopped at, from the server log's CONTEXT line
    (a location outside the sandbox that the sandbox's OS user cannot take over)."""
    found = _TABLESPACE_CREATE.search(log)
    if found is None:
        return None
    return TablespaceCreated(found.group(1), int(found.group(2)), found.group(3))
