from __future__ import annotations

import json

import pytest

from pgproof.backups import catalog
from pgproof.backups.errors import BackupFailed, CatalogError
from pgproof.backups.physical import _tablespaces, parse_points, parse_tablespace_map

LABEL = (
    b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
    b"CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
    b"START TIME: 2026-11-24 01:00:00 UTC\nLABEL: pgproof x\nSTART TIMELINE: 1\n"
)


def manifest(*ranges: tuple[int, str, str]) -> bytes:
    return json.dumps(
        {"WAL-Ranges": [{"Timeline": t, "Start-LSN": a, "End-LSN": b} for t, a, b in ranges]}
    ).encode()


def test_points_from_label_and_manifest() -> None:
    points = parse_points(LABEL, manifest((1, "0/5000028", "0/5000138")))
    assert (points.start_lsn, points.stop_lsn) == (0x5000028, 0x5000138)
    assert (points.timeline, points.stop_timeline) == (1, 1)
    assert points.start_time == "2026-11-24 01:00:00 UTC"


def test_timeline_switch_during_backup() -> None:
    points = parse_points(
        LABEL, manifest((1, "0/5000028", "0/6000000"), (2, "0/6000000", "0/6000100"))
    )
    assert (points.timeline, points.stop_timeline, points.stop_lsn) == (1, 2, 0x6000100)


@pytest.mark.parametrize(
    ("label", "man"),
    [(b"nothing useful", manifest((1, "0/1", "0/2"))), (LABEL, b"{}"), (LABEL, b"not json")],
)
def test_unusable_inputs_are_catalog_errors(label: bytes, man: bytes) -> None:
    with pytest.raises(CatalogError):
        parse_points(label, man)


def test_tablespace_map_with_escaped_locations() -> None:
    text = b"16384 /srv/ts one\n16390 /srv/odd\\\\path\\\nline\n\n"
    assert parse_tablespace_map(text) == {16384: "/srv/ts one", 16390: "/srv/odd\\path\nline"}
    with pytest.raises(CatalogError, match="unreadable"):
        parse_tablespace_map(b"nonsense\n")


def _file(name: str) -> catalog.BackupFile:
    return catalog.BackupFile(name, 1, "0" * 64, "tablespace", "zstd:3")


def test_every_archive_is_in_the_tablespace_map_and_back() -> None:
    files = [_file("tablespace-16384.tar.zst"), _file("tablespace-16390.tar.zst")]
    spaces = _tablespaces(files, {16384: "/a", 16390: "/b"}, {16384: "fast"})
    assert [(t.oid, t.name, t.location, t.file) for t in spaces] == [
        (16384, "fast", "/a", "tablespace-16384.tar.zst"),
        (16390, "16390", "/b", "tablespace-16390.tar.zst"),  # dropped before we named it
    ]
    with pytest.raises(BackupFailed, match="tablespace_map"):
        _tablespaces(files[:1], {16384: "/a", 16390: "/b"}, {})
