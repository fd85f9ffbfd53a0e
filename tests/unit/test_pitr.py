from __future__ import annotations

import datetime as dt
import random

import pytest

from pgproof.verifier import pitr
from pgproof.verifier.errors import TargetError

END = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)


def test_targets() -> None:
    assert pitr.choose("latest", END, None).settings == {}
    assert pitr.choose("immediate", END, None).settings == {"recovery_target": "immediate"}
    t = pitr.choose("2026-11-24T10:05:00Z", END, None)
    assert t.mode == "time" and t.settings == {
        "recovery_target_time": "2026-11-24 10:05:00.000000+00"
    }
    assert pitr.choose("lsn:0/5000028", END, None).settings == {"recovery_target_lsn": "0/5000028"}
    assert pitr.choose("xid:1234", END, None).settings == {"recovery_target_xid": "1234"}
    assert pitr.choose("name:before-upgrade", END, None).mode == "name"


def test_random_lies_between_backup_end_and_newest_commit() -> None:
    newest = END + dt.timedelta(minutes=10)
    for seed in range(20):
        t = pitr.choose("random", END, newest, random.Random(seed))
        assert t.time is not None and END <= t.time <= newest
    assert pitr.choose("random", END, None).mode == "latest"  # nothing after the backup


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2026-11-24T09:00:00Z", "before the backup's end"),
        ("soon", "not a timestamp"),
        ("lsn:nope", "not an LSN"),
        ("xid:abc", "not a transaction id"),
    ],
)
def test_impossible_targets(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        pitr.choose(spec, END, None)


def test_reading_what_recovery_reached() -> None:
    log = (
        "LOG:  recovery stopping before commit of transaction 745, time 2026-11-24 10:03:00.5+00\n"
        "LOG:  redo done at 0/5000148 system usage: CPU: user: 0.00 s\n"
        "LOG:  last completed transaction was at log time 2026-11-24 10:02:59.9+00\n"
    )
    reached = pitr.read_log(log)
    assert reached.lsn == "0/5000148"
    assert reached.last_transaction == dt.datetime(2026, 11, 24, 10, 2, 59, 900000, tzinfo=dt.UTC)
    assert reached.stop_reason == "stopping before commit of transaction 745"
    assert reached.replayed_commit == reached.last_transaction
    assert reached.next_commit == dt.datetime(2026, 11, 24, 10, 3, 0, 500000, tzinfo=dt.UTC)
    # no commit replayed: the log names only the one it stopped before
    only_stop = pitr.read_log(log.splitlines(keepends=True)[0])
    assert only_stop.replayed_commit is None and only_stop.next_commit is not None
    lsn_log = (
        'LOG:  recovery stopping after WAL location (LSN) "0/3015688"\n'
        "LOG:  redo done at 0/3015688 system\n"
    )
    assert pitr.read_log(lsn_log).stop_reason == 'stopping after WAL location (LSN) "0/3015688"'
    point = 'LOG:  recovery stopping at restore point "p1", time 2026-11-24 10:01:00+00\n'
    assert pitr.read_log(point).stop_reason == 'stopping at restore point "p1"'
    assert pitr.read_log(
        "FATAL:  recovery ended before configured recovery target was reached"
    ).target_missed


def test_a_tablespace_created_in_replay_is_named_with_its_lsn() -> None:
    log = (
        'FATAL:  could not set permissions on directory "/srv/ts": Operation not permitted\n'
        'CONTEXT:  WAL redo at 0/4000410 for Tablespace/CREATE: 16398 "/srv/ts \\"x\\""\n'
    )
    created = pitr.tablespace_created(log)
    assert created == pitr.TablespaceCreated("0/4000410", 16398, '/srv/ts \\"x\\"')
    assert pitr.tablespace_created("FATAL: something else") is None


def test_a_backup_end_known_to_the_second_may_be_a_second_late() -> None:
    """pgBackRest and barman list a backup's end truncated to the second: a random target in
    that second could precede the backup's end record, and recovery refuses to start."""
    newest = END + dt.timedelta(seconds=30)
    for seed in range(200):
        t = pitr.choose("random", END, newest, random.Random(seed))
        assert t.time is not None and END + dt.timedelta(seconds=1) <= t.time <= newest
    precise = END + dt.timedelta(milliseconds=250)  # pgproof's own manifests: milliseconds
    assert pitr.consistent_by(precise) == precise
    with pytest.raises(TargetError, match="before the backup's end"):
        pitr.choose("2026-11-24T10:00:00.5Z", END, None)
