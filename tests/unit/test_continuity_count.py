"""count_continuity (binary searches, for the exporter) agrees with check_continuity."""

from __future__ import annotations

import random

import pytest

from pgproof.backups import walnames
from pgproof.backups.walnames import HistoryEntry, check_continuity, count_continuity

SEG = walnames.DEFAULT_SEGMENT_SIZE


def _by_tli(segments: set[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for tli, segno in segments:
        out.setdefault(tli, []).append(segno)
    return {t: sorted(v) for t, v in out.items()}


def _agree(
    segments: set[tuple[int, int]],
    histories: dict[int, list[HistoryEntry]],
    start: tuple[int, int] | None,
) -> None:
    full = check_continuity(segments, histories, start, SEG, max_listed=10**9)
    counted = count_continuity(_by_tli(segments), histories, start, SEG, max_listed=5)
    assert counted.missing == len(full.missing)
    assert counted.first_missing == full.missing[:5]
    assert (counted.first, counted.last) == (full.first, full.last)
    assert counted.missing_history == full.missing_history
    assert set(counted.problems) <= set(full.problems)


def test_no_gap_and_simple_gaps() -> None:
    _agree({(1, n) for n in range(1, 500)}, {}, (1, 1))
    _agree({(1, n) for n in range(1, 500) if n not in (3, 4, 5, 200)}, {}, (1, 1))
    _agree({(1, n) for n in range(10, 20)}, {}, (1, 2))  # start before the first archived
    _agree(set(), {}, (1, 1))
    _agree(set(), {}, None)


def test_counts_without_walking_a_huge_range() -> None:
    segments = {(1, 0), (1, 10**7)}
    counted = count_continuity(_by_tli(segments), {}, (1, 0), SEG, max_listed=3)
    assert counted.missing == 10**7 - 1
    assert counted.first_missing == tuple(walnames.segment_name(1, n, SEG) for n in (1, 2, 3))


@pytest.mark.parametrize("seed", range(40))
def test_random_archives_with_timeline_switches(seed: int) -> None:
    rng = random.Random(seed)
    switch2 = rng.randint(5, 60)
    switch3 = rng.randint(switch2, 90)
    histories = {
        2: [HistoryEntry(1, switch2 * SEG + 100, "")],
        3: [HistoryEntry(1, switch2 * SEG + 100, ""), HistoryEntry(2, switch3 * SEG + 5, "")],
    }
    segments: set[tuple[int, int]] = set()
    for segno in range(switch2 + 3):
        if rng.random() > 0.1:
            segments.add((1, segno))
    for segno in range(switch2, switch3 + 2):
        if rng.random() > 0.1:
            segments.add((2, segno))
    for segno in range(switch3, 120):
        if rng.random() > 0.1:
            segments.add((3, segno))
    if rng.random() < 0.3:
        del histories[3]
    start = (1, rng.randint(0, switch2)) if rng.random() < 0.8 else None
    _agree(segments, histories, start)
