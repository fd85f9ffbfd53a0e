"""What other tools print about their backups, captured from real runs: ``pgbackrest info
--output=json`` and ``verify`` (2.45) read into typed backups and WAL ranges, what pgBackRest
says about a broken stanza quoted; ``barman-cloud-backup-list --format json`` (3.19.1)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pgproof.backups.pgbackrest import InfoError, parse_info
from pgproof.backups.pgbackrestverify import located, parse_verify

# pgBackRest 2.45, PostgreSQL 15, one full backup (verbatim)
HEALTHY = json.loads(
    '[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003",'
    '"min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000003",'
    '"stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":'
    '{"id":1,"repo-key":1},"error":false,"info":{"delta":38860638,"repository":{"delta":3913521,'
    '"size":3913521},"size":38860638},"label":"20261129-170919F","lsn":{"start":"0/3000028",'
    '"stop":"0/3000100"},"prior":null,"reference":null,"timestamp":{"start":1795972159,'
    '"stop":1795972163},"type":"full"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":'
    '7713641677942832542,"version":"15"}],"name":"main","repo":[{"cipher":"none","key":1,'
    '"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},'
    '"message":"ok"}}]'
)
# the same tool asked for a stanza that is not in the repository (exit status 0)
MISSING = json.loads(
    '[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"nope","repo":[{"cipher":"none",'
    '"key":1,"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"lock":'
    '{"backup":{"held":false}},"message":"missing stanza path"}}]'
)


def test_a_full_backup_and_its_wal_range() -> None:
    info = parse_info(HEALTHY, "main")
    (b,) = info.backups
    assert (b.label, b.type, b.pg_major, b.system_identifier) == (
        "20261129-170919F",
        "full",
        15,
        "7713641677942832542",
    )
    assert (b.start_lsn, b.stop_lsn) == ("0/3000028", "0/3000100")
    assert (b.start_wal, b.stop_wal) == ("000000010000000000000003",) * 2
    assert b.started == dt.datetime(2026, 11, 29, 17, 9, 19, tzinfo=dt.UTC)
    assert (b.finished - b.started).total_seconds() == 4
    assert (b.size, b.stored, b.error, b.prior) == (38860638, 3913521, False, None)
    (a,) = info.archives
    assert (a.id, a.db_id, a.first, a.last) == ("15-1", 1, "000000010000000000000001", b.stop_wal)
    assert info.cipher == "none"


def test_a_missing_stanza_is_named_with_pgbackrests_own_words() -> None:
    with pytest.raises(InfoError, match="stanza 'nope': missing stanza path.*repo1"):
        parse_info(MISSING, "nope")
    with pytest.raises(InfoError, match="does not list stanza 'other'"):
        parse_info(HEALTHY, "other")


@pytest.mark.parametrize(
    "broken",
    [
        {},
        [{"name": "main", "status": "ok"}],
        [{**HEALTHY[0], "backup": [{**HEALTHY[0]["backup"][0], "lsn": None}]}],
        [{**HEALTHY[0], "backup": [{**HEALTHY[0]["backup"][0], "database": {"id": 9}}]}],
    ],
)
def test_output_it_does_not_understand_is_an_error_not_a_crash(broken: object) -> None:
    with pytest.raises(InfoError):
        parse_info(broken, "main")


# `pgbackrest verify --output=text --verbose` of pgBackRest 2.45 (verbatim): a healthy stanza,
# and one whose archived segment 3 had a byte flipped
VERIFY_OK = """stanza: main
status: ok
  archiveId: 15-1, total WAL checked: 3, total valid WAL: 3
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261129-170919F, status: valid, total files checked: 977, total valid files: 977
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""
VERIFY_WAL_DAMAGED = """stanza: main
status: error
  archiveId: 15-1, total WAL checked: 3, total valid WAL: 2
    other: 1
"""


def test_verify_reports_each_backup_and_the_archive() -> None:
    ok = parse_verify(VERIFY_OK)
    assert ok.ok and ok.backup_ok("20261129-170919F") and ok.archive_problems == ()
    damaged = parse_verify(VERIFY_WAL_DAMAGED)
    assert not damaged.ok and damaged.archive_problems == ("15-1: 2 of 3 WAL files valid",)
    assert not damaged.backup_ok("20261129-170919F")  # not listed: not shown valid
    invalid = parse_verify(VERIFY_OK.replace("status: valid", "status: invalid"))
    assert not invalid.backup_ok("20261129-170919F")
    with pytest.raises(ValueError, match="no status"):
        parse_verify("")


# `pgbackrest verify --output=text --verbose --log-level-console=info` (2.55.1, and 2.45 the
# same) after one byte of a full backup's file was flipped; a diff and an incr depend on it
FULL, DIFF = "20261207-210029F", "20261207-210029F_20261207-210032D"
INCR = "20261207-210029F_20261207-210035I"
_SUMMARY = f"""stanza: main
status: error
  archiveId: 15-1, total WAL checked: 7, total valid WAL: 7
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: {FULL}, status: invalid, total files checked: 978, total valid files: 977
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: {DIFF}, status: invalid, total files checked: 979, total valid files: 978
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: {INCR}, status: invalid, total files checked: 980, total valid files: 979
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0"""
_INDENT = " " * 36
VERIFY_FULL_DAMAGED = (
    "2026-12-07 21:00:40.568 P00   INFO: verify command begin 2.55.1: --output=text --verbose\n"
    f"2026-12-07 21:00:41.010 P01   INFO: invalid checksum '{FULL}/pg_data/base/5/16396.gz'\n"
    "2026-12-07 21:00:41.011 P01   INFO: invalid result "
    f"{FULL}/pg_data/base/5/2619.gz: [29] zlib threw error\n"
    "2026-12-07 21:00:41.187 P00   INFO: "
    + _SUMMARY.replace("\n", "\n" + _INDENT)
    + "\n"
    + _SUMMARY
    + "\n2026-12-07 21:00:41.187 P00   INFO: verify command end: completed successfully (621ms)\n"
)


