"""PostgreSQL WAL rules as pure functions: names, LSNs, timelines, continuity.

No I/O here. File names follow PostgreSQL's ``xlog_internal.h``: a segment is
``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, then the segment number split by how many segments
fit in 4 GiB of LSN space), plus ``.partial``; ``TTTTTTTT.history``;
``TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup``.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_BACKUP = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class WalKind(Enum):
    SEGMENT = "segment"
    PARTIAL = "partial"
    BACKUP = "backup"
    HISTORY = "history"


def classify(name: str) -> WalKind:
    """The kind of a WAL archive file name; ValueError for anything else."""
    if _SEGMENT.match(name):
        return WalKind.SEGMENT
    if _PARTIAL.match(name):
        return WalKind.PARTIAL
    if _BACKUP.match(name):
        return WalKind.BACKUP
    if _HISTORY.match(name):
        return WalKind.HISTORY
    raise ValueError(f"not a WAL file name: {name!r}")


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    if lsn < 0 or lsn >= 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _check_segment_size(segment_size: int) -> int:
    if segment_size < 1 << 20 or segment_size > 1 << 30 or segment_size & (segment_size - 1):
        raise ValueError(f"invalid WAL segment size: {segment_size}")
    return (1 << 32) // segment_size


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_id = _check_segment_size(segment_size)
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline: {timeline}")
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def parse_segment_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """``000000010000000200000003`` -> (timeline 1, segment number)."""
    per_id = _check_segment_size(segment_size)
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    tli, log, seg = (int(g, 16) for g in match.groups())
    if seg >= per_id:
        raise ValueError(f"segment part {seg:X} too large for {segment_size}-byte segments")
    return tli, log * per_id + seg


def lsn_segment(lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The number of the segment holding ``lsn``."""
    _check_segment_size(segment_size)
    return lsn // segment_size


