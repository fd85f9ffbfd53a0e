"""Physical backups pgproof did not make, restore-tested like its own: where they come from
is an *origin* (``verifier.job.PhysicalOrigin``); everything after the files are in the
sandbox (recovery to the PITR target, the heartbeat proof, amcheck, the full read,
pg_checksums, the record) is ``verifier.physical`` unchanged.

pgBackRest: the backup is listed by ``pgbackrest info``, its files restored by
``pgbackrest restore --type=none`` into the sandbox (tablespaces mapped inside it), the
archive listed by ``pgbackrest repo-ls`` and the WAL fetched by ``pgbackrest archive-get``,
the same commands production would restore with. pgproof runs them, not the sandbox: the
sandbox's OS user never reads the repository, and recovery replays the fetched copies with
the same local restore_command as for pgproof's own backups. Nothing is written to the
repository. ``pgbackrest verify`` is the tool's own integrity check (in place of
pg_verifybackup, which needs a backup_manifest pgBackRest does not write).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from pathlib import Path

from pgproof.backups import catalog, pgbackrest, pgbackrestverify, walarchive, walnames
from pgproof.backups.errors import CommandError, SourceError
from pgproof.backups.kinds import Kind
from pgproof.backups.pgbackrest import Backup, BackupDamaged, PgBackRest, StanzaInfo
from pgproof.backups.runner import Runner
from pgproof.backups.settings import (
    BarmanCloudSettings,
    FilesSettings,
    ForeignSettings,
    PgBackRestSettings,
)
from pgproof.verifier import authid, basefiles
from pgproof.verifier.errors import NoBackup, RestoreFailed, SandboxError
from pgproof.verifier.job import Origin, RestoreJob
from pgproof.verifier.records import CheckResult
from pgproof.verifier.walprefetch import Prefetched, plan

FETCH_WORKERS = 4


def manifest_of(backup: Backup, target: str, stanza: str) -> catalog.Manifest:
    """A pgBackRest backup described as the restore test needs it. What the listing does not
    say (segment size, data checksums, the bootstrap superuser) is read from the restored
    files (``PgBackRestOrigin.fetch``)."""
    seg = walnames.DEFAULT_SEGMENT_SIZE
    timeline = walnames.parse_segment_name(backup.start_wal, seg)[0] if backup.start_wal else None
    return catalog.Manifest(
        id=backup.label,
        kind="physical",
        target=target,
        system_identifier=backup.system_identifier,
        pg_version=str(backup.pg_major),
        pg_version_num=backup.pg_major * 10000,
        started_at=catalog.utc_iso(backup.started),
        finished_at=catalog.utc_iso(backup.finished),
        compression="pgbackrest",
        files=(),
        tools={"pgbackrest": "pgbackrest"},
        pgproof_version="",
        repositories=(f"pgbackrest:{stanza}",),
        wal_segment_size=seg,
        data_checksums=False,
        start_lsn=backup.start_lsn,
        stop_lsn=backup.stop_lsn,
        timeline=timeline,
        start_wal=backup.start_wal,
        stop_wal=backup.stop_wal,
        extra={
            "source": "pgbackrest",
            "time_from": "pgbackrest info",
            "type": backup.type,
            "stored_bytes": backup.stored,
            "db_id": backup.db_id,
        },
    )


def described(job: RestoreJob, manifest: catalog.Manifest) -> catalog.Manifest:
    """What another tool's listing does not say, read from the restored files: segment size,
    data checksums and the system identifier from pg_controldata, the bootstrap superuser
    from pg_authid."""
    data = job.sandbox.data_dir
    try:
        out = job.sandbox.run("pg_controldata", [str(data)], timeout=60).stdout
    except CommandError as exc:
        raise RestoreFailed(f"pg_controldata on the restored files: {exc}") from None
    control = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in out.decode(errors="replace").splitlines())
    )
    try:
        segment = int(control["Bytes per WAL segment"])
        checksums = control.get("Data page checksum version", "0") != "0"
        sysid = control["Database system identifier"]
    except (KeyError, ValueError):
        raise RestoreFailed("pg_controldata does not read the restored pg_control") from None
    try:
        names = authid.bootstrap_superusers((data / "global" / "1260").read_bytes())
    except OSError as exc:
        raise RestoreFailed(f"the restored files have no pg_authid: {exc}") from None
    if not names:
        raise SandboxError("no bootstrap superuser (role oid 10) in the restored pg_authid")
    return dataclasses.replace(
        manifest,
        wal_segment_size=segment,
        data_checksums=checksums,
        superuser=names[0],
        system_identifier=sysid,
    )


def origin_for(settings: ForeignSettings, runner: Runner, scratch: str | None = None) -> Origin:
    """The origin of a foreign source's backups; ``scratch``: where the sandboxes live."""
    if isinstance(settings, FilesSettings):
        from pgproof.verifier.filesorigin import FilesOrigin

        return FilesOrigin(settings, runner)
    if isinstance(settings, BarmanCloudSettings):
        from pgproof.verifier.barmanorigin import BarmanCloudOrigin

        return BarmanCloudOrigin(settings, runner)
    return PgBackRestOrigin(settings, runner, scratch)


