"""``targets[]`` of the config: the source, its repositories, schedules, and the settings of
each backup job, read in named steps; defaults come from the settings classes."""

from __future__ import annotations

import os
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pgproof import schedules
from pgproof.backups.compression import parse_method
from pgproof.backups.kinds import KINDS
from pgproof.backups.settings import (
    BarmanCloudSettings,
    FilesSettings,
    ForeignSettings,
    HeartbeatSettings,
    LogicalSettings,
    PgBackRestSettings,
    PhysicalSettings,
    RepoSettings,
    RetentionSettings,
    S3RepoSettings,
    SourceSettings,
    TargetSettings,
    WalSettings,
)
from pgproof.configfields import ConfigError, Fields
from pgproof.configmodel import Check, Target
from pgproof.configsections import NAME, OS_USER
from pgproof.verifier.containersettings import check_image_template

_PASSWORD_IN_CONNINFO = (re.compile(r"(^|\s)password\s*="), re.compile(r"://[^/@\s]*:[^/@\s]*@"))


def target(f: Fields, repos: dict[str, RepoSettings], max_age: float, lock_dir: str) -> Target:
    name = f.req_text("name")
    if not NAME.match(name):
        f.fail("name", "letters, digits, '.', '_' and '-' only (it names repository folders)")
    foreign = _foreign(f.sub("source"), repos) if f.has("source") else None
    settings = TargetSettings(
        name=name,
        source=_source(f, required=foreign is None),
        repositories=_results(f, repos) if foreign is not None else _repositories(f, repos),
        pg_bin_dir=f.text("pg_bin_dir"),
        logical=_logical(f.sub("logical")),
        physical=_physical(f.sub("physical")),
        wal=_wal(f.sub("wal")),
        retention=_retention(f.sub("retention")),
        heartbeat=_heartbeat(f.sub("heartbeat")),
        max_backup_age_seconds=f.req_duration("max_backup_age", max_age),
        lock_dir=lock_dir,
        foreign=foreign,
    )
    if (
        isinstance(foreign, FilesSettings | BarmanCloudSettings)
        and foreign.repository in settings.repositories
    ):
        f.fail("results", "records never go into the backups' own repository: name another")
    if foreign is not None and settings.heartbeat.enabled and not settings.source.conninfo:
        f.fail("heartbeat", "needs the target's conninfo (the heartbeat is written there)")
    when = _schedule(f.sub("schedule"))
    if foreign is not None and ({"logical", "physical"} & set(when)):
        f.fail("schedule", "another tool makes this target's backups: schedule verify and check")
    checks = _checks(f)
    image = f.text("image")
    if image is not None and (problem := check_image_template(image)):
        f.fail("image", problem)
    f.done()
    return Target(settings, when, checks, image)


def _source(f: Fields, required: bool) -> SourceSettings:
    """The database itself (a target whose backups another tool makes may go without: then
    no heartbeat and no archiver metrics)."""
    conninfo = f.req_text("conninfo") if required else f.text_or("conninfo", "")
    if any(p.search(conninfo) for p in _PASSWORD_IN_CONNINFO):
        f.fail("conninfo", "must not contain a password; use password_env or password_file")
    password_env, password_file = f.text("password_env"), f.text("password_file")
    if password_env and password_file:
        f.fail("password_file", "give password_env or password_file, not both")
    return SourceSettings(conninfo, password_env, password_file)


def _repositories(f: Fields, repos: dict[str, RepoSettings]) -> tuple[RepoSettings, ...]:
    names = f.texts("repositories")
    if not names:
        f.fail("repositories", "name at least one repository")
    for i, repo_name in enumerate(names):
        if repo_name not in repos:
            raise ConfigError(
                f"{f.where('repositories')}[{i}]", f"no repository named {repo_name!r}"
            )
    if len(set(names)) != len(names):
        f.fail("repositories", "lists a repository twice")
    return tuple(repos[n] for n in names)


