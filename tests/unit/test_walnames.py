from __future__ import annotations

import pytest

from pgproof.backups import walnames as w

SEG = w.DEFAULT_SEGMENT_SIZE


def test_lsn_round_trip() -> None:
    assert w.parse_lsn("0/2000028") == 0x2000028
    assert w.parse_lsn("1A/FF000000") == (0x1A << 32) | 0xFF000000
    assert w.format_lsn(0x1A_FF000000) == "1A/FF000000"
    with pytest.raises(ValueError):
        w.parse_lsn("12345")


def test_segment_names_follow_postgres() -> None:
    assert w.segment_name(1, 0x2) == "000000010000000000000002"
    assert w.segment_name(1, 256) == "000000010000000100000000"  # 256 x 16 MiB = 4 GiB
    assert w.parse_segment_name("000000020000000100000003") == (2, 259)
    # 64 MiB segments: 64 per 4 GiB
    assert w.segment_name(1, 64, 64 * 1024 * 1024) == "000000010000000100000000"
    with pytest.raises(ValueError):
        w.parse_segment_name("000000010000000000000100")  # seg part too big for 16 MiB
    with pytest.raises(ValueError):
        w.segment_name(1, 1, 3 * 1024 * 1024)


def test_stop_segment_at_boundary_is_previous() -> None:
    assert w.stop_segment(3 * SEG) == 2
    assert w.stop_segment(3 * SEG + 1) == 3
    assert w.lsn_segment(3 * SEG) == 3


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("000000010000000000000001", w.WalKind.SEGMENT),
        ("000000010000000000000001.partial", w.WalKind.PARTIAL),
        ("000000010000000000000002.00000028.backup", w.WalKind.BACKUP),
        ("00000002.history", w.WalKind.HISTORY),
    ],
)
def test_classify(name: str, kind: w.WalKind) -> None:
    assert w.classify(name) is kind


@pytest.mark.parametrize("bad", ["", "RECOVERYXLOG", "00000001000000000000001", "../etc/passwd"])
def test_classify_refuses_other_names(bad: str) -> None:
    with pytest.raises(ValueError):
        w.classify(bad)


def test_parse_history() -> None:
    text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000090\tat restore point\n"
    assert w.parse_history(text) == [
        w.HistoryEntry(1, 0x3000000, "no recovery target specified"),
        w.HistoryEntry(2, 0x5000090, "at restore point"),
    ]
    with pytest.raises(ValueError, match="line 1"):
        w.parse_history("x\t0/1\n")


def segs(tli: int, lo: int, hi: int) -> set[tuple[int, int]]:
    return {(tli, n) for n in range(lo, hi + 1)}


def test_continuity_complete_single_timeline() -> None:
    report = w.check_continuity(segs(1, 2, 9), {}, (1, 2))
    assert report.ok
    assert (report.first, report.last) == ("000000010000000000000002", "000000010000000000000009")


def test_continuity_names_the_gap() -> None:
    report = w.check_continuity(segs(1, 2, 9) - {(1, 5)}, {}, (1, 2))
    assert not report.ok
    assert report.missing == ("000000010000000000000005",)


def test_continuity_from_backup_start_missing_first_segment() -> None:
    report = w.check_continuity(segs(1, 3, 9), {}, (1, 2))
    assert report.missing == ("000000010000000000000002",)


def test_continuity_across_timeline_switch() -> None:
    # timeline 1 up to segment 4; promotion at 0/5000090 (segment 5) -> timeline 2 from 5 on
    history = {2: [w.HistoryEntry(1, 0x5000090)]}
    archived = segs(1, 2, 4) | {(1, 5)} | segs(2, 5, 8)
    report = w.check_continuity(archived, history, (1, 2))
    assert report.ok, report
    gap = w.check_continuity(archived - {(2, 6)}, history, (1, 2))
    assert gap.missing == ("000000020000000000000006",)
    # segment 5 is read from timeline 2; timeline 1's copy (full, archived before the
    # switch) also serves
    assert w.check_continuity(archived - {(2, 5)}, history, (1, 2)).ok


def test_continuity_needs_history_of_new_timeline() -> None:
    report = w.check_continuity(segs(1, 2, 4) | segs(2, 5, 6), {}, (1, 2))
    assert report.missing_history == ("00000002.history",)
    assert not report.ok


def test_continuity_backup_on_a_side_timeline() -> None:
    history = {3: [w.HistoryEntry(1, 0x5000000)]}  # 3 branched from 1; 2 is a dead end
    report = w.check_continuity(segs(2, 5, 6) | segs(1, 2, 4) | segs(3, 5, 7), history, (2, 5))
    assert report.problems and "not an ancestor" in report.problems[0]


def test_continuity_caps_listing() -> None:
    report = w.check_continuity({(1, 1), (1, 500)}, {}, (1, 1), max_listed=10)
    assert len(report.missing) == 10
    assert "488 more" in report.problems[0]


def test_timeline_spans() -> None:
    spans = w.timeline_spans(3, [w.HistoryEntry(1, 0x3000000), w.HistoryEntry(2, 0x5800000)])
    assert spans == [
        w.TimelineSpan(1, 0, 2),
        w.TimelineSpan(2, 3, 4),
        w.TimelineSpan(3, 5, None),
    ]
