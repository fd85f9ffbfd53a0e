"""Logical restore: roles and tablespaces from the globals dump, then each database
recreated as its dump describes it with ``pg_restore --create -j``.

Every error psql and pg_restore report is collected with the object, statement and context
it came from, sorted into harmless, what the sandbox lacks (an error, never "failed") and
restore errors. The sandbox's superuser has the source's bootstrap superuser's name (grants
made by it restore on PostgreSQL 16+) and keeps its generated password: the globals dump's
PASSWORD clause for that one role is left out. Tablespaces are created in directories of the
sandbox, never at production's paths.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from pgproof.backups import catalog, compression, pgbin
from pgproof.backups.errors import CommandError
from pgproof.backups.progress import Progress
from pgproof.backups.runner import Runner
from pgproof.backups.storage.base import Repository
from pgproof.verifier import checks, exhaustion
from pgproof.verifier.errors import SandboxError, SandboxExhausted
from pgproof.verifier.fetch import download
from pgproof.verifier.job import RestoreJob, amcheck_check, custom_checks
from pgproof.verifier.sandbox import Sandbox

_ERROR = re.compile(r"^(?:psql:.*?)?ERROR:\s*(.*)$|^pg_restore: error: (.*)$", re.M)
_TOC = re.compile(r"^pg_restore: from TOC entry \d+; \d+ \d+ (.*)$")
_COMMAND = re.compile(r"^Command was: (.*)$")
_CREATE_TABLESPACE = re.compile(r"^CREATE TABLESPACE (.+?) OWNER (.+?) LOCATION '(?:[^']|'')*';$")


# Statements a newer pg_dump writes that an older server does not know, and that change
# nothing about the data: (message pattern, newest server major that rejects it).
BENIGN = ((re.compile(r'unrecognized configuration parameter "transaction_timeout"'), 16),)

# Errors that say the sandbox lacks something production has (not that the backup is bad):
# (pattern, what is missing). A restore test meeting one is an error naming it, never failed.
MISSING = (
    (re.compile(r'extension "([^"]+)" is not available'), "extension {}"),
    (
        re.compile(r'could not open extension control file "[^"]*/([^/"]+)\.control"'),
        "extension {}",
    ),
    (re.compile(r'could not access file "\$libdir/([^"]+)"'), "library {}"),
    (re.compile(r'could not load library "[^"]*?([^/"]+?)(?:\.so)?"'), "library {}"),
    (re.compile(r'invalid locale name:? "?([^":]+)"?'), "locale {}"),
    (re.compile(r'could not create locale "([^"]+)"'), "locale {}"),
    (re.compile(r"ICU is not supported in this build"), "ICU support"),
)


@dataclass
class LogicalRestore:
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    databases: list[str] = field(default_factory=list)
    tablespaces: int = 0  # created inside the sandbox instead of production's paths
    missing: list[str] = field(default_factory=list)  # what the sandbox lacks (see MISSING)


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
    """Roles and tablespaces from the globals dump, then each database recreated as its dump
    describes it (``pg_restore --create``: encoding, locale, owner, settings, ACL, comment)."""
    result = LogicalRestore()
    tools = pgbin.find_at_least(max(sandbox.major, _dump_major(manifest)), runner)
    server = _require_extensions(sandbox, manifest)
    globals_file = next((f for f in manifest.files if f.role == "globals"), None)
    if globals_file is not None:
        raw = (files / globals_file.name).read_bytes()
        if globals_file.compression.startswith("zstd"):
            raw = compression.zstd_decompress_bytes(raw)
        text = raw.decode()
        script = files / "globals.sql"
        script.write_text(_own_superuser(_sandbox_tablespaces(text, sandbox, result), sandbox.user))
        _chown_like(script, files)
        res = sandbox.run(
            "psql",
            ["-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", sandbox.conninfo(), "-f", str(script)],
            timeout=timeout,
        )
        _collect(result, "globals", res.stderr, sandbox.major)
    for dump in manifest.databases:
        result.databases.append(dump.name)
        if dump.format.startswith("plain"):
            _restore_plain(sandbox, dump, files, result, timeout)
            continue
        argv = [
            tools.path("pg_restore"),
            # --create connects here first; --clean drops the sandbox's own copy of an
            # initdb-made database (postgres) so that it is recreated as production's
            f"--dbname={sandbox.conninfo('template1')}",
            "--create",
            "--clean",
            "--if-exists",
            f"--jobs={max(jobs, 1)}",
            str(files / dump.file),
        ]
        try:
            res = runner.run(
                argv, timeout=timeout, as_postgres=True, env=sandbox.client_env(), ok_codes=(0, 1)
            )
        except CommandError as exc:
            raise SandboxError(f"pg_restore of {dump.name} did not run: {exc}") from None
        before = len(result.errors) + len(result.ignored)
        _collect(result, dump.name, res.stderr, sandbox.major)
        if res.returncode != 0 and len(result.errors) + len(result.ignored) == before:
            result.errors.append(
                f"{dump.name}: pg_restore exited {res.returncode}: {res.stderr[-300:]}"
            )
    if result.errors and server < manifest.pg_version_num:
        # an older minor release than the source's cannot be told from a bad dump
        result.missing.append(
            f"PostgreSQL {manifest.pg_version} or newer (the sandbox runs "
            f"{server // 10000}.{server % 100}; a dump of a newer release may use what it lacks)"
        )
    return result


def _restore_plain(
    sandbox: Sandbox,
    dump: catalog.DatabaseDump,
    files: Path,
    result: LogicalRestore,
    timeout: float,
) -> None:
    """A plain SQL dump through psql: one made with ``--create`` (format ``plain-create``)
    creates and connects to its database itself; otherwise the database is created first,
    by the name the file carries."""
    dbname = "postgres"
    if dump.format != "plain-create":
        dbname = dump.name
        with sandbox.connect() as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (dbname,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    sql.SQL("create database {} template template0").format(sql.Identifier(dbname))
                )
    res = sandbox.run(
        "psql",
        [
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=0",
            "-d",
            sandbox.conninfo(dbname),
            "-f",
            str(files / dump.file),
        ],
        timeout=timeout,
    )
    _collect(result, dump.name, res.stderr, sandbox.major)


def _require_extensions(sandbox: Sandbox, manifest: catalog.Manifest) -> int:
    """Every extension the dumps use must exist where the sandbox runs, else the restore
    test is an error naming them (production's data is not at fault). Returns the sandbox
    server's version number."""
    wanted: dict[str, list[str]] = {}
    for dump in manifest.databases:
        for ext in dump.properties.extensions if dump.properties else ():
            wanted.setdefault(ext.split(" ")[0], []).append(dump.name)
    with sandbox.connect() as conn:
        row = conn.execute("select current_setting('server_version_num')::int").fetchone()
        available = {str(r[0]) for r in conn.execute("select name from pg_available_extensions")}
    server = int(row[0]) if row else 0
    missing = sorted(set(wanted) - available)
    if missing:
        named = "; ".join(f"{e} (database {', '.join(wanted[e])})" for e in missing)
        raise SandboxError(
            f"the sandbox's PostgreSQL {sandbox.major} lacks extension(s) used by the backup: "
            f"{named}; install them where the sandbox runs (or use an image that has them)"
        )
    return server


def _own_superuser(text: str, name: str) -> str:
    """The sandbox's superuser has the source's bootstrap superuser's name but keeps its
    own generated password: its CREATE ROLE (it exists) and PASSWORD clause are left out."""
    quoted = '"' + name.replace('"', '""') + '"'
    ident = f"(?:{re.escape(name)}|{re.escape(quoted)})"  # pg_dumpall quotes when needed
    create = re.compile(rf"^CREATE ROLE {ident};$")
    alter = re.compile(rf"^(ALTER ROLE {ident} WITH .*?)( PASSWORD '(?:[^']|'')*')(.*)$")
    lines = []
    for line in text.splitlines():
        if create.match(line):
            continue
        line = alter.sub(r"\1\3", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _sandbox_tablespaces(text: str, sandbox: Sandbox, result: LogicalRestore) -> str:
    """Production's tablespaces, created in directories of the sandbox instead."""
    lines = []
    for line in text.splitlines():
        match = _CREATE_TABLESPACE.match(line)
        if match:
            result.tablespaces += 1
            place = sandbox.work_dir / "tablespaces" / str(result.tablespaces)
            place.mkdir(parents=True)
            _chown_like(place, sandbox.work_dir)
            _chown_like(place.parent, sandbox.work_dir)
            line = f"CREATE TABLESPACE {match.group(1)} OWNER {match.group(2)} LOCATION '{place}';"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _collect(result: LogicalRestore, where: str, stderr: str, major: int) -> None:
    """Sort the errors of psql or pg_restore: harmless, the sandbox lacking something, or
    errors of the restore, each with the object (TOC entry) and statement that failed."""
    for line in describe_errors(stderr):
        if any(p.search(line) and major <= top for p, top in BENIGN):
            result.ignored.append(f"{where}: {line}")
            continue
        for pattern, what in MISSING:
            found = pattern.search(line)
            if found:
                name = what.format(*found.groups()) if found.groups() else what
                if name not in result.missing:
                    result.missing.append(name)
        result.errors.append(f"{where}: {line}")


def describe_errors(stderr: str) -> list[str]:
    """Each ERROR with the TOC entry it came from, the first line of the command and the
    error's context (which function, which COPY line), when the tool printed them."""
    found: list[str] = []
    entry = ""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        toc = _TOC.match(line)
        if toc:
            entry = toc.group(1).strip()
            continue
        match = _ERROR.match(line)
        if not match:
            continue
        text = (match.group(1) or match.group(2) or "").strip()
        for follow in lines[i + 1 : i + 12]:
            if follow.startswith(("pg_restore:", "psql:")):
                break
            command = _COMMAND.match(follow)
            if command:
                text += f" [statement: {command.group(1).strip()[:200]}]"
            elif follow.startswith("CONTEXT:"):
                text += f" [context: {follow[len('CONTEXT:') :].strip()[:200]}]"
        if entry:
            text += f" [object: {entry}]"
            entry = ""
        found.append(text)
    return found


def _dump_major(manifest: catalog.Manifest) -> int:
    version = manifest.tools.get("pg_dump", "0")
    return int(version.split(".")[0] or 0)


def _chown_like(path: Path, like: Path) -> None:
    st = like.stat()
    os.chown(path, st.st_uid, st.st_gid)


def run_logical(job: RestoreJob) -> None:
    """The logical restore test: every database of the dump restored into the sandbox (with
    its properties and the roles), then row counts against the dump's snapshot, database
    properties, roles, amcheck and the target's own checks."""
    request, manifest, sandbox, found = job.request, job.manifest, job.sandbox, job.findings
    with job.timer.measure("fetch"):
        if job.origin is None:
            files, found.bytes_restored = fetch(
                job.repo, manifest, sandbox, job.runner, job.progress
            )
        else:  # another tool's dumps, as plain files (their headers complete the manifest)
            manifest, files, found.bytes_restored = job.origin.fetch_dumps(job)
    with job.timer.measure("restore"):
        sandbox.initdb(superuser=manifest.superuser)
        sandbox.configure(fast=True)
        sandbox.start(timeout=120)
        restored = restore(
            sandbox,
            manifest,
            files,
            job.runner,
            request.settings.jobs,
            request.settings.timeout_seconds,
        )
    found.rpo_seconds = round((job.started - manifest.started).total_seconds(), 3)
    exhausted = next((e for e in map(exhaustion.find, restored.errors) if e), None)
    if exhausted is not None:  # what follows from a full disk is no evidence of damage
        raise SandboxExhausted(
            f"{len(restored.errors)} restore errors, first: {restored.errors[0][:300]}", exhausted
        )
    with job.timer.measure("checks"):
        found.checks.append(checks.restore_errors(restored.errors, restored.ignored))
        if restored.missing:
            # the sandbox lacks what production has: nothing restored can be judged
            raise SandboxError(
                f"the sandbox lacks {', '.join(restored.missing)} (PostgreSQL {sandbox.major}); "
                f"install it where the sandbox runs: {len(restored.errors)} restore errors "
                f"follow from it, first: {restored.errors[0][:300]}"
            )
        for name, body in (
            ("row_counts", checks.row_counts),
            ("database_properties", checks.database_properties),
            ("roles", checks.roles),
        ):
            found.checks.append(checks.guarded(name, functools.partial(body, sandbox, manifest)))
        found.checks.append(amcheck_check(request, sandbox, restored.databases))
        # No "readable" here: row_counts just read every table in full (sequential scans of
        # freshly loaded tables), so a pg_dump of what pg_restore wrote would prove nothing more.
        found.checks += custom_checks(request, sandbox, restored.databases)
