from __future__ import annotations

import datetime as dt

from pgproof.backups import catalog, kinds, retention
from pgproof.backups.settings import RetentionSettings

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def manifest(day: int, kind: kinds.Kind = "physical", start_seg: int = 1) -> catalog.Manifest:
    finished = NOW - dt.timedelta(days=day)
    return catalog.Manifest(
        id=f"{finished:%Y%m%dT%H%M%SZ}-{kind}",
        kind=kind,
        target="t",
        system_identifier="1",
        pg_version="15.18",
        pg_version_num=150018,
        started_at=catalog.utc_iso(finished - dt.timedelta(minutes=5)),
        finished_at=catalog.utc_iso(finished),
        compression="zstd:3",
        files=(),
        tools={},
        pgproof_version="0",
        repositories=("local",),
        wal_segment_size=16 * 1024 * 1024,
        data_checksums=True,
        start_wal=f"00000001000000000000{start_seg:04X}" if kind == "physical" else None,
    )


def test_keeps_newest_n_per_kind() -> None:
    ms = [manifest(d, "physical", 100 - d) for d in range(5)] + [
        manifest(d, "logical") for d in range(3)
    ]
    kept, gone = retention.choose_backups(ms, RetentionSettings(full_backups=2), set(), NOW)
    assert (
        sorted(m.id for m in kept)
        == sorted(m.id for m in ms if m.finished > NOW - dt.timedelta(days=2) or False)
        or len(kept) == 4
    )
    assert {m.kind for m in kept} == {"physical", "logical"}
    assert len([m for m in kept if m.kind == "physical"]) == 2
    assert all("beyond the newest 2" in why for why in gone.values())


def test_age_limit_keeps_min_backups_and_the_last_passed() -> None:
    old = [manifest(d) for d in (40, 50, 60)]
    kept, gone = retention.choose_backups(
        old, RetentionSettings(max_age_days=30, min_backups=1), {old[2].id}, NOW
    )
    assert {m.id for m in kept} == {old[0].id, old[2].id}  # newest (min 1) + last passed test
    assert list(gone) == [old[1].id]


def test_wal_horizon_is_oldest_kept_physical_start() -> None:
    kept = [manifest(1, "physical", 0x30), manifest(3, "physical", 0x10), manifest(0, "logical")]
    assert retention.wal_horizon(kept) == (1, 0x10)
    assert retention.wal_horizon([manifest(0, "logical")]) is None
