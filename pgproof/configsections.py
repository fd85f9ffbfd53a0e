"""The config's sections besides targets: repositories, alerts, exporter, verifier (with the
container sandbox), http, serve. Each reads its defaults from the settings class it fills,
so every default is written once."""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

from pgproof.backups.settings import (
    EncryptionSettings,
    FilesystemRepoSettings,
    MasterKeySource,
    RepoSettings,
    S3RepoSettings,
)
from pgproof.backups.storage.s3options import MIN_PART_SIZE, S3Options
from pgproof.configfields import ConfigError, Fields
from pgproof.configmodel import AlertsConfig, EmailConfig, HttpConfig, ServeConfig
from pgproof.exporters.settings import AlertLimits, ExporterSettings, HttpLimits
from pgproof.verifier.containersettings import (
    PULL_POLICIES,
    ContainerSettings,
    check_image_template,
)
from pgproof.verifier.settings import VerifierSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
OS_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$")


def absolute(f: Fields, key: str, value: str | None) -> None:
    if value and not os.path.isabs(value):
        f.fail(key, "must be an absolute path")


def repositories(top: Fields) -> dict[str, RepoSettings]:
    repos: dict[str, RepoSettings] = {}
    for i, item in enumerate(top.items("repositories")):
        repo = repository(Fields(item, f"repositories[{i}]"))
        if repo.name in repos:
            raise ConfigError(f"repositories[{i}].name", f"duplicate repository {repo.name!r}")
        repos[repo.name] = repo
    return repos


