"""The configuration as the program sees it: typed, frozen, each default written once (here
or in the settings class of the package that owns it). ``pgproof.config`` reads YAML into it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from pgproof.alerts.settings import SmtpSettings
from pgproof.backups.settings import RepoSettings, TargetSettings
from pgproof.configfields import ConfigError
from pgproof.exporters.settings import AlertLimits, ExporterSettings, HttpLimits
from pgproof.schedules import Schedule
from pgproof.verifier.settings import VerifierSettings


@dataclass(frozen=True)
class Check:
    name: str
    sql: str


@dataclass(frozen=True)
class Target:
    settings: TargetSettings
    schedule: Mapping[str, Schedule]  # job -> when the service runs it
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
    limits: AlertLimits = AlertLimits()  # a target's max_backup_age overrides the first
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
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    serve: ServeConfig = field(default_factory=ServeConfig)

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

    def limits_for(self, target: Target) -> AlertLimits:
        """The alert limits of one target (its own max_backup_age)."""
        return dataclasses.replace(
            self.alerts.limits, backup_max_age_seconds=target.settings.max_backup_age_seconds
        )
