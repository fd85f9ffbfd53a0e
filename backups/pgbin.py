"""Finding PostgreSQL binaries for a major version.

Search order for major N: an explicitly configured bin directory, the Debian/Ubuntu layout
(``/usr/lib/postgresql/N/bin``), the RHEL layout (``/usr/pgsql-N/bin``), then the project cache
of downloaded majors (``$PGPROOF_PG_CACHE/N/bin``; default ``/var/cache/pgproof/postgresql``).
Each candidate is confirmed by running ``pg_config``-free ``--version`` on a binary in it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pgproof.backups.errors import BinaryNotFound, CommandError
from pgproof.backups.runner import Runner

DEFAULT_CACHE = "/var/cache/pgproof/postgresql"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def cache_dir() -> Path:
    return Path(os.environ.get("PGPROOF_PG_CACHE", DEFAULT_CACHE))


def parse_version_output(text: str) -> tuple[int, int]:
    """``pg_dump (PostgreSQL) 17.11`` -> (17, 11)."""
    match = _VERSION.search(text)
    if not match:
        raise ValueError(f"not a PostgreSQL --version output: {text.strip()[:80]!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def server_version_num_to_major(num: int) -> int:
    """150018 -> 15; 90624 -> 9 (pre-10 servers are not supported anyway)."""
    return num // 10000


@dataclass(frozen=True)
class PgBinaries:
    major: int
    minor: int
    bin_dir: Path

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def path(self, program: str) -> str:
        candidate = self.bin_dir / program
        if not candidate.exists():
            raise BinaryNotFound(f"{program} not found in {self.bin_dir}")
        return str(candidate)


def candidate_dirs(major: int, configured: str | None = None) -> list[Path]:
    dirs = []
    if configured:
        dirs.append(Path(configured))
    dirs += [
        Path(f"/usr/lib/postgresql/{major}/bin"),
        Path(f"/usr/pgsql-{major}/bin"),
        cache_dir() / str(major) / "bin",
    ]
    return dirs


def installed_majors() -> list[int]:
    """Every major version that has binaries in a known location, ascending."""
    found = set()
    roots = [Path("/usr/lib/postgresql"), cache_dir()]
    for root in roots:
        if root.is_dir():
            for child in root.iterdir():
                if child.name.isdigit() and (child / "bin" / "pg_dump").exists():
                    found.add(int(child.name))
    for pgsql in Path("/usr").glob("pgsql-*"):
        suffix = pgsql.name.removeprefix("pgsql-")
        if suffix.isdigit() and (pgsql / "bin" / "pg_dump").exists():
            found.add(int(suffix))
    return sorted(found)


def find(major: int, runner: Runner, configured: str | None = None) -> PgBinaries:
    """The binaries of exactly ``major``; BinaryNotFound names every place looked at."""
    looked = []
    for bin_dir in candidate_dirs(major, configured):
        probe = bin_dir / "pg_dump"
        looked.append(str(bin_dir))
        if not probe.exists():
            continue
        try:
            out = runner.run([str(probe), "--version"], timeout=30).stdout.decode()
        except CommandError:
            continue
        got_major, minor = parse_version_output(out)
        if got_major == major:
            return PgBinaries(got_major, minor, bin_dir)
    raise BinaryNotFound(
        f"no PostgreSQL {major} binaries found (looked in {', '.join(looked)}); install them "
        f"or run scripts/fetch-postgres {major}"
    )


def find_at_least(major: int, runner: Runner, configured: str | None = None) -> PgBinaries:
    """The newest binaries whose major is >= ``major`` (client tools read older servers)."""
    for candidate in sorted(set(installed_majors()) | {major}, reverse=True):
        if candidate < major:
            break
        try:
            return find(candidate, runner, configured if candidate == major else None)
        except BinaryNotFound:
            continue
    return find(major, runner, configured)
