"""Repositories with the real layout and formats, made without running backups: for the
exporter's tests and the scrape-latency benchmark (10,000 backups, 100,000 WAL segments)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

from pgproof.backups import catalog, kinds, walnames
from pgproof.backups.jobstatus import JobStatus
from pgproof.backups.layout import backup_prefix, job_status_key, results_prefix, wal_prefix
from pgproof.backups.storage.base import Repository

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SEG = walnames.DEFAULT_SEGMENT_SIZE


def manifest(
    target: str, n: int, kind: kinds.Kind, start_segno: int = 1, size: int = 1000
) -> catalog.Manifest:
    started = BASE + dt.timedelta(hours=n)
    finished = started + dt.timedelta(minutes=5)
    return catalog.Manifest(
        id=f"{started:%Y%m%dT%H%M%SZ}-{kind}-{n % 65536:04x}",
        kind=kind,
        target=target,
        system_identifier="7000000000000000001",
        pg_version="15.18",
        pg_version_num=150018,
        started_at=catalog.utc_iso(started),
        finished_at=catalog.utc_iso(finished),
        compression="zstd:3",
        files=(catalog.BackupFile("base.tar.zst", size, "0" * 64, "base", "zstd:3"),),
        tools={},
        pgproof_version="0.1.0",
        repositories=("local",),
        wal_segment_size=SEG,
        data_checksums=True,
        start_lsn=walnames.format_lsn(start_segno * SEG + 40) if kind == "physical" else None,
        stop_lsn=walnames.format_lsn(start_segno * SEG + 4000) if kind == "physical" else None,
        timeline=1 if kind == "physical" else None,
        start_wal=walnames.segment_name(1, start_segno) if kind == "physical" else None,
        stop_wal=walnames.segment_name(1, start_segno) if kind == "physical" else None,
    )


def record(target: str, n: int, m: catalog.Manifest, verdict: str = "passed") -> dict[str, object]:
    finished = m.finished + dt.timedelta(hours=1)
    return {
        "id": f"{finished:%Y%m%dT%H%M%S}Z-{n:06x}",
        "target": target,
        "backup_id": m.id,
        "kind": m.kind,
        "started_at": catalog.utc_iso(finished - dt.timedelta(minutes=2)),
        "finished_at": catalog.utc_iso(finished),
        "verdict": verdict,
        "cause": "" if verdict == "passed" else "row_counts: 3 tables differ",
        "checks": [{"name": "amcheck", "verdict": "passed", "detail": "", "evidence": {}}],
        "phases": {"fetch": 1.0, "restore": 2.0, "recovery": 3.0, "checks": 4.0, "total": 10.0},
        "rpo_seconds": 42.0,
        "pitr": {},
        "bytes_restored": 1000,
        "pg_version": "15.18",
        "sandbox": "process",
        "sandbox_image": "",
        "pgproof_version": "0.1.0",
        "backup": {"repository": "local", "size_bytes": 1000},
        "prev_sha256": None,
        "format": 1,
    }


class Writer:
    """Writes keys into a repository: through its API, or straight into a filesystem root
    (no fsync: a benchmark's setup, not a backup)."""

    def __init__(self, repo: Repository, fs_root: Path | None = None):
        self.repo = repo
        self.fs_root = fs_root

    def put(self, key: str, data: bytes) -> None:
        if self.fs_root is None:
            self.repo.put_bytes(key, data)
            return
        path = self.fs_root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)

    def manifest(self, m: catalog.Manifest) -> None:
        self.put(backup_prefix(m.target, m.id) + "base.tar.zst", b"x" * 16)
        self.put(backup_prefix(m.target, m.id) + catalog.MANIFEST_NAME, m.to_json())

    def record(self, target: str, doc: dict[str, object]) -> None:
        self.put(f"{results_prefix(target)}{doc['id']}.json", json.dumps(doc).encode())

    def wal(self, target: str, segnos: Iterable[int], timeline: int = 1) -> None:
        for segno in segnos:
            self.put(f"{wal_prefix(target)}{walnames.segment_name(timeline, segno)}.zst", b"w")

    def job(self, target: str, kind: str, status: str, error: str = "") -> None:
        now = catalog.utc_iso(dt.datetime.now(dt.UTC))
        doc = JobStatus(target, kind, status, now, now, None, error, "host")  # type: ignore[arg-type]
        self.put(job_status_key(target, kind), doc.to_json())


def fill(
    writer: Writer, target: str, backups: int, wal_segments: int, records_every: int = 10
) -> list[catalog.Manifest]:
    """``backups`` alternating logical/physical, WAL 1..wal_segments without gaps, a result
    record for every ``records_every``-th backup."""
    made = []
    for n in range(backups):
        kind: kinds.Kind = "physical" if n % 2 else "logical"
        m = manifest(target, n, kind, start_segno=1 + (n * wal_segments) // max(1, backups))
        writer.manifest(m)
        made.append(m)
        if n % records_every == 0:
            writer.record(target, record(target, n, m))
    writer.wal(target, range(1, wal_segments + 1))
    return made