class PgBackRestOrigin:
    kind = "pgbackrest"

    def __init__(self, settings: PgBackRestSettings, runner: Runner, scratch: str | None = None):
        self.settings = settings
        self.tool = PgBackRest(settings, runner, scratch)
        self.info: StanzaInfo | None = None

    def close(self) -> None:
        self.tool.close()

    @property
    def where(self) -> str:
        return pgbackrest.where(self.settings)

    def choose(self, target: str, kind: Kind, backup_id: str | None) -> catalog.Manifest:
        """The newest backup (or the one labelled ``backup_id``) of the stanza."""
        if kind != "physical":
            raise NoBackup(f"pgBackRest makes physical backups only ({self.where})", kind, None)
        self.info = self.tool.info()
        found = [b for b in self.info.backups if backup_id in (None, b.label)]
        if not found:
            what = f"backup {backup_id}" if backup_id else "backup"
            raise NoBackup(f"no {what} in {self.where}", kind, backup_id)
        newest = found[-1]
        if newest.start_wal is None:
            raise SourceError(f"{newest.label} is an offline backup: it has no WAL to replay")
        return manifest_of(newest, target, self.settings.stanza)

    def fetch(self, job: RestoreJob) -> tuple[catalog.Manifest, Prefetched | None]:
        """The backup's files into the sandbox, then the WAL from its start to the newest
        archived segment, with the gaps and timeline path checked as for pgproof's own."""
        sandbox, manifest = job.sandbox, job.manifest
        sandbox.data_dir.mkdir(mode=0o700, exist_ok=True)
        tablespaces = basefiles.tablespace_root(sandbox)
        tablespaces.mkdir(parents=True, exist_ok=True)
        timeout = job.request.settings.timeout_seconds
        try:
            self.tool.restore(manifest.id, str(sandbox.data_dir), str(tablespaces), timeout)
        except BackupDamaged as exc:
            raise RestoreFailed(f"{exc}{self._located(manifest.id, timeout)}") from None
        owner = job.runner.postgres_identity()
        if owner is not None:
            basefiles.chown_tree(sandbox.data_dir, owner.uid, owner.gid)
            basefiles.chown_tree(tablespaces, owner.uid, owner.gid)
        manifest = described(job, manifest)
        wal = self._wal(job, manifest)
        job.findings.bytes_restored = int(manifest.extra.get("stored_bytes", 0)) + wal.bytes
        return manifest, wal

    def _located(self, label: str, timeout: float) -> str:
        """Where pgbackrest verify finds the damage that stopped the restore of ``label``
        (the file and the set holding it: often a full that this diff or incr depends on);
        nothing when it cannot say."""
        try:
            result = self.tool.verify(timeout, label)
        except SourceError as exc:
            return f" (pgbackrest verify could not locate it: {exc})"
        assert self.info is not None
        said = pgbackrestverify.located(
            result, pgbackrest.references(self.info), pgbackrest.types(self.info), label
        )
        return f"; pgbackrest verify: {'; '.join(said)}" if said else ""

    def fetch_dumps(self, job: RestoreJob) -> tuple[catalog.Manifest, Path, int]:
        raise NoBackup(f"pgBackRest makes physical backups only ({self.where})", "logical", None)

    def integrity(self, job: RestoreJob, wal_included: bool) -> CheckResult:
        """``pgbackrest verify``: the tested backup's files against the checksums pgBackRest
        recorded. Damage elsewhere in the stanza (another backup, WAL this test did not
        need: archive-get checked each segment it fetched) is evidence here and a problem
        for ``pgproof check``, not this backup's failure."""
        label = job.manifest.id
        result = self.tool.verify(job.request.settings.timeout_seconds, label)
        evidence: dict[str, object] = {
            "tool": "pgbackrest verify",
            "backup_status": result.backups.get(label, "not checked"),
            "report": result.report[-2000:],
        }
        if not result.backup_ok(label):
            assert self.info is not None
            said = pgbackrestverify.located(
                result, pgbackrest.references(self.info), pgbackrest.types(self.info), label
            )
            evidence["invalid_files"] = said
            return CheckResult(
                "verifybackup",
                "failed",
                f"pgbackrest verify: backup {label} is {result.backups.get(label, 'not listed')}"
                f" in {self.where}" + (f": {'; '.join(said)[:500]}" if said else ""),
                evidence,
            )
        elsewhere = [
            f"backup {b}: {s}" for b, s in sorted(result.backups.items()) if s != "valid"
        ] + list(result.archive_problems)
        if elsewhere:
            evidence["elsewhere_in_the_stanza"] = elsewhere
        return CheckResult(
            "verifybackup",
            "passed",
            f"pgbackrest verify: every file of backup {label} matches its recorded checksum"
            + (f" (elsewhere in {self.where}: {'; '.join(elsewhere)[:200]})" if elsewhere else ""),
            evidence,
        )

    def _listing(self, segment_size: int, db_id: int) -> walarchive.ArchiveListing:
        """The WAL pgBackRest archived for the backup's cluster (its database history id:
        after a major upgrade the stanza has several) as it lists it, names without
        pgBackRest's checksum suffix."""
        assert self.info is not None
        archive_ids = [a.id for a in self.info.archives if a.db_id == db_id]
        segments: dict[tuple[int, int], str] = {}
        histories: dict[int, str] = {}
        for archive_id in archive_ids:
            for path in self.tool.files(f"archive/{self.settings.stanza}/{archive_id}"):
                # segments are stored as <name>-<sha1>[.gz|.zst], history files as they are
                name = path.rsplit("/", 1)[-1].split("-", 1)[0]
                try:
                    kind = walnames.classify(name)
                except ValueError:
                    continue  # archive.info and the like
                if kind is walnames.WalKind.SEGMENT:
                    segments[walnames.parse_segment_name(name, segment_size)] = name
                elif kind is walnames.WalKind.HISTORY:
                    histories[int(name[:8], 16)] = name
        return walarchive.ArchiveListing(segments, histories, [], None)

    def _wal(self, job: RestoreJob, manifest: catalog.Manifest) -> Prefetched:
        listing = self._listing(manifest.wal_segment_size, int(manifest.extra["db_id"]))
        try:
            return fetch_wal(job, manifest, listing, self.tool.archive_get, "archive-get")
        except BackupDamaged as exc:
            raise RestoreFailed(str(exc)) from None


