"""What the files of cron-script backups say about themselves, without I/O: a dump's or a base
backup folder's time and database from its name, a custom-format dump's header, a plain
dump's header comments, a ``backup_manifest``'s WAL range and a ``backup_label``.

The common recipes this reads (issue 14): ``pg_dump -Fc -Z9 db | gzip >
db_full_YYYYmmdd_HHMMSS.dump.gz``, ``pg_dump db > db_YYYY-mm-dd.sql[.gz]``,
``pg_dumpall --globals-only > globals_YYYYmmdd.sql``, ``pg_basebackup -Ft -z -D
base/YYYYmmdd_HHMMSS`` and ``archive_command = 'cp %p /wal/%f'`` (then maybe gzip'ed).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import struct
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

# a date, optionally a time of day: 20261129, 2026-11-29, 20261129_020000, 2026-11-29T02:00:00,
# 2026-11-29_02-00-00 (never inside a longer run of digits)
_STAMP = re.compile(
    r"(?<!\d)(?P<y>\d{4})(?P<s>-?)(?P<m>\d{2})(?P=s)(?P<d>\d{2})"
    r"(?:[_T.-](?P<H>\d{2})[-:]?(?P<M>\d{2})[-:]?(?P<S>\d{2}))?(?!\d)"
)
_NOISE = re.compile(r"(?:^|[_.-])(?:full|dump|backup|pgdump|db)$", re.I)
CUSTOM_SUFFIXES = (".dump", ".backup", ".pgdump", ".custom")
PLAIN_SUFFIXES = (".sql",)
GZIP_SUFFIX = ".gz"
DumpKind = Literal["custom", "plain", "globals"]


def stamp_of(name: str, zone: ZoneInfo) -> dt.datetime | None:
    """The moment a file or folder name carries (in ``zone`` when it has no zone of its own:
    ``date +%Y%m%d_%H%M%S`` writes local time), None when it carries none."""
    for match in _STAMP.finditer(name):
        g = match.groupdict()
        try:
            moment = dt.datetime(
                int(g["y"]),
                int(g["m"]),
                int(g["d"]),
                int(g["H"] or 0),
                int(g["M"] or 0),
                int(g["S"] or 0),
                tzinfo=zone,
            )
        except ValueError:
            continue  # 20269999: not a date
        if 1990 <= moment.year <= 2200:
            return moment.astimezone(dt.UTC)
    return None


def stem_of(name: str) -> tuple[str, bool] | None:
    """``(name without its dump suffixes, gzip'ed)`` for a dump file name, None otherwise."""
    gz = name.endswith(GZIP_SUFFIX)
    base = name[: -len(GZIP_SUFFIX)] if gz else name
    for suffix in CUSTOM_SUFFIXES + PLAIN_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)], gz
    return None


def dump_kind(name: str, globals_pattern: str) -> DumpKind | None:
    """What the name says a file is: a custom-format dump, a plain SQL dump, the globals
    file, or None (not a dump). The file's first bytes decide at restore (``sniff``)."""
    found = stem_of(name)
    if found is None:
        return None
    if fnmatch.fnmatchcase(name, globals_pattern):
        return "globals"
    base = name[: -len(GZIP_SUFFIX)] if found[1] else name
    return "plain" if base.endswith(PLAIN_SUFFIXES) else "custom"


def database_of(name: str) -> str:
    """The database a dump file's name names: ``billing_full_20261129_020000.dump.gz`` ->
    ``billing`` (a custom dump's header, read at restore, has the final word)."""
    found = stem_of(name)
    stem = found[0] if found else name
    match = _STAMP.search(stem)
    if match:
        before, after = stem[: match.start()], stem[match.end() :]
        stem = before.rstrip("_.-") or after.strip("_.-")
    while (noise := _NOISE.search(stem)) and noise.start() > 0:
        stem = stem[: noise.start()]
    return stem or "postgres"


@dataclass(frozen=True)
class CustomHeader:
    """The head of a ``pg_dump -Fc`` archive (pg_backup_archiver.c, ReadHead)."""

    version: tuple[int, int, int]  # the archive format's
    database: str
    server_version: str  # "15.8 (Debian 15.8-0+deb12u1)"
    dump_version: str
    created: dt.datetime | None  # local time of the dumping machine, no zone


class NotACustomDump(ValueError):
    pass


CUSTOM_MAGIC = b"PGDMP"