def test_verify_names_each_bad_file_and_the_set_that_holds_it() -> None:
    result = parse_verify(VERIFY_FULL_DAMAGED)
    assert not result.ok and result.report == _SUMMARY  # the summary once, no log lines
    assert {b: s for b, s in result.backups.items()} == dict.fromkeys((FULL, DIFF, INCR), "invalid")
    assert result.archive_problems == ()
    assert [str(f) for f in result.invalid_files] == [
        f"invalid checksum {FULL}/pg_data/base/5/16396.gz",
        f"invalid result {FULL}/pg_data/base/5/2619.gz (zlib threw error)",
    ]
    assert {f.backup_set for f in result.invalid_files} == {FULL}
    refs = {FULL: (), DIFF: (FULL,), INCR: (FULL, DIFF)}
    kinds = {FULL: "full", DIFF: "diff", INCR: "incr"}
    said = located(result, refs, kinds)
    assert said[0] == (
        f"invalid checksum {FULL}/pg_data/base/5/16396.gz: in full backup {FULL}, "
        f"which diff {DIFF}, incr {INCR} depend on"
    )
    assert located(result, refs, kinds, label=INCR) == said  # the incr depends on the full
    other = "20261208-010000F"
    assert located(result, {**refs, other: ()}, kinds, label=other) == []  # not its damage
    wal = parse_verify(
        "2026-12-07 21:00:41.010 P01   INFO: invalid checksum "
        "'15-1/0000000100000000/000000010000000000000003-abc.gz'\n" + VERIFY_WAL_DAMAGED
    )
    assert located(wal, {}, {}) == [
        "invalid checksum 15-1/0000000100000000/000000010000000000000003-abc.gz: in the WAL archive"
    ]


# -- barman-cloud-backup-list --format json (captured from barman-cloud 3.19.1, trimmed)
BARMAN_LIST = {
    "backups_list": [
        {
            "backup_id": "20261129T191950",
            "status": "DONE",
            "begin_time": "Sun Nov 29 19:19:50 2026",
            "end_time": "Sun Nov 29 19:19:56 2026",
            "begin_time_iso": "2026-11-29T19:19:50.699714+00:00",
            "end_time_iso": "2026-11-29T19:19:56.030218+00:00",
            "begin_wal": "000000010000000000000003",
            "end_wal": "000000010000000000000003",
            "begin_xlog": "0/3000028",
            "end_xlog": "0/3000100",
            "timeline": 1,
            "systemid": "7713675314011055527",
            "version": 150018,
            "xlog_segment_size": 16777216,
            "cluster_size": 39014089,
            "size": None,
            "data_checksums": "on",
            "tablespaces": [["tbs1", 16385, "/srv/tbs1"]],
            "error": None,
        },
        {
            "backup_id": "20261128T010000",
            "status": "FAILED",
            "begin_time": "Sat Nov 28 01:00:00 2026",
            "end_time": "Sat Nov 28 01:00:05 2026",
            "begin_wal": None,
            "end_wal": None,
            "timeline": 1,
            "systemid": "7713675314011055527",
            "version": 150018,
            "error": "failure uploading data (connection reset)",
        },
    ]
}


def test_barman_cloud_backups_oldest_first_with_their_state() -> None:
    from pgproof.backups import barmancloud

    failed, done = barmancloud.parse_backups(BARMAN_LIST)
    assert (failed.status, failed.error) == ("FAILED", "failure uploading data (connection reset)")
    assert failed.started.tzinfo is not None
    assert done.id == "20261129T191950" and done.version == 150018 and done.data_checksums
    assert done.begin_wal == "000000010000000000000003" and done.end_lsn == "0/3000100"
    assert done.size == 39014089 and done.segment_size == 16 << 20
    assert done.tablespaces == (barmancloud.Tablespace("tbs1", 16385, "/srv/tbs1"),)


@pytest.mark.parametrize(
    "broken",
    [[], {"backups": []}, {"backups_list": [{"status": "DONE"}]}, {"backups_list": "x"}],
)
def test_barman_cloud_output_it_does_not_understand_is_an_error(broken: object) -> None:
    from pgproof.backups import barmancloud

    with pytest.raises(ValueError):
        barmancloud.parse_backups(broken)


def test_barman_cloud_wal_names_without_their_compression() -> None:
    from pgproof.backups import barmancloud

    assert barmancloud.wal_name("000000010000000000000003.gz") == "000000010000000000000003"
    assert barmancloud.wal_name("00000002.history.bz2") == "00000002.history"
    assert barmancloud.wal_name("000000010000000000000003") == "000000010000000000000003"
