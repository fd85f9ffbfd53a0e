"""Backups barman-cloud keeps in an object store (``backups.barmancloud``; CloudNativePG's
layout), restore-tested like pgproof's own: ``barman-cloud-restore`` puts the files into the
sandbox (tablespaces relocated inside it), ``barman-cloud-wal-restore`` fetches each segment
the listing shows from the backup's start (in parallel, a gap named before replay), then the
physical restore test runs unchanged. pgproof runs the tools; the object store is only
read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pgproof.backups import barmancloud, catalog, filesource
from pgproof.backups.barmancloud import BarmanBackup, BarmanCloud
from pgproof.backups.errors import BackupError, SourceError
from pgproof.backups.kinds import Kind
from pgproof.backups.runner import Runner
from pgproof.backups.settings import BarmanCloudSettings
from pgproof.backups.storage.factory import opened
from pgproof.verifier import basefiles
from pgproof.verifier.errors import NoBackup, RestoreFailed
from pgproof.verifier.foreign import described, fetch_wal
from pgproof.verifier.job import RestoreJob
from pgproof.verifier.records import CheckResult
from pgproof.verifier.walprefetch import Prefetched

TOOL_TIME = "barman-cloud-backup-list"


def manifest_of(backup: BarmanBackup, target: str, where: str) -> catalog.Manifest:
    major, minor = backup.version // 10000, backup.version % 10000
    return catalog.Manifest(
        id=backup.id,
        kind="physical",
        target=target,
        system_identifier=backup.system_identifier,
        pg_version=f"{major}.{minor}",
        pg_version_num=backup.version,
        started_at=catalog.utc_iso(backup.started),
        finished_at=catalog.utc_iso(backup.finished),
        compression="barman-cloud",
        files=(),
        tools={"barman-cloud": "barman-cloud"},
        pgproof_version="",
        repositories=(where,),
        wal_segment_size=backup.segment_size,
        data_checksums=backup.data_checksums,
        start_lsn=backup.begin_lsn,
        stop_lsn=backup.end_lsn,
        timeline=backup.timeline,
        start_wal=backup.begin_wal,
        stop_wal=backup.end_wal,
        extra={
            "source": "barman-cloud",
            "time_from": TOOL_TIME,
            "stored_bytes": backup.size,
            "tablespaces": [t.name for t in backup.tablespaces],
        },
    )


class BarmanCloudOrigin:
    kind = "barman-cloud"

    def __init__(self, settings: BarmanCloudSettings, runner: Runner):
        self.settings = settings
        self.tool = BarmanCloud(settings, runner)
        self.chosen: BarmanBackup | None = None

    def close(self) -> None:
        pass

    @property
    def where(self) -> str:
        return barmancloud.where(self.settings)

    def choose(self, target: str, kind: Kind, backup_id: str | None) -> catalog.Manifest:
        if kind != "physical":
            raise NoBackup(f"barman-cloud makes physical backups only ({self.where})", kind, None)
        found = [b for b in self.tool.backups() if backup_id in (None, b.id)]
        done = [b for b in found if b.status == "DONE"]
        if not done:
            if found:  # the one asked for did not complete: barman-cloud says why
                b = found[-1]
                raise SourceError(f"backup {b.id} is {b.status}: {b.error or 'not complete'}")
            what = f"backup {backup_id}" if backup_id else "complete backup"
            raise NoBackup(f"no {what} in {self.where}", kind, backup_id)
        self.chosen = done[-1]
        if self.chosen.begin_wal is None:
            raise SourceError(f"{self.chosen.id} lists no WAL range: nothing to replay from")
        return manifest_of(self.chosen, target, self.where)

    def fetch(self, job: RestoreJob) -> tuple[catalog.Manifest, Prefetched | None]:
        chosen = self.chosen
        assert chosen is not None
        sandbox = job.sandbox
        sandbox.data_dir.mkdir(mode=0o700, exist_ok=True)
        tablespaces = basefiles.tablespace_root(sandbox)
        tablespaces.mkdir(parents=True, exist_ok=True)
        try:
            self.tool.restore(
                chosen,
                str(sandbox.data_dir),
                str(tablespaces),
                job.request.settings.timeout_seconds,
            )
        except SourceError:
            # barman-cloud-restore fails alike for an unreadable archive and a lost
            # connection: reading the archives through says which (damage is failed)
            checked = self._read_through()
            if checked.verdict == "failed":
                raise RestoreFailed(f"barman-cloud-restore failed: {checked.detail}") from None
            raise
        owner = job.runner.postgres_identity()
        if owner is not None:
            basefiles.chown_tree(sandbox.data_dir, owner.uid, owner.gid)
            basefiles.chown_tree(tablespaces, owner.uid, owner.gid)
        try:
            manifest = described(job, job.manifest)
        except RestoreFailed:
            # barman-cloud-restore exits 0 after an archive it could not read to the end:
            # name the damaged archive when that is why the files are not all there
            checked = self._read_through()
            if checked.verdict == "failed":
                raise RestoreFailed(
                    f"{checked.detail} (barman-cloud-restore exited 0 without the files)"
                ) from None
            raise
        if manifest.system_identifier != chosen.system_identifier:
            raise RestoreFailed(
                f"the restored pg_control names system {manifest.system_identifier}, "
                f"barman-cloud's listing {chosen.system_identifier}"
            )
        listing = self.tool.wal_listing(manifest.wal_segment_size)
        wal = fetch_wal(job, manifest, listing, self.tool.wal_restore, barmancloud.WAL_RESTORE)
        job.findings.bytes_restored = chosen.size + wal.bytes
        return manifest, wal

    def fetch_dumps(self, job: RestoreJob) -> tuple[catalog.Manifest, Path, int]:
        raise NoBackup(f"barman-cloud makes physical backups only ({self.where})", "logical", None)

    def integrity(self, job: RestoreJob, wal_included: bool) -> CheckResult:
        checked = self._read_through()
        if checked.verdict == "failed":  # barman-cloud-restore had exited 0 on it
            return dataclasses.replace(
                checked, detail=f"{checked.detail} (barman-cloud-restore did not notice)"
            )
        return checked

    def _read_through(self) -> CheckResult:
        """barman-cloud records no checksum per file and has no verify command for cloud
        backups, and barman-cloud-restore stops reading an archive once tar's end mark is
        met (a flipped byte in data.tar.gz restores without a word): pgproof reads each of
        the backup's gzip'ed archives to its end (read-only) and checks its CRC."""
        chosen = self.chosen
        assert chosen is not None
        prefix = f"{self.settings.server}/base/{chosen.id}/"
        checked: list[str] = []
        unchecked: list[str] = []
        try:
            with opened([self.settings.repository]) as repos:
                repo = repos[0]
                for info in repo.listing(prefix):
                    name = info.key[len(prefix) :]
                    if not name.endswith(".tar.gz") and not name.endswith(".tar"):
                        continue
                    if not name.endswith(".gz"):
                        unchecked.append(name)
                        continue
                    try:
                        for _ in filesource.gunzipped(repo.read(info.key), name):
                            pass
                    except filesource.DamagedFile as exc:
                        return CheckResult(
                            "verifybackup",
                            "failed",
                            f"backup {chosen.id}: {exc}",
                            {"checked": checked, "damaged": name},
                        )
                    checked.append(name)
        except BackupError as exc:
            return CheckResult("verifybackup", "error", f"cannot read {prefix}: {exc}")
        detail = (
            f"{len(checked)} gzip'ed archive(s) of backup {chosen.id} read to their end, CRC intact"
        )
        if unchecked:
            detail += f"; {len(unchecked)} uncompressed one(s) carry no checksum"
        if not checked:
            detail = (
                "not applicable: the backup's archives are not gzip'ed and barman-cloud records "
                "no checksum for them (replay, amcheck and pg_checksums judge the files)"
            )
        return CheckResult(
            "verifybackup",
            "passed",
            detail,
            {"checked": checked, "unchecked": unchecked, "applicable": bool(checked)},
        )