def fetch_wal(
    job: RestoreJob,
    manifest: catalog.Manifest,
    listing: walarchive.ArchiveListing,
    get: Callable[[str, str], bool],
    tool: str,
) -> Prefetched:
    """The WAL a replay needs, fetched by another tool's own command (``get(name, dest)``:
    False when the tool finds no such file), in parallel, after the listing's continuity and
    timeline path were checked (a gap fails by name before replay). The listing's values are
    the names the tool takes."""
    directory = job.sandbox.work_dir / "wal"
    directory.mkdir(parents=True, exist_ok=True)
    histories = {}
    for tli, name in listing.histories.items():
        if not get(name, str(directory / name)):
            raise RestoreFailed(f"timeline history {name} is listed but {tool} finds none")
        try:
            histories[tli] = walnames.parse_history((directory / name).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RestoreFailed(f"timeline history {name} is unreadable: {exc}") from None
    names, last = plan(listing, histories, manifest)

    def one(name: str) -> int:
        path = directory / name
        if not get(name, str(path)):
            raise RestoreFailed(f"WAL segment {name} is listed but {tool} finds none")
        return path.stat().st_size

    with concurrent.futures.ThreadPoolExecutor(FETCH_WORKERS) as pool:
        sizes = list(pool.map(one, names))
    owner = job.runner.postgres_identity()
    if owner is not None:
        basefiles.chown_tree(directory, owner.uid, owner.gid)
    return Prefetched(directory, names, sorted(listing.histories.values()), last, sum(sizes))