def _foreign(sf: Fields, repos: dict[str, RepoSettings]) -> ForeignSettings:
    """``source:``: the tool that makes the target's backups (pgproof only reads them)."""
    kind = sf.req_choice("type", ("pgbackrest", "files", "barman-cloud"), "pgbackrest")
    if kind == "files":
        return _files(sf, repos)
    if kind == "barman-cloud":
        return _barman_cloud(sf, repos)
    d = PgBackRestSettings("")
    settings = PgBackRestSettings(
        stanza=sf.req_text("stanza"),
        config=sf.text("config"),
        repo=sf.integer("repo", d.repo, 1, 256),
        cipher_pass_env=sf.text("cipher_pass_env"),
        cipher_pass_file=sf.text("cipher_pass_file"),
        binary=sf.text_or("binary", d.binary),
        user=sf.text_or("user", d.user),
    )
    if not OS_USER.fullmatch(settings.user) or settings.user == "root":
        sf.fail(
            "user", f"must be an unprivileged OS user, the repository's owner: {settings.user!r}"
        )
    if settings.cipher_pass_env and settings.cipher_pass_file:
        sf.fail("cipher_pass_file", "give cipher_pass_env or cipher_pass_file, not both")
    for key in ("config", "cipher_pass_file"):
        value = getattr(settings, key)
        if value and not os.path.isabs(value):
            sf.fail(key, "must be an absolute path")
    sf.done()
    return settings


