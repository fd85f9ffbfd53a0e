"""The typed, frozen configuration, read from YAML; unknown keys and bad values are refused
with the field's name (``pgproof.configfields``). The model is in ``pgproof.configmodel``,
targets are read by ``pgproof.configtarget``, the other sections by ``pgproof.configsections``.

Secrets never live in the file: ``password_env``/``password_file`` for the source (or libpq's
own PGPASSFILE/.pgpass), the standard AWS credential chain or ``*_env`` names for S3.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pgproof import configsections, configtarget
from pgproof.backups.lock import default_lock_dir
from pgproof.configfields import ConfigError, Fields
from pgproof.configmodel import (
    AlertsConfig,
    Check,
    Config,
    EmailConfig,
    HttpConfig,
    ServeConfig,
    Target,
)

__all__ = [
    "AlertsConfig",
    "Check",
    "Config",
    "ConfigError",
    "EmailConfig",
    "HttpConfig",
    "ServeConfig",
    "Target",
    "load",
    "parse",
]


def parse(raw: object, path: str = "<config>") -> Config:
    top = Fields(raw, "")
    lock_dir = top.text("lock_dir") or default_lock_dir()
    repos = configsections.repositories(top)
    alerts = configsections.alerts(top.sub("alerts"))
    exporter = configsections.exporter(top.sub("exporter"))
    targets: list[Target] = []
    raw_targets = top.items("targets")
    if not raw_targets:
        top.fail("targets", "configure at least one target")
    for i, item in enumerate(raw_targets):
        target = configtarget.target(
            Fields(item, f"targets[{i}]"), repos, alerts.limits.backup_max_age_seconds, lock_dir
        )
        if any(t.name == target.name for t in targets):
            raise ConfigError(f"targets[{i}].name", f"duplicate target {target.name!r}")
        targets.append(target)
    verifier = configsections.verifier(top.sub("verifier"))
    http = configsections.http(top.sub("http"))
    serve = configsections.serve(top.sub("serve"))
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
