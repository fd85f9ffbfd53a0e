"""What one restore test works with and what it finds, shared by the logical and the
physical restore test (``verifier.logical.run_logical``, ``verifier.physical.run_physical``)
and by the checks both run."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pgproof.backups import catalog, kinds
from pgproof.backups.progress import Progress
from pgproof.backups.runner import Runner
from pgproof.backups.settings import TargetSettings
from pgproof.backups.storage.base import Repository
from pgproof.verifier import amcheck, checks, exhaustion
from pgproof.verifier.containersettings import ContainerSettings
from pgproof.verifier.records import CheckResult, Pitr
from pgproof.verifier.sandbox import Sandbox
from pgproof.verifier.settings import VerifierSettings

if TYPE_CHECKING:
    from pgproof.verifier.walprefetch import Prefetched


@dataclass(frozen=True)
class VerifyRequest:
    target: TargetSettings
    kind: kinds.Kind
    backup_id: str | None = None  # None: the newest complete backup of the kind
    pitr: str | None = None  # physical: "latest", "random", "immediate" or a timestamp
    custom_checks: tuple[tuple[str, str], ...] = ()
    settings: VerifierSettings = field(default_factory=VerifierSettings)  # verifier:, whole
    image: str | None = None  # the target's own image (container sandbox)

    @property
    def container(self) -> ContainerSettings | None:
        """None: the process sandbox."""
        return self.settings.container_for(self.image)

    @property
    def conninfo_db(self) -> str:
        """The database the target's conninfo names (custom checks run there)."""
        from psycopg import conninfo

        try:
            found = conninfo.conninfo_to_dict(self.target.source.conninfo).get("dbname")
        except Exception:  # noqa: BLE001 - validated at config load; fall back quietly
            return "postgres"
        return str(found or "postgres")


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        self.timer.phases[self.name] = round(self.timer.phases.get(self.name, 0) + elapsed, 3)


@dataclass
class Findings:
    """What a restore test found so far; the result record is made from it at the end
    (what was found before a step failed is kept)."""

    checks: list[CheckResult] = field(default_factory=list)
    pitr: Pitr | None = None
    rpo_seconds: float | None = None
    bytes_restored: int = 0
    space: exhaustion.Space | None = None  # measured when the test stopped short or failed


class PhysicalOrigin(Protocol):
    """Where a physical restore test's files and WAL come from (``verifier.physical`` has
    pgproof's own repositories, ``verifier.foreign`` other tools' backups)."""

    def fetch(self, job: RestoreJob) -> tuple[catalog.Manifest, Prefetched | None]:
        """The backup's files into ``job.sandbox.data_dir`` and its WAL prefetched (None:
        the backup carries its WAL); the manifest completed with what the files say."""
        ...

    def integrity(self, job: RestoreJob, wal_included: bool) -> CheckResult:
        """The ``verifybackup`` check: the backup's files against its own checksums."""
        ...


class Origin(PhysicalOrigin, Protocol):
    """Backups another tool makes (``verifier.foreign``): listed and chosen by the tool,
    fetched into the sandbox; what follows is pgproof's restore test unchanged."""

    @property
    def where(self) -> str:
        """The name the source goes by (``pgbackrest:main``, ``files:cronbox``)."""
        ...

    def choose(self, target: str, kind: kinds.Kind, backup_id: str | None) -> catalog.Manifest:
        """The newest backup of the kind (or ``backup_id``); NoBackup when there is none."""
        ...

    def fetch_dumps(self, job: RestoreJob) -> tuple[catalog.Manifest, Path, int]:
        """A logical backup's dumps as plain files in a folder of the sandbox's work dir (the
        manifest completed with what their headers say); the folder and the bytes read."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RestoreJob:
    """Everything one restore test works with (logical or physical)."""

    request: VerifyRequest
    repos: Sequence[Repository]  # every repository of the target (WAL may come from any)
    repo: Repository  # the one the backup is read from
    manifest: catalog.Manifest
    sandbox: Sandbox
    runner: Runner
    timer: Timer
    findings: Findings
    progress: Progress
    started: dt.datetime  # when the restore test started (the RPO is measured from it)
    origin: Origin | None = None  # None: pgproof's own repositories


def amcheck_check(
    request: VerifyRequest, sandbox: Sandbox, restored: Sequence[str] | None = None
) -> CheckResult:
    """pg_amcheck as the request configures it (``restored``: see verifier.amcheck)."""
    return checks.guarded(
        "amcheck",
        functools.partial(
            amcheck.amcheck,
            sandbox,
            request.settings.heapallindexed,
            request.settings.jobs,
            request.settings.timeout_seconds,
            restored,
        ),
    )


def custom_checks(
    request: VerifyRequest, sandbox: Sandbox, dbs: Sequence[str]
) -> list[CheckResult]:
    """The target's own assertions, in the conninfo's database when it was restored."""
    dbname = request.conninfo_db if request.conninfo_db in dbs else "postgres"
    return [
        checks.guarded(
            f"custom:{name}", functools.partial(checks.custom, sandbox, name, query, dbname)
        )
        for name, query in request.custom_checks
    ]
