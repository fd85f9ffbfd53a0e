"""The files source's pure parts: names, dump headers, backup_manifest and backup_label, the
gzip reader, the layout's grouping; and its config."""

from __future__ import annotations

import datetime as dt
import gzip
import struct
import zlib
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pgproof import config
from pgproof.backups import cronfiles, filesource, walnames
from pgproof.backups.settings import FilesSettings, FilesystemRepoSettings
from pgproof.backups.storage.base import ObjectInfo
from pgproof.configfields import ConfigError

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("name", "moment"),
    [
        ("billing_full_20261129_020000.dump.gz", "2026-11-29T02:00:00+00:00"),
        ("billing-2026-11-29_02-00-00.sql", "2026-11-29T02:00:00+00:00"),
        ("2026-11-29T02:00:00_billing.sql.gz", "2026-11-29T02:00:00+00:00"),
        ("billing_20261129.dump", "2026-11-29T00:00:00+00:00"),
        ("20261129_030000", "2026-11-29T03:00:00+00:00"),
    ],
)
def test_the_time_a_name_carries(name: str, moment: str) -> None:
    found = cronfiles.stamp_of(name, UTC)
    assert found is not None and found.isoformat() == moment


def test_names_without_a_time_and_local_times() -> None:
    assert cronfiles.stamp_of("billing.dump", UTC) is None
    assert cronfiles.stamp_of("billing_20269999.dump", UTC) is None  # not a date
    assert cronfiles.stamp_of("app_123456789012345.sql", UTC) is None  # a longer number
    paris = cronfiles.stamp_of("db_20260701_020000.sql", ZoneInfo("Europe/Paris"))
    assert paris == dt.datetime(2026, 7, 1, 0, 0, tzinfo=dt.UTC)  # CEST is UTC+2


@pytest.mark.parametrize(
    ("name", "database", "kind"),
    [
        ("billing_full_20261129_020000.dump.gz", "billing", "custom"),
        ("shop_20261129_020000.sql.gz", "shop", "plain"),
        ("my-app_db_2026-11-29.sql", "my-app", "plain"),
        ("20261129_orders.backup", "orders", "custom"),
        ("globals_20261129_020000.sql", "globals", "globals"),
        ("inventory.dump", "inventory", "custom"),
    ],
)
def test_what_a_dump_name_says(name: str, database: str, kind: str) -> None:
    assert cronfiles.dump_kind(name, "*globals*") == kind
    if kind != "globals":
        assert cronfiles.database_of(name) == database


def test_files_that_are_not_dumps() -> None:
    for name in ("README", "base.tar.gz", "x.tar", ".sql", "notes.txt.gz"):
        assert cronfiles.dump_kind(name, "*globals*") is None


def _custom_header(vmin: int, database: str, server: str) -> bytes:
    def i(value: int) -> bytes:
        return bytes([1 if value < 0 else 0]) + struct.pack("<I", abs(value))

    def s(text: str) -> bytes:
        return i(len(text.encode())) + text.encode()

    head = b"PGDMP" + bytes([1, vmin, 0, 4, 8, 1])
    head += bytes([1]) if vmin >= 15 else i(9)
    head += b"".join(i(v) for v in (5, 4, 3, 29, 10, 126, 0))
    return head + s(database) + s(server) + s(server) + b"\x00" * 64


@pytest.mark.parametrize("vmin", [14, 15, 16])
def test_a_custom_dump_header_of_each_archive_version(vmin: int) -> None:
    h = cronfiles.parse_custom_header(_custom_header(vmin, "billing", "15.8 (Debian)"))
    assert (h.database, h.server_version, h.version) == ("billing", "15.8 (Debian)", (1, vmin, 0))
    assert h.created == dt.datetime(2026, 11, 29, 3, 4, 5)


def test_a_custom_header_cut_short_or_of_another_format() -> None:
    with pytest.raises(cronfiles.NotACustomDump, match="cut short"):
        cronfiles.parse_custom_header(_custom_header(15, "billing", "15.8")[:30])
    with pytest.raises(cronfiles.NotACustomDump, match="no PGDMP"):
        cronfiles.parse_custom_header(b"-- PostgreSQL database dump\n")
    tar_format = bytearray(_custom_header(15, "x", "15"))
    tar_format[10] = 3
    with pytest.raises(cronfiles.NotACustomDump, match="not the custom format"):
        cronfiles.parse_custom_header(bytes(tar_format))


def test_a_plain_dump_header() -> None:
    text = (
        "--\n-- PostgreSQL database dump\n--\n\n"
        "-- Dumped from database version 15.8 (Debian 15.8-0+deb12u1)\n"
        "-- Dumped by pg_dump version 17.2\n\nSET statement_timeout = 0;\n"
    )
    h = cronfiles.parse_plain_header(text)
    assert (h.server_version, h.dump_version, h.creates_database) == ("15.8", "17.2", False)
    assert cronfiles.parse_plain_header(text + "CREATE DATABASE shop WITH;\n").creates_database
    assert cronfiles.major_of("15.8") == 15 and cronfiles.major_of("") == 0


