"""A pgBackRest stanza seen by the exporter as a read-only repository of one target's
backups: refreshed with ``pgbackrest info`` like a repository index, so that the backup
metrics (age, size, count), the "backup missing / too old" alerts and the stale-restore-test
alert follow pgBackRest's own listing. The records of the target's restore tests are in its
results repository, indexed as any pgproof repository."""

from __future__ import annotations

import time
from collections.abc import Callable

from pgproof.backups import pgbackrest
from pgproof.backups.errors import BackupError
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings
from pgproof.exporters.model import BackupInfo, RepoSnapshot, TargetView


class PgBackRestIndex:
    """One stanza (one set of pgBackRest settings), for every target that reads it."""

    def __init__(
        self,
        settings: PgBackRestSettings,
        clock: Callable[[], float] = time.time,
        timeout: float = 60.0,
    ):
        self.targets: list[str] = []
        self.settings = settings
        self.name = pgbackrest.where(settings)
        self.clock = clock
        self.timeout = timeout

    def refresh(self) -> RepoSnapshot:
        started = time.monotonic()
        try:
            with pgbackrest.PgBackRest(self.settings, Runner()) as tool:
                info = tool.info(timeout=self.timeout)
        except BackupError as exc:
            return RepoSnapshot(
                self.name, False, self.clock(), time.monotonic() - started, str(exc)
            )
        backups = tuple(
            BackupInfo(
                b.label,
                "physical",
                b.started.timestamp(),
                b.finished.timestamp(),
                b.stored,
                b.start_wal,
            )
            for b in info.backups
        )
        # no WAL view: pgBackRest's archive is not listed on every refresh (check looks at it)
        views = {t: TargetView(t, backups, 0, (), (), (), {}, None) for t in self.targets}
        return RepoSnapshot(self.name, True, self.clock(), time.monotonic() - started, "", views)
