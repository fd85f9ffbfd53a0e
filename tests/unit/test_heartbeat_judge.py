"""The heartbeat proof's decision and pg_waldump parsing, without I/O."""

from __future__ import annotations

import datetime as dt

from pgproof.verifier import heartbeat
from pgproof.verifier.heartbeat import ArchiveBeats, Restored, Window

T = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
REL = (1663, 5, 16390)


def at(seconds: float) -> dt.datetime:
    return T + dt.timedelta(seconds=seconds)


WIN = Window(at(-15), T, "recovery target time")


def judge(beat: dt.datetime | None, archive: ArchiveBeats | None = None) -> tuple[str, str]:
    restored = Restored(beat, 7, REL)
    result = heartbeat.judge(restored, WIN, archive, {})
    return result.verdict, result.detail


def test_beat_in_window_passes_without_the_archive() -> None:
    assert judge(at(-3))[0] == "passed"


def test_beat_after_the_target_fails() -> None:
    verdict, detail = judge(at(2))
    assert verdict == "failed" and "went past the target" in detail


def test_stale_beat_with_later_beats_in_the_archive_fails() -> None:
    archive = ArchiveBeats(((at(-50), "0/3000100"), (at(-5), "0/3000200")), 2, True)
    verdict, detail = judge(at(-61), archive)
    assert verdict == "failed"
    assert "lacks 2 beat(s)" in detail and "0/3000200" in detail


def test_stale_beat_and_no_later_beat_in_the_archive_is_an_error_naming_the_process() -> None:
    archive = ArchiveBeats(((at(-3600), "0/3000100"),), 3, True)
    verdict, detail = judge(at(-3600), archive)
    assert verdict == "error" and "pgproof heartbeat" in detail


def test_the_commit_of_the_restored_beat_itself_is_not_a_missing_beat() -> None:
    archive = ArchiveBeats(((at(-3599.6), "0/3000100"),), 1, True)
    assert judge(at(-3600), archive)[0] == "error"


def test_beats_after_the_point_reached_are_not_missing() -> None:
    archive = ArchiveBeats(((at(30), "0/3000900"),), 1, True)
    assert judge(at(-100), archive)[0] == "error"


def test_no_heartbeat_table_is_an_error_not_a_failure() -> None:
    result = heartbeat.judge(None, WIN, None, {})
    assert result.verdict == "error" and "pgproof heartbeat" in result.detail


def test_table_without_a_row_and_an_archive_with_beats_fails() -> None:
    archive = ArchiveBeats(((at(-4), "0/3000100"),), 1, True)
    assert judge(None, archive)[0] == "failed"


def test_window_falls_back_to_the_backup_span_when_nothing_committed_after_it() -> None:
    started, finished = at(-40), at(-30)
    win = heartbeat.window(None, None, None, started, finished, 15)
    assert (win.start, win.end) == (at(-55), finished) and "backup" in win.anchor
    win = heartbeat.window(None, at(-10), None, started, finished, 15)
    assert (win.start, win.end) == (at(-25), at(-10))
    assert heartbeat.window(T, at(-10), None, started, finished, 15).end == T


WALDUMP = """\
rmgr: Heap        len (rec/tot):     72/    72, tx:        745, lsn: 0/03000100, prev 0/030000C8, desc: HOT_UPDATE off 2 xmax 745 flags 0x10 ; new off 3 xmax 0, blkref #0: rel 1663/5/16390 blk 0
rmgr: Heap        len (rec/tot):     54/    54, tx:        746, lsn: 0/03000148, prev 0/03000100, desc: INSERT off 9 flags 0x00, blkref #0: rel 1663/5/16384 blk 12
rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/03000180, prev 0/03000148, desc: COMMIT 2026-11-29 11:59:50.123456 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        746, lsn: 0/030001A8, prev 0/03000180, desc: COMMIT 2026-11-29 11:59:51.000000 UTC
rmgr: Heap        len (rec/tot):     72/    72, tx:        747, lsn: 0/030001D0, prev 0/030001A8, desc: HOT_UPDATE off 3 xmax 747 flags 0x10 ; new off 4 xmax 0, blkref #0: rel 1663/5/16390 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        747, lsn: 0/03000220, prev 0/030001D0, desc: COMMIT 2026-11-29 11:59:59.000000 UTC
"""


def test_parse_waldump_finds_heartbeat_commits_up_to_the_point_reached() -> None:
    beats, oldest = heartbeat.parse_waldump(WALDUMP, REL, 0x030001FF)
    assert [lsn for _, lsn in beats] == ["0/03000180"]  # tx 747 commits after the point
    assert oldest == dt.datetime(2026, 11, 29, 11, 59, 50, 123456, tzinfo=dt.UTC)
    beats, _ = heartbeat.parse_waldump(WALDUMP, REL, 0x04000000)
    assert len(beats) == 2
    assert heartbeat.parse_waldump(WALDUMP, (1663, 5, 1), 0x04000000)[0] == []


def test_a_target_in_a_span_without_commits_is_judged_at_the_last_replayed_commit() -> None:
    """Issue 22, item 2: the source wrote nothing between its last commit and the target (it
    was down, or being restored onto a new timeline): replay stopped before a commit after
    the target, so the proof is judged where the WAL shows the data ends."""
    started, finished = at(-900), at(-890)
    last, after = at(-600), at(+120)
    win = heartbeat.window(
        T, last, None, started, finished, 15, replayed_commit=last, next_commit=after
    )
    assert (win.start, win.end) == (at(-615), last) and win.anchor == "last replayed commit"
    assert win.quiet is not None and "no commit between" in win.quiet
    result = heartbeat.judge(Restored(at(-601), 9, REL), win, None, {})
    assert result.verdict == "passed", result.detail
    assert last.isoformat() in result.detail and after.isoformat() in result.detail


def test_a_quiet_span_after_the_backup_itself_is_judged_at_the_backup_end() -> None:
    started, finished = at(-900), at(-890)
    win = heartbeat.window(T, None, None, started, finished, 15, next_commit=at(60))
    assert (win.start, win.end) == (at(-915), finished) and "backup" in win.anchor
    assert heartbeat.judge(Restored(at(-895), 3, REL), win, None, {}).verdict == "passed"


def test_commits_right_before_the_target_keep_the_window_at_the_target() -> None:
    """The source was running and committed near the target: a stale beat there is still the
    heartbeat process's absence (error) or lost data (failed), never excused."""
    started, finished = at(-900), at(-890)
    win = heartbeat.window(
        T, at(-2), None, started, finished, 15, replayed_commit=at(-2), next_commit=at(30)
    )
    assert (win.end, win.anchor, win.quiet) == (T, "recovery target time", None)
    stale = heartbeat.judge(Restored(at(-600), 9, REL), win, ArchiveBeats((), 2, True), {})
    assert stale.verdict == "error"


def test_without_a_stop_before_a_later_commit_the_window_stays_at_the_target() -> None:
    started, finished = at(-900), at(-890)
    win = heartbeat.window(T, at(-600), None, started, finished, 15, replayed_commit=at(-600))
    assert win.end == T and win.quiet is None
