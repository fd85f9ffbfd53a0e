from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from pgproof.backups import catalog, kinds, leases, retention
from pgproof.backups.settings import RetentionSettings
from pgproof.backups.storage.filesystem import FilesystemRepository

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


def _repo(tmp_path: Path, name: str) -> FilesystemRepository:
    (tmp_path / name).mkdir()
    return FilesystemRepository(name, tmp_path / name)


def _stored(repo: FilesystemRepository, m: catalog.Manifest) -> catalog.Manifest:
    m = dataclasses.replace(m, target="t")
    repo.put_bytes(catalog.backup_prefix("t", m.id) + "base.tar.zst", b"data")
    catalog.write_manifest(repo, m)
    return m


def test_a_leased_backup_stays_while_the_lease_runs_and_goes_after(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "local")
    new, old = _stored(repo, manifest(0, "physical", 0x30)), _stored(repo, manifest(5))
    for segno in (1, 0x20, 0x30):
        repo.put_bytes(f"t/wal/00000001000000000000{segno:04X}.zst", b"w")
    policy = RetentionSettings(full_backups=1)
    lease = leases.new_lease("t", old.id, "physical", 300, now=NOW)
    leases.write([repo], lease)
    others = retention.across([repo], "t", now=NOW)
    plan = retention.plan(repo, "t", policy, now=NOW, others=others)
    assert plan.delete_backups == () and set(plan.keep) == {new.id, old.id}
    assert plan.delete_wal == ()  # the WAL from the leased backup's start stays with it
    assert plan.leased == {
        old.id: f"under restore test by {lease.holder} (lease until {lease.expires_at})"
    }
    later = NOW + dt.timedelta(seconds=301)  # the verifier died: the lease runs out
    expired = retention.plan(
        repo, "t", policy, now=later, others=retention.across([repo], "t", later)
    )
    assert expired.delete_backups == (old.id,) and expired.leased == {}
    assert len(expired.delete_wal) == 2
    leases.release([repo], lease)
    assert list(repo.listing(leases.leases_prefix("t"))) == []


def test_an_unreadable_lease_is_ignored(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "local")
    repo.put_bytes(leases.lease_key("t", "junk"), b"{not json")
    repo.put_bytes(leases.lease_key("t", "list"), b"[]")
    assert leases.active(repo, "t", NOW) == []
    forged = leases.new_lease("t", "20261124T120000Z-physical", "physical", 10 * 365 * 86400, NOW)
    leases.write([repo], forged)  # a bucket writer's lease for ten years: not ours
    assert leases.active(repo, "t", NOW, longest=300) == []
    assert leases.active(repo, "t", NOW) == [forged]


def test_leftovers_complete_in_another_repository_are_reported_not_deleted(
    tmp_path: Path,
) -> None:
    here, there = _repo(tmp_path, "here"), _repo(tmp_path, "there")
    lost, stray = manifest(1), manifest(2)
    for repo in (here, there):
        _stored(repo, lost)
    here.delete([catalog.backup_prefix("t", lost.id) + catalog.MANIFEST_NAME])  # a bucket writer
    here.put_bytes(catalog.backup_prefix("t", stray.id) + "base.tar.zst", b"interrupted")
    others = retention.across([here, there], "t", now=NOW)
    plan = retention.plan(here, "t", RetentionSettings(full_backups=1), now=NOW, others=others)
    assert plan.complete_elsewhere == {lost.id: "complete in repository there"}
    assert plan.delete_incomplete == (stray.id,)  # a true leftover still goes
    retention.apply(here, "t", plan)
    assert here.head(catalog.backup_prefix("t", lost.id) + "base.tar.zst") is not None


def test_leftovers_stay_when_another_repository_cannot_be_read(tmp_path: Path) -> None:
    here = _repo(tmp_path, "here")
    stray = manifest(2)
    here.put_bytes(catalog.backup_prefix("t", stray.id) + "base.tar.zst", b"interrupted")
    others = retention.Across({}, {}, {"s3": "connection refused"})
    plan = retention.plan(here, "t", RetentionSettings(full_backups=1), now=NOW, others=others)
    assert plan.delete_incomplete == ()
    assert plan.complete_elsewhere == {
        stray.id: "perhaps complete in repository s3, which could not be read"
    }
