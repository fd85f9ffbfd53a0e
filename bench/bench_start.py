"""Start time of the per-segment commands: what PostgreSQL pays on every archive_command and
restore_command call before any byte moves. Compared in one run with the interpreter alone
and with ``cp``/``pgbackrest`` where they do the same job.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.bench_start [--runs 30] [--old REV]

``--old REV`` also runs the pgproof rows with the code of git revision REV (a worktree put
first on PYTHONPATH, byte-compiled like scripts/setup does), interleaved call by call with
the current code, so that both see the same machine.

Measured (median of ``--runs`` calls each, no PostgreSQL server needed):
  python -c pass                       the interpreter's own start (the floor)
  pgproof wal-fetch (not archived)     start + config + open a filesystem repository + a miss
  pgproof wal-push (already archived)  start + config + the idempotent re-push of a 16 MB
                                       segment (same name, same bytes: read back and compared)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.support.fixtures import PGPROOF

SEGMENT = 16 * 1024 * 1024


def segment_bytes(segno: int) -> bytes:
    """A 16 MB timeline-1 segment with a valid long page header and random-ish pages."""
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, segno * SEGMENT, 0, 7, SEGMENT, 8192)
    page = header + bytes(8192 - len(header))
    return page + os.urandom(SEGMENT // 2) + bytes(SEGMENT // 2 - len(page))


def median_seconds(
    argv: list[str], runs: int, ok: tuple[int, ...] = (0,), old: Path | None = None
) -> tuple[float, float | None]:
    """Median of the current code's runs, and of REV's (interleaved) when ``old`` is given."""
    times: list[float] = []
    old_times: list[float] = []
    envs = [(times, dict(os.environ))]
    if old is not None:
        envs.append((old_times, dict(os.environ, PYTHONPATH=str(old))))
    for _ in range(runs):
        for into, env in envs:
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, env=env)
            into.append(time.perf_counter() - started)
            if done.returncode not in ok:
                raise SystemExit(f"{argv}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return statistics.median(times), statistics.median(old_times) if old_times else None


def worktree(rev: str, base: Path) -> Path:
    path = base / "old"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(path), rev], check=True)
    dirs = [
        d for d in ("backups", "verifier", "exporters", "alerts", "pgproof") if (path / d).is_dir()
    ]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], cwd=path, check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--old", help="a git revision to compare with, in the same run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgproof-bench-start-"))
    old = None
    try:
        if args.old:
            old = worktree(args.old, base)
        repo = base / "repo"
        repo.mkdir()
        config = base / "pgproof.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "lock_dir": str(base / "locks"),
                    "repositories": [{"name": "local", "type": "filesystem", "path": str(repo)}],
                    "targets": [
                        {
                            "name": "main",
                            "conninfo": "host=/nonexistent dbname=postgres",
                            "repositories": ["local"],
                        }
                    ],
                }
            )
        )
        segment = base / "000000010000000000000001"
        segment.write_bytes(segment_bytes(1))
        pg = [PGPROOF, "--config", str(config)]
        subprocess.run([*pg, "wal-push", str(segment)], check=True, capture_output=True)
        rows = [
            ("python -c pass", median_seconds([sys.executable, "-c", "pass"], args.runs)),
            (
                "cp (16 MB segment)",
                median_seconds(["cp", str(segment), str(base / "copy")], args.runs),
            ),
            (
                "pgproof wal-fetch (not archived)",
                median_seconds(
                    [*pg, "wal-fetch", "000000010000000000000009", str(base / "x")],
                    args.runs,
                    ok=(1,),
                    old=old,
                ),
            ),
            (
                "pgproof wal-push (already archived)",
                median_seconds([*pg, "wal-push", str(segment)], args.runs, old=old),
            ),
        ]
        floor = rows[0][1][0]
        print(f"start time, median of {args.runs} runs")
        for label, (seconds, before) in rows:
            line = f"  {label:<40} {seconds * 1000:7.1f} ms  {seconds / floor:5.2f}x python"
            if before is not None:
                line += (
                    f"  (at {args.old}: {before * 1000:.1f} ms; now/then {seconds / before:.2f}x)"
                )
            print(line)
    finally:
        if old is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], check=False)
        shutil.rmtree(base, ignore_errors=True)
        os.sync()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