def repository(f: Fields) -> RepoSettings:
    name = f.req_text("name")
    if not NAME.match(name):
        f.fail("name", "letters, digits, '.', '_' and '-' only")
    kind = f.choice("type", ("filesystem", "s3"), None)
    if kind is None:
        f.fail("type", "is required (filesystem or s3)")
    if kind == "filesystem":
        path = f.req_text("path")
        if not os.path.isabs(path):
            f.fail("path", "must be an absolute path")
        encryption = _encryption(f)
        f.done()
        return FilesystemRepoSettings(name, path, encryption)
    sse = f.get("sse")
    if sse is not None and sse not in ("AES256", "aws:kms"):
        f.fail("sse", f"must be AES256 or aws:kms, not {sse!r}")
    kms = f.text("kms_key_id")
    if kms and sse != "aws:kms":
        f.fail("kms_key_id", "needs sse: aws:kms")
    endpoint = f.text("endpoint_url")
    if endpoint and not re.match(r"^https?://", endpoint):
        f.fail("endpoint_url", "must start with http:// or https://")
    d = S3Options(bucket="")
    mb = 1024 * 1024
    part_mb = f.req_integer("part_size_mb", d.part_size // mb, MIN_PART_SIZE // mb, 5 * 1024)
    options = S3Options(
        bucket=f.req_text("bucket"),
        prefix=(f.text("prefix") or "").strip("/"),
        endpoint_url=endpoint,
        region=f.text("region"),
        sse=sse,
        kms_key_id=kms,
        storage_class=f.text("storage_class"),
        profile=f.text("profile"),
        part_size=part_mb * mb,
        concurrency=f.req_integer("concurrency", d.concurrency, 1, 32),
        max_attempts=f.req_integer("max_attempts", d.max_attempts, 1, 50),
        force_path_style=f.flag("force_path_style", d.force_path_style),
        **_object_lock(f),
    )
    key_env, secret_env = f.text("access_key_id_env"), f.text("secret_access_key_env")
    if bool(key_env) != bool(secret_env):
        f.fail(
            "access_key_id_env" if not key_env else "secret_access_key_env",
            "access_key_id_env and secret_access_key_env go together",
        )
    encryption = _encryption(f)
    f.done()
    return S3RepoSettings(name, options, key_env, secret_env, encryption)


def alerts(a: Fields) -> AlertsConfig:
    d, dl = AlertsConfig(), AlertLimits()
    email_raw = a.get("email")
    config = AlertsConfig(
        email=email(Fields(email_raw, "alerts.email")) if email_raw is not None else None,
        limits=AlertLimits(
            backup_max_age_seconds=a.req_duration("max_backup_age", dl.backup_max_age_seconds),
            restore_test_max_age_seconds=a.req_duration(
                "max_restore_test_age", dl.restore_test_max_age_seconds
            ),
            wal_stalled_after_seconds=a.req_duration(
                "wal_stalled_after", dl.wal_stalled_after_seconds
            ),
            wal_backlog_max_files=a.req_integer("wal_backlog_files", dl.wal_backlog_max_files, 1),
        ),
        repeat_interval_seconds=a.req_duration("repeat_interval", d.repeat_interval_seconds),
        evaluate_every_seconds=a.req_duration("evaluate_every", d.evaluate_every_seconds),
        state_file=a.text("state_file"),
    )
    absolute(a, "state_file", config.state_file)
    a.done()
    return config


def email(f: Fields) -> EmailConfig:
    to = f.texts("to")
    if not to:
        f.fail("to", "name at least one recipient")
    starttls, tls = f.flag("starttls", True), f.flag("tls", False)
    if starttls and tls:
        f.fail("tls", "use either starttls or tls (implicit TLS), not both")
    config = EmailConfig(
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
        timeout_seconds=f.req_duration("timeout", EmailConfig.timeout_seconds),  # its default
        templates_dir=f.text("templates_dir"),
    )
    if config.password_env and config.password_file:
        f.fail("password_file", "give password_env or password_file, not both")
    if (config.password_env or config.password_file) and not config.username:
        f.fail("username", "is required with a password")
    absolute(f, "ca_file", config.ca_file)
    absolute(f, "templates_dir", config.templates_dir)
    f.done()
    return config


def exporter(e: Fields) -> ExporterSettings:
    d = ExporterSettings()
    refresh = e.req_duration("refresh", d.refresh_seconds)
    config = ExporterSettings(
        refresh_seconds=refresh,
        full_listing_seconds=e.req_duration("full_listing", d.full_listing_seconds),
        # unless set: at least the default, and four refreshes
        max_staleness_seconds=e.req_duration(
            "max_staleness", max(d.max_staleness_seconds, 4 * refresh)
        ),
        source_timeout_seconds=e.req_duration("source_timeout", d.source_timeout_seconds),
    )
    if config.max_staleness_seconds < 2 * config.refresh_seconds:
        e.fail("max_staleness", "must be at least twice exporter.refresh")
    e.done()
    return config


def _master_key(k: Fields) -> MasterKeySource:
    given = [n for n in ("key_file", "key_env", "kms_key_id") if k.has(n)]
    if len(given) != 1:
        k.fail("key_file", "give exactly one of key_file, key_env or kms_key_id")
    source = MasterKeySource(k.text("key_file"), k.text("key_env"), k.text("kms_key_id"))
    absolute(k, "key_file", source.key_file)
    if source.kms_key_id:
        from pgproof.backups.kms import region_of

        try:
            region_of(source.kms_key_id)
        except ValueError as exc:
            k.fail("kms_key_id", f"{exc}: objects name the key that wrapped them")
    return source


def _encryption(f: Fields) -> EncryptionSettings | None:
    """``encryption: {key_file | key_env | kms_key_id, previous: [...], kms_endpoint_url}``."""
    if not f.has("encryption"):
        return None
    e = f.sub("encryption")
    current = _master_key(e)
    previous = []
    for i, raw in enumerate(e.items("previous")):
        p = Fields(raw, f"{e.where('previous')}[{i}]")
        previous.append(_master_key(p))
        p.done()
    endpoint = e.text("kms_endpoint_url")
    if endpoint and not re.match(r"^https?://", endpoint):
        e.fail("kms_endpoint_url", "must start with http:// or https://")
    if endpoint and not any(s.kms_key_id for s in (current, *previous)):
        e.fail("kms_endpoint_url", "is for kms_key_id keys only")
    e.done()
    return EncryptionSettings(current, tuple(previous), endpoint)


def _object_lock(f: Fields) -> dict[str, Any]:
    """``object_lock: {mode: GOVERNANCE|COMPLIANCE, days: N}`` of an S3 repository."""
    if not f.has("object_lock"):
        return {}
    lock = f.sub("object_lock")
    mode = lock.choice("mode", ("GOVERNANCE", "COMPLIANCE"), None)
    if mode is None:
        lock.fail("mode", "is required: GOVERNANCE or COMPLIANCE")
    days = lock.integer("days", None, 1, 36500)
    if days is None:
        lock.fail("days", "is required: how long each object stays locked (cover retention)")
    lock.done()
    return {"lock_mode": mode, "lock_days": days}


def verifier(v: Fields) -> VerifierSettings:
    d = VerifierSettings()
    config = VerifierSettings(
        sandbox=v.req_choice("sandbox", ("process", "container"), d.sandbox),
        jobs=v.req_integer("jobs", d.jobs, 1, 64),
        rto_seconds=v.req_duration("rto_seconds", d.rto_seconds),
        container=container(v),
        workdir=v.text("workdir"),
        heapallindexed=v.flag("heapallindexed", d.heapallindexed),
        heartbeat_slack_seconds=v.req_number(
            "heartbeat_slack_seconds", d.heartbeat_slack_seconds, 0.0
        ),
        timeout_seconds=v.req_duration("timeout", d.timeout_seconds),
        lease_seconds=v.req_duration("lease", d.lease_seconds),
        sandbox_user=v.text_or("sandbox_user", d.sandbox_user),
        share_sandbox_user=v.flag("share_sandbox_user", d.share_sandbox_user),
        memory_mb=v.req_integer("memory_mb", d.memory_mb, 64, 1 << 20),
        address_space_mb=v.req_integer("address_space_mb", d.address_space_mb, 512, 1 << 24),
        signing_key_file=v.text("signing_key_file"),
        trusted_keys=v.texts("trusted_keys"),
        unsigned_before=_iso_time(v, "unsigned_before"),
    )
    absolute(v, "signing_key_file", config.signing_key_file)
    for i, path in enumerate(config.trusted_keys):
        absolute(v, f"trusted_keys[{i}]", path)
    if not OS_USER.fullmatch(config.sandbox_user) or config.sandbox_user == "root":
        v.fail("sandbox_user", f"must be an unprivileged OS user name, not {config.sandbox_user!r}")
    absolute(v, "workdir", config.workdir)
    if config.lease_seconds < 30:
        v.fail(
            "lease",
            f"must be at least 30s (it is renewed every third), not {config.lease_seconds:g}s",
        )
    v.done()
    return config


def _iso_time(f: Fields, key: str) -> str | None:
    """An ISO time with its zone, normalized to UTC as records write times."""
    text = f.text(key)
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        f.fail(key, f"not an ISO time: {text!r} (e.g. 2026-12-01T00:00:00Z)")
    if moment.tzinfo is None:
        f.fail(key, "give the time zone (e.g. ...Z)")
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def container(v: Fields) -> ContainerSettings:
    """``verifier.image`` and ``verifier.container``: the container sandbox."""
    d = ContainerSettings()
    image = v.text_or("image", d.image)
    if problem := check_image_template(image):
        v.fail("image", problem)
    c = v.sub("container")
    engine = c.text("engine")
    if engine is not None and not engine.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
        c.fail("engine", f"must be a unix://, tcp:// or ssh:// URL, not {engine!r}")
    config = ContainerSettings(
        image=image,
        engine=engine,
        pull=c.req_choice("pull", PULL_POLICIES, d.pull),
        memory_mb=c.req_integer("memory_mb", d.memory_mb, 128, 1 << 22),
        cpus=c.req_number("cpus", d.cpus, 0.1),
        pids=c.req_integer("pids", d.pids, 64, 1 << 22),
        nofile=c.req_integer("nofile", d.nofile, 256, 1 << 20),
        nproc=c.req_integer("nproc", d.nproc, 64, 1 << 22),
        api_timeout=c.req_duration("api_timeout", d.api_timeout),
    )
    c.done()
    return config


def http(hf: Fields) -> HttpConfig:
    d, dl = HttpConfig(), HttpLimits()
    listen = hf.text_or("listen", d.listen)
    if not _LISTEN.match(listen):
        hf.fail("listen", f"must be host:port, not {listen!r}")
    config = HttpConfig(
        listen,
        hf.text("web_config_file"),
        HttpLimits(
            max_connections=hf.req_integer("max_connections", dl.max_connections, 8, 100_000),
            header_timeout_seconds=hf.req_duration("header_timeout", dl.header_timeout_seconds),
            idle_timeout_seconds=hf.req_duration("idle_timeout", dl.idle_timeout_seconds),
            max_header_bytes=hf.req_integer("max_header_bytes", dl.max_header_bytes, 1024, 1 << 20),
            max_headers=hf.req_integer("max_headers", dl.max_headers, 8, 1000),
        ),
    )
    hf.done()
    return config


def serve(sv: Fields) -> ServeConfig:
    d = ServeConfig()
    config = ServeConfig(
        max_parallel_jobs=sv.req_integer("max_parallel_jobs", d.max_parallel_jobs, 1, 64),
        shutdown_grace_seconds=sv.req_duration("shutdown_grace", d.shutdown_grace_seconds),
        log_format=sv.req_choice("log_format", ("text", "json"), d.log_format),
    )
    sv.done()
    return config
