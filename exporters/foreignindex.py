"""Another tool's backups seen by the exporter as a read-only repository of one target's
backups: refreshed through the tool's own listing (``pgbackrest info``, the files source's
scan) like a repository index, so that the backup metrics (age, size, count), the "backup
missing / too old" alerts and the stale-restore-test alert follow it. The records of the
target's restore tests are in its results repository, indexed as any pgproof repository."""

from __future__ import annotations

import time
from collections.abc import Callable

from pgproof.backups import catalog, foreign
from pgproof.backups.errors import BackupError, CatalogError
from pgproof.backups.runner import Runner
from pgproof.backups.settings import ForeignSettings
from pgproof.exporters.model import BackupInfo, RepoSnapshot, TargetView


class ForeignIndex:
    """One source (one set of settings), for every target that reads it."""

    def __init__(
        self,
        settings: ForeignSettings,
        clock: Callable[[], float] = time.time,
        timeout: float = 60.0,
    ):
        self.targets: list[str] = []
        self.settings = settings
        self.name = foreign.where(settings)
        self.clock = clock
        self.timeout = timeout

    def refresh(self) -> RepoSnapshot:
        started = time.monotonic()
        try:
            report = foreign.health(self.settings, Runner(), "", float("inf"), verify=False)
            repo = report.repositories[0]
            if not repo.reachable:
                raise BackupError("; ".join(report.problems))
            backups = tuple(
                BackupInfo(
                    str(b["id"]),
                    str(b["kind"]),
                    catalog.parse_utc(str(b["started_at"])).timestamp(),
                    catalog.parse_utc(str(b["finished_at"])).timestamp(),
                    int(b.get("size_bytes") or 0),
                    b.get("start_wal"),
                )
                for b in repo.backups
            )
        except (BackupError, CatalogError) as exc:
            return RepoSnapshot(
                self.name, False, self.clock(), time.monotonic() - started, str(exc)
            )
        # no WAL view: the source's archive is not judged on every refresh (check does)
        views = {t: TargetView(t, backups, 0, (), (), (), {}, None) for t in self.targets}
        return RepoSnapshot(self.name, True, self.clock(), time.monotonic() - started, "", views)