def test_a_backup_manifest_and_a_backup_label() -> None:
    manifest = (
        b'{"PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": 7312, "Files": [],'
        b'"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000100"}]}'
    )
    wal, sysid = cronfiles.parse_backup_manifest(manifest)
    assert (wal.timeline, wal.start_lsn, wal.stop_lsn, sysid) == (
        1,
        "0/2000028",
        "0/3000100",
        "7312",
    )
    with pytest.raises(ValueError, match="backup_manifest"):
        cronfiles.parse_backup_manifest(b'{"Files": []}')
    label = cronfiles.parse_backup_label(
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
        "CHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-11-29 02:00:01 CET\n"
        "START TIMELINE: 1\n",
        ZoneInfo("Europe/Paris"),
    )
    assert label.start_segment == "000000010000000000000002" and label.timeline == 1
    assert label.started == dt.datetime(2026, 11, 29, 1, 0, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="START WAL LOCATION"):
        cronfiles.parse_backup_label("LABEL: x\n", UTC)


def test_the_release_a_segment_names() -> None:
    assert walnames.major_of_segment(struct.pack("<H", 0xD110) + b"\0" * 38) == 15
    assert walnames.major_of_segment(struct.pack("<H", 0xD118)) == 18
    assert walnames.major_of_segment(b"\x00\x00") is None


def _chunks(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_gunzip_reads_members_and_names_damage() -> None:
    two = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert b"".join(filesource.gunzipped(_chunks(two), "x.gz")) == b"hello world"
    with pytest.raises(filesource.DamagedFile, match="x.gz is truncated"):
        list(filesource.gunzipped(_chunks(two[:-9]), "x.gz"))
    flipped = bytearray(gzip.compress(bytes(range(256)) * 40))
    flipped[-6] ^= 0xFF  # the CRC
    with pytest.raises(filesource.DamagedFile, match="does not decompress"):
        list(filesource.gunzipped(_chunks(bytes(flipped)), "x.gz"))
    with pytest.raises(filesource.DamagedFile, match="empty"):
        list(filesource.gunzipped([], "x.gz"))
    assert zlib.decompress(gzip.compress(b"a"), wbits=31) == b"a"


def _info(key: str, mtime: float = 1_780_000_000.0, size: int = 10) -> ObjectInfo:
    return ObjectInfo(key, size, mtime)


def test_dumps_of_one_run_are_one_backup_with_the_globals_before_them() -> None:
    settings = FilesSettings(FilesystemRepoSettings("cron", "/x"))
    infos = [
        _info("dumps/a_full_20261128_020000.dump.gz"),
        _info("dumps/globals_20261128_020000.sql"),
        _info("dumps/a_full_20261129_020000.dump.gz"),
        _info("dumps/b_20261129_020000.sql.gz"),
        _info("dumps/globals_20261129_020000.sql"),
        _info("dumps/legacy.dump", mtime=1_700_000_000.0),
        _info("dumps/notes.txt"),
    ]
    sets = filesource._dump_sets(settings, infos, UTC)
    assert [s.id for s in sets] == [
        "logical-legacy",
        "logical-20261128T020000Z",
        "logical-20261129T020000Z",
    ]
    newest = sets[-1]
    assert [d.database for d in newest.dumps] == ["a", "b"]
    assert newest.globals is not None and newest.globals.key.endswith("20261129_020000.sql")
    assert newest.time_source == "name" and sets[0].time_source == "mtime"
    assert sets[0].globals is None  # older than every globals file


def test_the_wal_folder_plain_and_gzipped() -> None:
    seg = walnames.DEFAULT_SEGMENT_SIZE
    listing = filesource.wal_listing(
        [
            _info("wal/000000010000000000000002.gz"),
            _info("wal/000000010000000000000003"),
            _info("wal/00000002.history"),
            _info("wal/000000010000000000000002.00000028.backup"),
            _info("wal/README"),
        ],
        "wal/",
        seg,
    )
    assert listing.segments == {
        (1, 2): "wal/000000010000000000000002.gz",
        (1, 3): "wal/000000010000000000000003",
    }
    assert listing.histories == {2: "wal/00000002.history"}


def _files_config(**source: Any) -> dict[str, Any]:
    return {
        "repositories": [
            {"name": "local", "type": "filesystem", "path": "/var/lib/pgproof/repo"},
            {"name": "cron", "type": "filesystem", "path": "/srv/backups"},
        ],
        "targets": [
            {
                "name": "app",
                "results": "local",
                "source": {"type": "files", "repository": "cron", **source},
            }
        ],
    }


def test_a_files_source_config() -> None:
    cfg = config.parse(_files_config(dumps="nightly/", kinds=["logical"], timezone="Europe/Paris"))
    foreign = cfg.target(None).settings.foreign
    assert isinstance(foreign, FilesSettings)
    assert (foreign.dumps, foreign.base_backups, foreign.wal) == ("nightly/", "base/", "wal/")
    assert foreign.kinds == ("logical",) and foreign.timezone == "Europe/Paris"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repository": "nowhere"}, "no repository named 'nowhere'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"kinds": ["incremental"]}, "each one of"),
        ({"wal": "../elsewhere"}, "no '..'"),
        ({"stanza": "main"}, "stanza"),
    ],
)
def test_a_files_source_config_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(_files_config(**change))


def test_records_never_go_into_the_backups_repository() -> None:
    doc = _files_config()
    doc["targets"][0]["results"] = "cron"
    with pytest.raises(ConfigError, match="never go into the backups' own repository"):
        config.parse(doc)
