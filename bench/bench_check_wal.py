"""The cost of `check` reading every WAL copy, with and without remembered verification.

Usage:
    .venv/bin/python -m bench.bench_check_wal [--segments 100000] [--kb 16]

A filesystem repository with the real layout gets --segments archived segments (each a real
first page header, padded to --kb KiB of incompressible bytes, zstd-compressed, with its
sha256 metadata) and one physical backup's manifest (the system identifier). Then, one run
each, printed with ratios:
  names only        check --no-data (listing, continuity)
  every copy read   check reading and verifying every copy (nothing remembered)
  remembered        the next check: every copy intact and unchanged, none read
  one new segment   after one more segment is archived: only it is read
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from pgproof.backups import compression, health, walnames
from pgproof.backups.layout import wal_prefix, wal_verified_key
from pgproof.backups.storage.filesystem import META_SUFFIX, FilesystemRepository
from tests.support.synthetic import Writer, manifest

SEG = walnames.DEFAULT_SEGMENT_SIZE
TARGET = "main"


def segment_copy(segno: int, sysid: int, kb: int) -> bytes:
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, segno * SEG, 0, sysid, SEG, 8192)
    body = header + bytes(8192 - len(header)) + os.urandom(max(0, kb * 1024 - 8192))
    return compression.zstd_compress_bytes(body)


def write_segment(root: Path, segno: int, sysid: int, kb: int) -> None:
    path = root / f"{wal_prefix(TARGET)}{walnames.segment_name(1, segno)}.zst"
    data = segment_copy(segno, sysid, kb)
    path.write_bytes(data)
    meta = path.with_name(path.name + META_SUFFIX)
    meta.write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}))


def timed(label: str, run: health.HealthReport | None, seconds: float, ref: float) -> None:
    wal = run.repositories[0].wal if run else {}
    read, kept = wal.get("copies_read", "-"), wal.get("copies_remembered", "-")
    print(f"  {label:<34} {seconds:8.2f} s  {seconds / ref:7.3f}x   read {read}, remembered {kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--kb", type=int, default=16, help="size of each segment's content")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgproof-bench-checkwal-"))
    try:
        root = base / "repo"
        (root / wal_prefix(TARGET)).mkdir(parents=True)
        repo = FilesystemRepository("local", root)
        m = manifest(TARGET, 0, "physical", start_segno=1)
        Writer(repo, root).manifest(m)
        sysid = int(m.system_identifier)
        started = time.perf_counter()
        for segno in range(1, args.segments + 1):
            write_segment(root, segno, sysid, args.kb)
        stored = sum(p.stat().st_size for p in (root / wal_prefix(TARGET)).iterdir())
        print(
            f"{args.segments:,} segments ({args.kb} KiB of content each, {stored / 1e6:,.0f} MB "
            f"stored), written in {time.perf_counter() - started:.0f} s"
        )

        def check(verify: bool, forget: bool = False) -> tuple[health.HealthReport, float]:
            if forget:  # what check remembered is stored in the repository
                repo.delete([wal_verified_key(TARGET)])
            t0 = time.perf_counter()
            report = health.check(TARGET, [repo], 1e9, verify_data=verify)
            return report, time.perf_counter() - t0

        names, t_names = check(False)
        full, t_full = check(True, forget=True)  # reads everything, remembers it
        wal_problems = [p for p in full.problems if "WAL" in p]
        assert not wal_problems, wal_problems[:3]  # (the synthetic backup file is a stub)
        again, t_again = check(True)
        write_segment(root, args.segments + 1, sysid, args.kb)
        one_more, t_one = check(True)
        print("  (ratios against reading every copy)")
        timed("check --no-data (names only)", None, t_names, t_full)
        timed("check, every copy read", full, t_full, t_full)
        timed("check, remembered", again, t_again, t_full)
        timed("check after one new segment", one_more, t_one, t_full)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