def stop_segment(stop_lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The last segment a backup ending at ``stop_lsn`` needs.

    A stop LSN exactly at a segment boundary lies in nothing yet written: the last needed
    segment is the previous one (PostgreSQL's XLByteToPrevSeg).
    """
    _check_segment_size(segment_size)
    return (stop_lsn - 1) // segment_size


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def timeline_of(name: str) -> int:
    return int(name[:8], 16)


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a timeline history file: ``parent`` ended at ``switch_lsn``."""

    parent: int
    switch_lsn: int
    reason: str = ""


def parse_history(text: str) -> list[HistoryEntry]:
    """Parse a ``.history`` file (PostgreSQL's readTimeLineHistory)."""
    entries: list[HistoryEntry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"history line {lineno}: expected 'timeline<TAB>LSN': {raw!r}")
        try:
            parent = int(parts[0])
            switch = parse_lsn(parts[1])
        except ValueError as exc:
            raise ValueError(f"history line {lineno}: {exc}") from None
        if entries and parent <= entries[-1].parent:
            raise ValueError(f"history line {lineno}: timeline ids must increase")
        entries.append(HistoryEntry(parent, switch, parts[2] if len(parts) > 2 else ""))
    return entries


@dataclass(frozen=True)
class TimelineSpan:
    """Segments ``first_segno`` .. ``last_segno`` (None: open-ended) are read from ``timeline``."""

    timeline: int
    first_segno: int
    last_segno: int | None


def timeline_spans(
    target: int, history: list[HistoryEntry], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[TimelineSpan]:
    """Which timeline recovery reads each segment from, following ``target``'s history.

    A new timeline starts at the segment holding its switch point (recovery reads that
    segment from the new timeline), as PostgreSQL's XLogFileReadAnyTLI does.
    """
    spans: list[TimelineSpan] = []
    first = 0
    for entry in history:
        switch_seg = lsn_segment(entry.switch_lsn, segment_size)
        spans.append(TimelineSpan(entry.parent, first, switch_seg - 1))
        first = switch_seg
    spans.append(TimelineSpan(target, first, None))
    return spans


@dataclass(frozen=True)
class ContinuityReport:
    first: str | None
    last: str | None
    timelines: tuple[int, ...]
    missing: tuple[str, ...]
    missing_history: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.missing or self.missing_history or self.problems)


@dataclass(frozen=True)
class _Frame:
    """What both continuity checks start from: the timeline path to the newest timeline,
    where checking starts, and the problems already known."""

    spans: list[TimelineSpan]
    on_path: set[int]
    start_tli: int
    start_segno: int
    missing_history: tuple[str, ...]
    problems: list[str]


def _frame(
    latest: int,
    histories: Mapping[int, list[HistoryEntry]],
    start: tuple[int, int] | None,
    earliest: tuple[int, int],
    segment_size: int,
) -> _Frame:
    missing_history = (history_name(latest),) if latest > 1 and latest not in histories else ()
    spans = timeline_spans(latest, list(histories.get(latest, [])), segment_size)
    on_path = {s.timeline for s in spans}
    problems: list[str] = []
    start_tli, start_segno = start if start is not None else earliest
    if start is not None and start_tli not in on_path and not missing_history:
        problems.append(
            f"timeline {start_tli} of the oldest backup is not an ancestor of "
            f"the newest timeline {latest}"
        )
    return _Frame(spans, on_path, start_tli, start_segno, missing_history, problems)


def check_continuity(
    segments: set[tuple[int, int]],
    histories: dict[int, list[HistoryEntry]],
    start: tuple[int, int] | None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    max_listed: int = 100,
) -> ContinuityReport:
    """Check that every segment from ``start`` (timeline, segno) to the newest is archived.

    ``segments`` holds (timeline, segno) of archived full segments; ``histories`` maps a
    timeline to its parsed history file (timelines > 1 need one). The newest point is the
    highest segment on the highest timeline. Returns the missing segment names (at most
    ``max_listed``; ``problems`` says how many more) and missing history files.
    """
    all_tlis = {t for t, _ in segments} | set(histories)
    if not segments:
        empty = ("no WAL segments archived",) if start is not None else ()
        return ContinuityReport(None, None, tuple(sorted(all_tlis)), (), (), empty)
    latest = max(t for t, _ in segments)
    end_segno = max(n for t, n in segments if t == latest)
    frame = _frame(
        latest, histories, start, min(segments, key=lambda s: (s[1], s[0])), segment_size
    )
    spans, on_path, problems = frame.spans, frame.on_path, frame.problems
    start_tli, start_segno, missing_history = (
        frame.start_tli,
        frame.start_segno,
        frame.missing_history,
    )
    missing: list[str] = []
    extra = 0
    for span in spans:
        lo = max(span.first_segno, start_segno)
        hi = end_segno if span.last_segno is None else min(span.last_segno, end_segno)
        for segno in range(lo, hi + 1):
            if (span.timeline, segno) in segments:
                continue
            # A full copy on an older timeline of the path also serves recovery.
            if any((t, segno) in segments for t in on_path if t < span.timeline):
                continue
            if len(missing) < max_listed:
                missing.append(segment_name(span.timeline, segno, segment_size))
            else:
                extra += 1
    if extra:
        problems.append(f"{extra} more missing segments not listed")
    first_name = segment_name(start_tli, start_segno, segment_size)
    last_name = segment_name(latest, end_segno, segment_size)
    return ContinuityReport(
        first_name,
        last_name,
        tuple(sorted(all_tlis)),
        tuple(missing),
        missing_history,
        tuple(problems),
    )


@dataclass(frozen=True)
class ContinuityCount:
    """``check_continuity``'s answer as counts, for large archives (the exporter)."""

    first: str | None
    last: str | None
    missing: int
    first_missing: tuple[str, ...]
    missing_history: tuple[str, ...]
    problems: tuple[str, ...]


def _gaps(values: Sequence[int], lo: int, hi: int, limit: int) -> tuple[int, list[int]]:
    """Count of integers in lo..hi absent from the sorted unique ``values``, and the first
    ``limit`` of them, in O(log n) per gap listed."""
    i = bisect.bisect_left(values, lo)
    j = bisect.bisect_right(values, hi)
    count = (hi - lo + 1) - (j - i)
    found: list[int] = []
    expected = lo
    while len(found) < limit and expected <= hi and count:
        # the first index k >= i with values[k] != expected + (k - i): values[k] - k grows
        base = expected - i
        k_lo, k_hi = i, j
        while k_lo < k_hi:
            mid = (k_lo + k_hi) // 2
            if values[mid] - mid > base:
                k_hi = mid
            else:
                k_lo = mid + 1
        gap_start = expected + (k_lo - i)
        gap_end = values[k_lo] - 1 if k_lo < j else hi
        for segno in range(gap_start, min(gap_end, hi) + 1):
            if len(found) == limit:
                break
            found.append(segno)
        if k_lo >= j:
            break
        i, expected = k_lo, values[k_lo]
    return count, found


def count_continuity(
    by_timeline: Mapping[int, Sequence[int]],
    histories: Mapping[int, list[HistoryEntry]],
    start: tuple[int, int] | None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    max_listed: int = 10,
) -> ContinuityCount:
    """The same rules as ``check_continuity`` over sorted segment numbers per timeline,
    counting the missing segments with binary searches instead of walking the range."""
    present = {t: v for t, v in by_timeline.items() if v}
    if not present:
        empty = ("no WAL segments archived",) if start is not None else ()
        return ContinuityCount(None, None, 0, (), (), empty)
    latest = max(present)
    end_segno = present[latest][-1]
    earliest = min(((t, v[0]) for t, v in present.items()), key=lambda s: (s[1], s[0]))
    frame = _frame(latest, histories, start, earliest, segment_size)
    spans, on_path, problems = frame.spans, frame.on_path, frame.problems
    start_tli, start_segno, missing_history = (
        frame.start_tli,
        frame.start_segno,
        frame.missing_history,
    )
    missing = 0
    listed: list[str] = []
    for span in spans:
        lo = max(span.first_segno, start_segno)
        hi = end_segno if span.last_segno is None else min(span.last_segno, end_segno)
        if lo > hi:
            continue
        own = present.get(span.timeline, [])
        older = [
            present[t]
            for t in on_path
            if t < span.timeline
            and t in present
            and bisect.bisect_right(present[t], hi) > bisect.bisect_left(present[t], lo)
        ]
        if not older:
            count, first = _gaps(own, lo, hi, max_listed - len(listed))
        else:  # copies on an older timeline of the path also serve: merge those ranges
            merged = sorted(
                set(own[bisect.bisect_left(own, lo) : bisect.bisect_right(own, hi)]).union(
                    *(v[bisect.bisect_left(v, lo) : bisect.bisect_right(v, hi)] for v in older)
                )
            )
            count, first = _gaps(merged, lo, hi, max_listed - len(listed))
        missing += count
        listed.extend(segment_name(span.timeline, n, segment_size) for n in first)
    return ContinuityCount(
        segment_name(start_tli, start_segno, segment_size),
        segment_name(latest, end_segno, segment_size),
        missing,
        tuple(listed),
        missing_history,
        tuple(problems),
    )


@dataclass(frozen=True)
class SegmentHeader:
    magic: int
    timeline: int
    page_address: int
    system_identifier: int
    segment_size: int


def parse_segment_header(data: bytes) -> SegmentHeader:
    """The long page header at the start of every WAL segment (xlog_internal.h).

    XLogPageHeaderData: xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
    xlp_rem_len u32 (+4 padding); XLogLongPageHeaderData adds xlp_sysid u64, xlp_seg_size
    u32, xlp_xlog_blcksz u32. Little-endian on every platform PostgreSQL ships for here.
    """
    if len(data) < 40:
        raise ValueError("too short for a WAL segment header")
    magic, info, tli, pageaddr, _rem = struct.unpack_from("<HHIQI", data, 0)
    if not info & 0x0002:  # XLP_LONG_HEADER
        raise ValueError("first page lacks the long header: not the start of a WAL segment")
    sysid, seg_size, _blcksz = struct.unpack_from("<QII", data, 24)
    return SegmentHeader(magic, tli, pageaddr, sysid, seg_size)


# XLOG_PAGE_MAGIC of each major release (xlog_internal.h): a segment's first two bytes name
# the server that wrote it
MAJOR_BY_PAGE_MAGIC = {0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18}


def major_of_segment(data: bytes) -> int | None:
    """The PostgreSQL major release that wrote a segment (its first page), None when unknown."""
    if len(data) < 2:
        return None
    return MAJOR_BY_PAGE_MAGIC.get(struct.unpack_from("<H", data, 0)[0])


def archive_reaches(last: str | None, stop: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bool:
    """Whether an archive whose newest segment is ``last`` holds a backup's WAL up to its
    stop segment ``stop`` (by position in the WAL, whatever the timelines)."""
    if last is None:
        return False
    return parse_segment_name(last, segment_size)[1] >= parse_segment_name(stop, segment_size)[1]