def _files(sf: Fields, repos: dict[str, RepoSettings]) -> FilesSettings:
    """``source: {type: files}``: a repository (directory or S3 prefix) holding the files of
    cron scripts, each kind in its own folder."""
    name = sf.req_text("repository")
    if name not in repos:
        sf.fail("repository", f"no repository named {name!r}")
    d = FilesSettings(repos[name])

    def folder(key: str, default: str) -> str:
        value = sf.text_or(key, default).strip("/")
        if value.startswith(".") or "//" in value or "/../" in f"/{value}/":
            sf.fail(key, "a folder inside the repository (no '..', no leading '.')")
        return value + "/" if value else ""

    settings = FilesSettings(
        repository=repos[name],
        dumps=folder("dumps", d.dumps),
        base_backups=folder("base_backups", d.base_backups),
        wal=folder("wal", d.wal),
        globals_pattern=sf.text_or("globals_pattern", d.globals_pattern),
        timezone=sf.text_or("timezone", d.timezone),
        kinds=sf.texts("kinds"),
    )
    if set(settings.kinds) - set(KINDS):
        sf.fail("kinds", f"each one of {', '.join(KINDS)}")
    try:
        ZoneInfo(settings.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        sf.fail("timezone", f"unknown time zone {settings.timezone!r} (e.g. UTC, Europe/Paris)")
    sf.done()
    return settings


def _barman_cloud(sf: Fields, repos: dict[str, RepoSettings]) -> BarmanCloudSettings:
    """``source: {type: barman-cloud}``: an S3 repository whose prefix is barman's
    destination path, and the server name."""
    name = sf.req_text("repository")
    repo = repos.get(name)
    if repo is None:
        sf.fail("repository", f"no repository named {name!r}")
    if not isinstance(repo, S3RepoSettings):
        sf.fail("repository", "barman-cloud keeps its backups in an object store: name an S3 one")
    server = sf.req_text("server")
    if "/" in server or server.startswith("."):
        sf.fail("server", "a barman server name (no '/')")
    bin_dir = sf.text("bin_dir")
    if bin_dir and not os.path.isabs(bin_dir):
        sf.fail("bin_dir", "must be an absolute path")
    sf.done()
    return BarmanCloudSettings(repo, server, bin_dir)


def _results(f: Fields, repos: dict[str, RepoSettings]) -> tuple[RepoSettings, ...]:
    """``results:``: the pgproof repository the restore tests' records go to (never the
    foreign one)."""
    if f.has("repositories"):
        f.fail("repositories", "a target with a source takes results: (where records go)")
    name = f.req_text("results")
    if name not in repos:
        f.fail("results", f"no repository named {name!r}")
    return (repos[name],)


def _schedule(sf: Fields) -> dict[str, schedules.Schedule]:
    found = {}
    for job in schedules.JOBS:
        text = sf.text(job)
        if text is not None:
            try:
                found[job] = schedules.parse(text)
            except ValueError as exc:
                sf.fail(job, str(exc))
    sf.done()
    return found


def _retention(r: Fields) -> RetentionSettings:
    d = RetentionSettings()
    settings = RetentionSettings(
        full_backups=r.integer("full_backups", d.full_backups, 1),
        max_age_days=r.number("max_age_days", d.max_age_days, 0.001),
        min_backups=r.req_integer("min_backups", d.min_backups, 1),
    )
    r.done()
    return settings


def _heartbeat(h: Fields) -> HeartbeatSettings:
    d = HeartbeatSettings()
    settings = HeartbeatSettings(
        enabled=h.flag("enabled", d.enabled),
        every_seconds=h.req_number("every_seconds", d.every_seconds, 1.0),
        database=h.text("database"),
    )
    h.done()
    return settings


def _logical(lg: Fields) -> LogicalSettings:
    d = LogicalSettings()
    settings = LogicalSettings(
        databases=lg.texts("databases"),
        jobs=lg.req_integer("jobs", d.jobs, 1, 64),
        compression=_compression(lg, d.compression, physical=False),
        globals=lg.flag("globals", d.globals),
        no_role_passwords=lg.flag("no_role_passwords", d.no_role_passwords),
    )
    lg.done()
    return settings


def _physical(ph: Fields) -> PhysicalSettings:
    d = PhysicalSettings()
    settings = PhysicalSettings(
        compression=_compression(ph, d.compression, physical=True),
        compression_threads=ph.req_integer("compression_threads", d.compression_threads, 0, 256),
        checkpoint=ph.req_choice("checkpoint", ("fast", "spread"), d.checkpoint),
        max_rate=ph.text("max_rate"),
        wal_wait_seconds=ph.req_integer("wal_wait_seconds", d.wal_wait_seconds, 1),
    )
    ph.done()
    return settings


def _wal(w: Fields) -> WalSettings:
    d = WalSettings()
    settings = WalSettings(
        compression_level=w.req_integer("compression_level", d.compression_level, 0, 19),
        push_timeout_seconds=w.req_integer("push_timeout_seconds", d.push_timeout_seconds, 1),
        asynchronous=w.flag("async", d.asynchronous),
        spool_dir=w.text("spool_dir"),
        async_workers=w.req_integer("async_workers", d.async_workers, 1, 64),
        async_lookahead=w.req_integer("async_lookahead", d.async_lookahead, 1, 10000),
    )
    if settings.asynchronous and not settings.spool_dir:
        w.fail("spool_dir", "is required with async: true (a directory the postgres user owns)")
    if settings.spool_dir and not os.path.isabs(settings.spool_dir):
        w.fail("spool_dir", "must be an absolute path")
    w.done()
    return settings


def _compression(f: Fields, default: str, physical: bool) -> str:
    value = f.text_or("compression", default)
    try:
        method, _ = parse_method(value)
    except ValueError as exc:
        f.fail("compression", str(exc))
    if physical and method not in ("zstd", "none"):
        f.fail("compression", "physical backups are compressed by pgproof: zstd[:level] or none")
    return value


def _checks(f: Fields) -> tuple[Check, ...]:
    checks = []
    for i, raw in enumerate(f.items("checks")):
        c = Fields(raw, f"{f.where('checks')}[{i}]")
        checks.append(Check(c.req_text("name"), c.req_text("sql")))
        c.done()
    if len({c.name for c in checks}) != len(checks):
        f.fail("checks", "check names must be unique")
    return tuple(checks)