def parse_custom_header(data: bytes) -> CustomHeader:
    """The first bytes (4 KiB suffice) of a custom-format archive."""
    if not data.startswith(CUSTOM_MAGIC):
        raise NotACustomDump("not a pg_dump custom-format archive (no PGDMP magic)")
    pos = len(CUSTOM_MAGIC)
    try:
        vmaj, vmin, vrev, int_size, _off_size, fmt = struct.unpack_from("6B", data, pos)
        pos += 6
        if fmt != 1:  # archCustom
            raise NotACustomDump(f"archive format {fmt} is not the custom format")

        def read_int() -> int:
            nonlocal pos
            sign = data[pos]
            value = int.from_bytes(data[pos + 1 : pos + 1 + int_size], "little")
            if len(data) < pos + 1 + int_size:
                raise IndexError(pos)
            pos += 1 + int_size
            return -value if sign else value

        def read_str() -> str:
            nonlocal pos
            length = read_int()
            if length < 0:
                return ""
            if len(data) < pos + length:
                raise IndexError(pos)
            text = data[pos : pos + length].decode("utf-8", "replace")
            pos += length
            return text

        if (vmaj, vmin) >= (1, 15):
            pos += 1  # compression algorithm
        else:
            read_int()  # compression level
        sec, minute, hour, mday, mon, year, _isdst = (read_int() for _ in range(7))
        database = read_str()
        server = read_str() if (vmaj, vmin) >= (1, 10) else ""
        dumper = read_str() if (vmaj, vmin) >= (1, 10) else ""
    except (struct.error, IndexError):
        raise NotACustomDump("the custom-format header is cut short") from None
    try:
        created: dt.datetime | None = dt.datetime(year + 1900, mon + 1, mday, hour, minute, sec)
    except ValueError:
        created = None
    return CustomHeader((vmaj, vmin, vrev), database, server, dumper, created)


_PLAIN_FROM = re.compile(r"^-- Dumped from database version (\S+)", re.M)
_PLAIN_BY = re.compile(r"^-- Dumped by pg_dump(?:all)? version (\S+)", re.M)
_PLAIN_CREATE = re.compile(r"^CREATE DATABASE ", re.M)


@dataclass(frozen=True)
class PlainHeader:
    server_version: str  # "" when the dump does not say (pg_dumpall --globals-only)
    dump_version: str
    creates_database: bool  # pg_dump -C / pg_dumpall: it connects to what it creates


def parse_plain_header(text: str) -> PlainHeader:
    """The comments pg_dump writes at the top of a plain dump (the first 64 KiB suffice for
    the versions; ``creates_database`` looks at what it is given)."""
    server = _PLAIN_FROM.search(text)
    dumper = _PLAIN_BY.search(text)
    return PlainHeader(
        server.group(1) if server else "",
        dumper.group(1) if dumper else "",
        bool(_PLAIN_CREATE.search(text)),
    )


def major_of(version: str) -> int:
    """``15.8`` -> 15, ``9.6.24`` -> 9 (0 when not a version)."""
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class WalRange:
    timeline: int
    start_lsn: str
    stop_lsn: str


def parse_backup_manifest(data: bytes) -> tuple[WalRange, str | None]:
    """The WAL range a ``backup_manifest`` records (the first range's start, the last one's
    end: a backup taken on a standby that was promoted meanwhile has several), and the
    system identifier (manifest version 2, PostgreSQL 17+; None before)."""
    try:
        doc = json.loads(data)
        ranges = doc["WAL-Ranges"]
        first, last = ranges[0], ranges[-1]
        found = WalRange(int(first["Timeline"]), str(first["Start-LSN"]), str(last["End-LSN"]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a readable backup_manifest: {exc}") from None
    sysid = doc.get("System-Identifier")
    return found, str(sysid) if sysid is not None else None


_LABEL_START = re.compile(r"^START WAL LOCATION: (\S+) \(file (\w+)\)$", re.M)
_LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.M)
_LABEL_TIME = re.compile(r"^START TIME: (.+)$", re.M)


@dataclass(frozen=True)
class BackupLabel:
    start_lsn: str
    start_segment: str
    timeline: int
    started: dt.datetime | None  # START TIME (None: absent or in a zone not understood)


def parse_backup_label(text: str, zone: ZoneInfo) -> BackupLabel:
    """A ``backup_label``. Its START TIME is in the server's log_timezone, written as an
    abbreviation: UTC/GMT are understood, any other is taken to be ``zone``."""
    start = _LABEL_START.search(text)
    if start is None:
        raise ValueError("backup_label has no START WAL LOCATION")
    timeline = _LABEL_TIMELINE.search(text)
    started = None
    moment = _LABEL_TIME.search(text)
    if moment:
        stamp, _, abbrev = moment.group(1).strip().rpartition(" ")
        try:
            naive = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            naive = None
        if naive is not None:
            utc = abbrev in ("UTC", "GMT", "Z", "+00")
            started = naive.replace(tzinfo=dt.UTC if utc else zone).astimezone(dt.UTC)
    return BackupLabel(
        start.group(1), start.group(2), int(timeline.group(1)) if timeline else 1, started
    )
