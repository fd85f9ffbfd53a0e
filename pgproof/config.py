"""The typed, frozen configuration, read from YAML; unknown keys and bad values are refused.

Secrets never live in the file: ``password_env``/``password_file`` for the source (or libpq's
own PGPASSFILE/.pgpass), the standard AWS credential chain or ``*_env`` names for S3.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pgproof.alerts.settings import SmtpSettings
from pgproof.backups.compression import parse_method
from pgproof.backups.lock import default_lock_dir
from pgproof.backups.settings import (
    FilesystemRepoSettings,
    HeartbeatSettings,
    LogicalSettings,
    PhysicalSettings,
    RepoSettings,
    RetentionSettings,
    S3RepoSettings,
    SourceSettings,
    TargetSettings,
    WalSettings,
)
from pgproof.backups.storage.s3options import MIN_PART_SIZE, S3Options
from pgproof.configfields import ConfigError, Fields
from pgproof.exporters.settings import ExporterSettings, HttpLimits
from pgproof.verifier.containersettings import (
    PULL_POLICIES,
    ContainerSettings,
    check_image_template,
)
from pgproof.verifier.settings import DEFAULT_SANDBOX_USER, VerifierSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SCHEDULE = re.compile(
    r"^(daily (?:[01]\d|2[0-3]):[0-5]\d|hourly(?: at :[0-5]\d)?|"
    r"every \d+ (?:seconds?|minutes?|hours?|days?))$"
)
SCHEDULE_JOBS = ("logical", "physical", "verify", "retention", "check")


@dataclass(frozen=True)
class Check:
    name: str
    sql: str


@dataclass(frozen=True)
class Target:
    settings: TargetSettings
    schedule: dict[str, str]
    checks: tuple[Check, ...]
    image: str | None = None  # the container sandbox's image template for this target

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass(frozen=True)
class EmailConfig(SmtpSettings):
    """``alerts.email``: the SMTP settings (``ca_file`` trusts a private server's CA besides
    the system's) and your own subject.j2 / body.txt.j2 / body.html.j2."""

    templates_dir: str | None = None


@dataclass(frozen=True)
class AlertsConfig:
    email: EmailConfig | None = None
    max_backup_age_seconds: float = 26 * 3600
    max_restore_test_age_seconds: float = 3 * 86400
    wal_stalled_after_seconds: float = 15 * 60
    wal_backlog_files: int = 32
    repeat_interval_seconds: float = 4 * 3600
    evaluate_every_seconds: float = 60.0
    state_file: str | None = None  # default: <lock_dir>/alerts-state.json


@dataclass(frozen=True)
class ServeConfig:
    max_parallel_jobs: int = 2  # across targets; a target's own jobs never overlap
    shutdown_grace_seconds: float = 60.0  # SIGTERM to running jobs, then kill
    log_format: str = "text"  # or json


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:9847"
    web_config_file: str | None = None
    limits: HttpLimits = HttpLimits()  # connections, timeouts, header sizes (exporters.http)


@dataclass(frozen=True)
class Config:
    path: str
    targets: tuple[Target, ...]
    repositories: tuple[RepoSettings, ...]
    verifier: VerifierSettings
    alerts: AlertsConfig
    http: HttpConfig
    lock_dir: str
    exporter: ExporterSettings = ExporterSettings()
    serve: ServeConfig = ServeConfig()

    def target(self, name: str | None) -> Target:
        if name is None:
            if len(self.targets) == 1:
                return self.targets[0]
            names = ", ".join(t.name for t in self.targets)
            raise ConfigError("--target", f"several targets are configured; name one of {names}")
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigError("--target", f"no target named {name!r}")

    def select(self, name: str | None) -> tuple[Target, ...]:
        return self.targets if name is None else (self.target(name),)


def _repository(f: Fields) -> RepoSettings:
    name = f.req_text("name")
    if not _NAME.match(name):
        f.fail("name", "letters, digits, '.', '_' and '-' only")
    kind = f.choice("type", ("filesystem", "s3"), None)
    if kind is None:
        f.fail("type", "is required (filesystem or s3)")
    if kind == "filesystem":
        path = f.req_text("path")
        if not os.path.isabs(path):
            f.fail("path", "must be an absolute path")
        f.done()
        return FilesystemRepoSettings(name, path)
    sse = f.get("sse")
    if sse is not None and sse not in ("AES256", "aws:kms"):
        f.fail("sse", f"must be AES256 or aws:kms, not {sse!r}")
    kms = f.text("kms_key_id")
    if kms and sse != "aws:kms":
        f.fail("kms_key_id", "needs sse: aws:kms")
    endpoint = f.text("endpoint_url")
    if endpoint and not re.match(r"^https?://", endpoint):
        f.fail("endpoint_url", "must start with http:// or https://")
    part_mb = f.req_integer("part_size_mb", 16, MIN_PART_SIZE // (1024 * 1024), 5 * 1024)
    options = S3Options(
        bucket=f.req_text("bucket"),
        prefix=(f.text("prefix") or "").strip("/"),
        endpoint_url=endpoint,
        region=f.text("region"),
        sse=sse,
        kms_key_id=kms,
        storage_class=f.text("storage_class"),
        profile=f.text("profile"),
        part_size=part_mb * 1024 * 1024,
        concurrency=f.req_integer("concurrency", 3, 1, 32),
        max_attempts=f.req_integer("max_attempts", 8, 1, 50),
        force_path_style=f.flag("force_path_style", True),
    )
    key_env, secret_env = f.text("access_key_id_env"), f.text("secret_access_key_env")
    if bool(key_env) != bool(secret_env):
        f.fail(
            "access_key_id_env" if not key_env else "secret_access_key_env",
            "access_key_id_env and secret_access_key_env go together",
        )
    f.done()
    return S3RepoSettings(name, options, key_env, secret_env)


def _compression(f: Fields, key: str, default: str) -> str:
    value = f.text(key, default) or default
    try:
        method, _ = parse_method(value)
    except ValueError as exc:
        f.fail(key, str(exc))
    if key == "compression" and f.path.endswith("physical") and method not in ("zstd", "none"):
        f.fail(key, "physical backups are compressed by pgproof: zstd[:level] or none")
    return value


def _positive(fields: Fields, key: str, default: float) -> float:
    value = fields.duration(key, default)
    if value is None or value <= 0:
        fields.fail(key, "must be a positive duration")
    return value


def _target(f: Fields, repos: dict[str, RepoSettings], max_age: float, lock_dir: str) -> Target:
    name = f.req_text("name")
    if not _NAME.match(name):
        f.fail("name", "letters, digits, '.', '_' and '-' only (it names repository folders)")
    conninfo = f.req_text("conninfo")
    if re.search(r"(^|\s)password\s*=", conninfo) or re.search(r"://[^/@\s]*:[^/@\s]*@", conninfo):
        f.fail("conninfo", "must not contain a password; use password_env or password_file")
    password_env, password_file = f.text("password_env"), f.text("password_file")
    if password_env and password_file:
        f.fail("password_file", "give password_env or password_file, not both")
    repo_names = f.texts("repositories")
    if not repo_names:
        f.fail("repositories", "name at least one repository")
    for i, repo_name in enumerate(repo_names):
        if repo_name not in repos:
            raise ConfigError(
                f"{f.where('repositories')}[{i}]", f"no repository named {repo_name!r}"
            )
    if len(set(repo_names)) != len(repo_names):
        f.fail("repositories", "lists a repository twice")

    schedule_f = f.sub("schedule")
    schedule = {}
    for job in SCHEDULE_JOBS:
        value = schedule_f.text(job)
        if value is not None:
            if not _SCHEDULE.match(value):
                schedule_f.fail(
                    job, f"{value!r} is not 'daily HH:MM', 'hourly' or 'every N minutes|hours'"
                )
            schedule[job] = value
    schedule_f.done()

    r = f.sub("retention")
    retention = RetentionSettings(
        full_backups=r.integer("full_backups", None, 1),
        max_age_days=r.number("max_age_days", None, 0.001),
        min_backups=r.req_integer("min_backups", 1, 1),
    )
    r.done()
    h = f.sub("heartbeat")
    heartbeat = HeartbeatSettings(
        enabled=h.flag("enabled", False),
        every_seconds=h.number("every_seconds", 10.0, 1.0) or 10.0,
        database=h.text("database"),
    )
    h.done()
    lg = f.sub("logical")
    logical = LogicalSettings(
        databases=lg.texts("databases"),
        jobs=lg.req_integer("jobs", 1, 1, 64),
        compression=_compression(lg, "compression", "zstd:3"),
        globals=lg.flag("globals", True),
        no_role_passwords=lg.flag("no_role_passwords", False),
    )
    lg.done()
    ph = f.sub("physical")
    physical = PhysicalSettings(
        compression=_compression(ph, "compression", "zstd:3"),
        compression_threads=ph.req_integer("compression_threads", 0, 0, 256),
        checkpoint=ph.choice("checkpoint", ("fast", "spread"), "fast") or "fast",
        max_rate=ph.text("max_rate"),
        wal_wait_seconds=ph.req_integer("wal_wait_seconds", 300, 1),
    )
    ph.done()
    w = f.sub("wal")
    wal = WalSettings(
        compression_level=w.req_integer("compression_level", 1, 0, 19),
        push_timeout_seconds=w.req_integer("push_timeout_seconds", 300, 1),
        asynchronous=w.flag("async", False),
        spool_dir=w.text("spool_dir"),
        async_workers=w.req_integer("async_workers", 4, 1, 64),
        async_lookahead=w.req_integer("async_lookahead", 64, 1, 10000),
    )
    if wal.asynchronous and not wal.spool_dir:
        w.fail("spool_dir", "is required with async: true (a directory the postgres user owns)")
    if wal.spool_dir and not os.path.isabs(wal.spool_dir):
        w.fail("spool_dir", "must be an absolute path")
    w.done()
    checks = []
    for i, raw in enumerate(f.items("checks")):
        c = Fields(raw, f"{f.where('checks')}[{i}]")
        checks.append(Check(c.req_text("name"), c.req_text("sql")))
        c.done()
    if len({c.name for c in checks}) != len(checks):
        f.fail("checks", "check names must be unique")
    image = f.text("image")
    if image is not None and (problem := check_image_template(image)):
        f.fail("image", problem)
    target_max_age = f.duration("max_backup_age", max_age) or max_age
    settings = TargetSettings(
        name=name,
        source=SourceSettings(conninfo, password_env, password_file),
        repositories=tuple(repos[n] for n in repo_names),
        pg_bin_dir=f.text("pg_bin_dir"),
        logical=logical,
        physical=physical,
        wal=wal,
        retention=retention,
        heartbeat=heartbeat,
        max_backup_age_seconds=target_max_age,
        lock_dir=lock_dir,
    )
    f.done()
    return Target(settings, schedule, tuple(checks), image)


def _container(v: Fields) -> ContainerSettings:
    """``verifier.image`` and ``verifier.container``: the container sandbox."""
    image = v.text("image", "postgres:{major}") or "postgres:{major}"
    if problem := check_image_template(image):
        v.fail("image", problem)
    c = v.sub("container")
    engine = c.text("engine")
    if engine is not None and not engine.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
        c.fail("engine", f"must be a unix://, tcp:// or ssh:// URL, not {engine!r}")
    settings = ContainerSettings(
        image=image,
        engine=engine,
        pull=c.choice("pull", PULL_POLICIES, "missing") or "missing",
        memory_mb=c.req_integer("memory_mb", 1024, 128, 1 << 22),
        cpus=c.number("cpus", 2.0, 0.1) or 2.0,
        pids=c.req_integer("pids", 512, 64, 1 << 22),
        nofile=c.req_integer("nofile", 4096, 256, 1 << 20),
        nproc=c.req_integer("nproc", 16384, 64, 1 << 22),
        api_timeout=c.duration("api_timeout", 30.0) or 30.0,
    )
    c.done()
    return settings


def _email(f: Fields) -> EmailConfig:
    to = f.texts("to")
    if not to:
        f.fail("to", "name at least one recipient")
    starttls, tls = f.flag("starttls", True), f.flag("tls", False)
    if starttls and tls:
        f.fail("tls", "use either starttls or tls (implicit TLS), not both")
    email = EmailConfig(
        host=f.req_text("host"),
        port=f.req_integer("port", 465 if tls else 587, 1, 65535),
        starttls=starttls,
        tls=tls,
        sender=f.req_text("from"),
        to=to,
        username=f.text("username"),
        password_env=f.text("password_env"),
        password_file=f.text("password_file"),
        ca_file=f.text("ca_file"),
        verify=f.flag("verify", True),
        timeout_seconds=f.duration("timeout", 30.0) or 30.0,
        templates_dir=f.text("templates_dir"),
    )
    if email.password_env and email.password_file:
        f.fail("password_file", "give password_env or password_file, not both")
    if (email.password_env or email.password_file) and not email.username:
        f.fail("username", "is required with a password")
    for key, value in (("ca_file", email.ca_file), ("templates_dir", email.templates_dir)):
        if value and not os.path.isabs(value):
            f.fail(key, "must be an absolute path")
    f.done()
    return email


def parse(raw: object, path: str = "<config>") -> Config:
    top = Fields(raw, "")
    lock_dir = top.text("lock_dir") or default_lock_dir()
    repos: dict[str, RepoSettings] = {}
    for i, item in enumerate(top.items("repositories")):
        repo = _repository(Fields(item, f"repositories[{i}]"))
        if repo.name in repos:
            raise ConfigError(f"repositories[{i}].name", f"duplicate repository {repo.name!r}")
        repos[repo.name] = repo
    a = top.sub("alerts")
    email_raw = a.get("email")
    alerts = AlertsConfig(
        email=_email(Fields(email_raw, "alerts.email")) if email_raw is not None else None,
        max_backup_age_seconds=a.duration("max_backup_age", 26 * 3600) or 26 * 3600,
        max_restore_test_age_seconds=a.duration("max_restore_test_age", 3 * 86400) or 3 * 86400,
        wal_stalled_after_seconds=a.duration("wal_stalled_after", 900) or 900,
        wal_backlog_files=a.req_integer("wal_backlog_files", 32, 1),
        repeat_interval_seconds=a.duration("repeat_interval", 4 * 3600) or 4 * 3600,
        evaluate_every_seconds=a.duration("evaluate_every", 60) or 60,
        state_file=a.text("state_file"),
    )
    if alerts.state_file and not os.path.isabs(alerts.state_file):
        a.fail("state_file", "must be an absolute path")
    a.done()
    e = top.sub("exporter")
    refresh = e.duration("refresh", 15) or 15
    exporter = ExporterSettings(
        refresh_seconds=refresh,
        full_listing_seconds=e.duration("full_listing", 300) or 300,
        max_staleness_seconds=e.duration("max_staleness", max(120, 4 * refresh))
        or max(120, 4 * refresh),
        source_timeout_seconds=e.duration("source_timeout", 3) or 3,
    )
    if exporter.max_staleness_seconds < 2 * exporter.refresh_seconds:
        e.fail("max_staleness", "must be at least twice exporter.refresh")
    e.done()
    targets: list[Target] = []
    raw_targets = top.items("targets")
    if not raw_targets:
        top.fail("targets", "configure at least one target")
    for i, item in enumerate(raw_targets):
        target = _target(
            Fields(item, f"targets[{i}]"), repos, alerts.max_backup_age_seconds, lock_dir
        )
        if any(t.name == target.name for t in targets):
            raise ConfigError(f"targets[{i}].name", f"duplicate target {target.name!r}")
        targets.append(target)
    v = top.sub("verifier")
    verifier = VerifierSettings(
        sandbox=v.choice("sandbox", ("process", "container"), "process") or "process",
        jobs=v.req_integer("jobs", 2, 1, 64),
        rto_seconds=v.duration("rto_seconds", 3600.0) or 3600.0,
        container=_container(v),
        workdir=v.text("workdir"),
        heapallindexed=v.flag("heapallindexed", False),
        heartbeat_slack_seconds=v.number("heartbeat_slack_seconds", 5.0, 0.0) or 0.0,
        timeout_seconds=v.duration("timeout", 6 * 3600) or 6 * 3600,
        sandbox_user=v.text("sandbox_user", DEFAULT_SANDBOX_USER) or DEFAULT_SANDBOX_USER,
        share_sandbox_user=v.flag("share_sandbox_user", False),
        memory_mb=v.req_integer("memory_mb", 256, 64, 1 << 20),
        address_space_mb=v.req_integer("address_space_mb", 4096, 512, 1 << 24),
    )
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", verifier.sandbox_user) or (
        verifier.sandbox_user == "root"
    ):
        v.fail(
            "sandbox_user", f"must be an unprivileged OS user name, not {verifier.sandbox_user!r}"
        )
    if verifier.workdir and not os.path.isabs(verifier.workdir):
        v.fail("workdir", "must be an absolute path")
    v.done()
    hf = top.sub("http")
    listen = hf.text("listen", "127.0.0.1:9847") or "127.0.0.1:9847"
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$", listen):
        hf.fail("listen", f"must be host:port, not {listen!r}")
    d = HttpLimits()
    http = HttpConfig(
        listen,
        hf.text("web_config_file"),
        HttpLimits(
            max_connections=hf.req_integer("max_connections", d.max_connections, 8, 100_000),
            header_timeout_seconds=_positive(hf, "header_timeout", d.header_timeout_seconds),
            idle_timeout_seconds=_positive(hf, "idle_timeout", d.idle_timeout_seconds),
            max_header_bytes=hf.req_integer("max_header_bytes", d.max_header_bytes, 1024, 1 << 20),
            max_headers=hf.req_integer("max_headers", d.max_headers, 8, 1000),
        ),
    )
    hf.done()
    sv = top.sub("serve")
    serve = ServeConfig(
        max_parallel_jobs=sv.req_integer("max_parallel_jobs", 2, 1, 64),
        shutdown_grace_seconds=sv.duration("shutdown_grace", 60) or 60,
        log_format=sv.choice("log_format", ("text", "json"), "text") or "text",
    )
    sv.done()
    top.done()
    return Config(
        path,
        tuple(targets),
        tuple(repos.values()),
        verifier,
        alerts,
        http,
        lock_dir,
        exporter,
        serve,
    )


def default_path() -> str:
    return os.environ.get("PGPROOF_CONFIG") or "pgproof.yaml"


def load(path: str | None = None) -> Config:
    where = path or default_path()
    try:
        text = Path(where).read_text()
    except FileNotFoundError:
        raise ConfigError(
            "", f"config file {where} not found (use --config or $PGPROOF_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {where}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{where} is not valid YAML{at}") from None
    return parse(raw, where)
