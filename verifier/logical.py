"""Logical restore: roles from the globals dump, each database with pg_restore -j.

Every error pg_restore and psql report is collected; the only one expected (and not
counted) is the sandbox's own superuser already existing. Tablespace statements are left out:
a sandbox has no production paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from backups import catalog, compression, pgbin
from backups.errors import CommandError
from backups.progress import Progress
from backups.runner import Runner
from backups.storage.base import Repository
from verifier.errors import SandboxError
from verifier.fetch import download
from verifier.sandbox import Sandbox

_ERROR = re.compile(r"^(?:psql:.*?)?ERROR:\s*(.*)$|^pg_restore: error: (.*)$", re.M)
_TABLESPACE = re.compile(r"^(CREATE|ALTER) TABLESPACE ", re.M)


# Statements a newer pg_dump writes that an older server does not know, and that change
# nothing about the data: (message pattern, newest server major that rejects it).
BENIGN = ((re.compile(r'unrecognized configuration parameter "transaction_timeout"'), 16),)


@dataclass
class LogicalRestore:
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    databases: list[str] = field(default_factory=list)
    skipped_statements: int = 0


def fetch(
    repo: Repository,
    manifest: catalog.Manifest,
    sandbox: Sandbox,
    runner: Runner,
    progress: Progress,
) -> tuple[Path, int]:
    """Download and verify every file of the backup into the sandbox's work dir."""
    target = sandbox.work_dir / "backup"
    owner = runner.postgres_identity()
    total = 0
    progress.start("fetch", manifest.size)
    for entry in manifest.files:
        total += download(repo, manifest, entry, target / entry.name, progress)
    progress.done()
    if owner is not None:
        for dirpath, dirs, files in os.walk(target):
            for name in dirs + files:
                os.chown(os.path.join(dirpath, name), owner.uid, owner.gid)
        os.chown(target, owner.uid, owner.gid)
    return target, total


def restore(
    sandbox: Sandbox,
    manifest: catalog.Manifest,
    files: Path,
    runner: Runner,
    jobs: int,
    timeout: float,
) -> LogicalRestore:
    result = LogicalRestore()
    tools = pgbin.find_at_least(max(sandbox.major, _dump_major(manifest)), runner)
    globals_file = next((f for f in manifest.files if f.role == "globals"), None)
    if globals_file is not None:
        text = compression.zstd_decompress_bytes((files / globals_file.name).read_bytes()).decode()
        kept = []
        for line in text.splitlines():
            if _TABLESPACE.match(line):
                result.skipped_statements += 1
                continue
            kept.append(line)
        script = files / "globals.sql"
        script.write_text("\n".join(kept) + "\n")
        _chown_like(script, files)
        res = sandbox.run(
            "psql",
            ["-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", sandbox.conninfo(), "-f", str(script)],
            timeout=timeout,
        )
        for line in _errors(res.stderr):
            if re.search(r'role "[^"]+" already exists', line):
                continue
            result.errors.append(f"globals: {line}")
    for dump in manifest.databases:
        result.databases.append(dump.name)
        if dump.name not in ("postgres",):
            with sandbox.connect() as conn:
                conn.execute(
                    sql.SQL("create database {} template template0").format(
                        sql.Identifier(dump.name)
                    )
                )
        argv = [
            tools.path("pg_restore"),
            f"--dbname={sandbox.conninfo(dump.name)}",
            f"--jobs={max(jobs, 1)}",
            "--no-tablespaces",
            str(files / dump.file),
        ]
        try:
            res = runner.run(
                argv, timeout=timeout, as_postgres=True, env=sandbox.client_env(), ok_codes=(0, 1)
            )
        except CommandError as exc:
            raise SandboxError(f"pg_restore of {dump.name} did not run: {exc}") from None
        for line in _errors(res.stderr):
            benign = any(p.search(line) and sandbox.major <= top for p, top in BENIGN)
            (result.ignored if benign else result.errors).append(f"{dump.name}: {line}")
        if res.returncode != 0 and not _errors(res.stderr):
            result.errors.append(
                f"{dump.name}: pg_restore exited {res.returncode}: {res.stderr[-300:]}"
            )
    return result


def _errors(stderr: str) -> list[str]:
    return [(m.group(1) or m.group(2) or "").strip() for m in _ERROR.finditer(stderr)]


def _dump_major(manifest: catalog.Manifest) -> int:
    version = manifest.tools.get("pg_dump", "0")
    return int(version.split(".")[0] or 0)


def _chown_like(path: Path, like: Path) -> None:
    st = like.stat()
    os.chown(path, st.st_uid, st.st_gid)
