"""What a pgBackRest repository holds, as ``pgbackrest info --output=json`` describes it: the
first piece of restore-testing backups pgproof did not make (issue 14).

pgproof reads a pgBackRest repository only through pgBackRest itself, never its files: the
same code path production would restore with, encrypted repositories included. The cipher
passphrase goes to pgBackRest through its environment (``PGBACKREST_REPO<n>_CIPHER_PASS``),
never in argv, and nothing pgBackRest prints is shown without the runner's redaction.
``parse_info`` is pure; ``PgBackRest.info`` runs the tool.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pgproof.backups import walnames
from pgproof.backups.catalog import utc_iso
from pgproof.backups.errors import CommandError, SourceError
from pgproof.backups.health import HealthReport, RepoReport
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings, read_secret

BACKUP_TYPES = ("full", "diff", "incr")


@dataclass(frozen=True)
class Backup:
    label: str  # 20261129-170919F (incr/diff: <full>_<label>I)
    type: str  # full | diff | incr
    started: dt.datetime
    finished: dt.datetime
    start_lsn: str
    stop_lsn: str
    start_wal: str | None  # None: an offline backup (no WAL range)
    stop_wal: str | None
    size: int  # the database's size at the backup
    stored: int  # bytes in the repository (this backup's own files)
    db_id: int
    pg_major: int
    system_identifier: str
    error: bool  # pgBackRest found page checksum errors while backing up
    prior: str | None  # the backup an incr/diff depends on


@dataclass(frozen=True)
class ArchiveRange:
    """The WAL pgBackRest holds for one database history entry (``15-1``)."""

    id: str
    db_id: int
    first: str | None
    last: str | None


@dataclass(frozen=True)
class StanzaInfo:
    name: str
    backups: tuple[Backup, ...]  # oldest first
    archives: tuple[ArchiveRange, ...]
    cipher: str  # none | aes-256-cbc


class InfoError(SourceError):
    """pgBackRest answered, but not with a usable stanza (its own message is quoted)."""


class BackupDamaged(SourceError):
    """pgBackRest read a backup file or archived segment whose bytes do not match what it
    recorded (checksum), do not decompress (format) or are not what it wrote (file-invalid):
    evidence of damage, not a failure to run."""


# pgBackRest's exit codes for damage it found (src/build/error/error.yaml): checksum,
# file-invalid, format
DAMAGE_CODES = (26, 28, 29)


def parse_info(raw: object, stanza: str) -> StanzaInfo:
    """The stanza's part of ``pgbackrest info --output=json``; InfoError naming what
    pgBackRest said when the stanza is missing or unreadable."""
    doc = _stanza_doc(raw, stanza)
    status = _obj(doc.get("status"), "status")
    if status.get("code") != 0:
        repos = []
        for r in doc.get("repo") or []:
            repo = _obj(r, "repo")
            repos.append(
                f"repo{repo.get('key')}: {_obj(repo.get('status'), 'status').get('message')}"
            )
        raise InfoError(
            f"pgBackRest stanza {stanza!r}: {status.get('message')}"
            + (f" ({'; '.join(repos)})" if repos else "")
        )
    try:
        dbs = {
            int(d["id"]): (int(str(d["version"]).split(".")[0]), str(d["system-id"]))
            for d in (_obj(x, "db") for x in doc.get("db") or [])
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise InfoError(f"pgbackrest info: db is not understood: {exc!r}") from None
    backups = tuple(
        sorted(
            (_backup(_obj(b, "backup"), dbs) for b in doc.get("backup") or []),
            key=lambda b: (b.started, b.label),
        )
    )
    archives = tuple(
        ArchiveRange(
            str(a["id"]),
            int(_obj(a.get("database"), "archive.database")["id"]),
            a.get("min"),
            a.get("max"),
        )
        for a in (_obj(x, "archive") for x in doc.get("archive") or [])
    )
    return StanzaInfo(stanza, backups, archives, str(doc.get("cipher") or "none"))


def _stanza_doc(raw: object, stanza: str) -> Mapping[str, Any]:
    if not isinstance(raw, list):
        raise InfoError("pgbackrest info did not print a JSON list")
    for item in raw:
        if isinstance(item, dict) and item.get("name") == stanza:
            return item
    raise InfoError(f"pgbackrest info does not list stanza {stanza!r}")


def _backup(b: Mapping[str, Any], dbs: Mapping[int, tuple[int, str]]) -> Backup:
    try:
        label, kind = str(b["label"]), str(b["type"])
        stamps, lsn = _obj(b["timestamp"], "timestamp"), _obj(b["lsn"], "lsn")
        archive = _obj(b.get("archive") or {}, "archive")
        info = _obj(b["info"], "info")
        db_id = int(_obj(b["database"], "database")["id"])
        major, sysid = dbs[db_id]
        return Backup(
            label=label,
            type=kind,
            started=dt.datetime.fromtimestamp(int(stamps["start"]), dt.UTC),
            finished=dt.datetime.fromtimestamp(int(stamps["stop"]), dt.UTC),
            start_lsn=str(lsn["start"]),
            stop_lsn=str(lsn["stop"]),
            start_wal=archive.get("start"),
            stop_wal=archive.get("stop"),
            size=int(info["size"]),
            stored=int(_obj(info.get("repository") or {}, "repository").get("delta") or 0),
            db_id=db_id,
            pg_major=major,
            system_identifier=sysid,
            error=bool(b.get("error")),
            prior=b.get("prior"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InfoError(
            f"pgbackrest info: backup {b.get('label')!r} is not understood: {exc!r}"
        ) from None


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InfoError(f"pgbackrest info: {what} is not a JSON object")
    return value


@dataclass(frozen=True)
class VerifyResult:
    ok: bool  # nothing wrong anywhere in the stanza
    report: str  # pgBackRest's own summary (``verify --output=text --verbose``)
    backups: Mapping[str, str]  # label -> status (valid, invalid, ...)
    archive_problems: tuple[str, ...]  # archive ids with invalid or missing WAL

    def backup_ok(self, label: str) -> bool:
        return self.backups.get(label) == "valid"


_VERIFY_BACKUP = re.compile(r"^\s*backup: (\S+), status: (\w+)")
_VERIFY_ARCHIVE = re.compile(
    r"^\s*archiveId: (\S+), total WAL checked: (\d+), total valid WAL: (\d+)"
)


def parse_verify(text: str) -> VerifyResult:
    """``pgbackrest verify --output=text --verbose``: ``status: ok`` or ``status: error``,
    then a line per archive id and per backup (pgBackRest 2.45 exits 0 either way)."""
    status = None
    backups: dict[str, str] = {}
    archives: list[str] = []
    for line in text.splitlines():
        if line.startswith("status:"):
            status = line.split(":", 1)[1].strip()
        elif m := _VERIFY_BACKUP.match(line):
            backups[m.group(1)] = m.group(2)
        elif (m := _VERIFY_ARCHIVE.match(line)) and m.group(2) != m.group(3):
            archives.append(f"{m.group(1)}: {m.group(3)} of {m.group(2)} WAL files valid")
    if status not in ("ok", "error"):
        raise InfoError(f"pgbackrest verify printed no status: {text.strip()[-300:]!r}")
    return VerifyResult(status == "ok", text.strip(), backups, tuple(archives))


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


_LOCKING = ("info", "restore", "archive-get")  # the commands that take --lock-path


class PgBackRest:
    """pgBackRest as pgproof runs it: read-only commands, with nothing written where
    production's pgBackRest keeps its state (no log file; locks in a private directory), so a
    restore test touches neither the repository nor the host's pgBackRest."""

    def __init__(self, settings: PgBackRestSettings, runner: Runner):
        self.settings = settings
        self.runner = runner
        self.private = tempfile.mkdtemp(prefix="pgproof-pgbackrest-")

    def close(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, command: str, *options: str, params: tuple[str, ...] = ()) -> list[str]:
        s = self.settings
        out = [s.binary]
        if s.config:
            out.append(f"--config={s.config}")
        out.append(f"--stanza={s.stanza}")
        if s.repo is not None:
            out.append(f"--repo={s.repo}")
        out += ["--log-level-console=warn", "--log-level-stderr=error", "--log-level-file=off"]
        if command in _LOCKING:
            out.append(f"--lock-path={self.private}")
        if command == "archive-get":
            out.append("--archive-async=n")
        return [*out, *options, command, *params]

    def env(self) -> dict[str, str]:
        """The passphrase for pgBackRest, through its environment only."""
        try:
            secret = read_secret(self.settings.cipher_pass_env, self.settings.cipher_pass_file)
        except LookupError as exc:
            raise SourceError(f"pgBackRest cipher passphrase: {exc.args[0]}") from None
        if secret is None:
            return {}
        return {f"PGBACKREST_REPO{self.settings.repo or 1}_CIPHER_PASS": secret}

    def _unreadable(self, stdout: bytes, stderr: str) -> InfoError:
        """What to say when pgBackRest's answer is not JSON. A wrong passphrase makes it
        decrypt backup.info into garbage and quote that: say so instead of the garbage."""
        text = stdout.decode(errors="replace")
        encrypted = self.settings.cipher_pass_env or self.settings.cipher_pass_file
        if encrypted and ("FormatError" in text or "CryptoError" in text):
            source = self.settings.cipher_pass_env or self.settings.cipher_pass_file
            return InfoError(
                f"{where(self.settings)}: cannot decrypt the repository's backup.info: is the "
                f"cipher passphrase ({source}) the repository's? (pgBackRest: "
                f"{'FormatError' if 'FormatError' in text else 'CryptoError'})"
            )
        said = _printable((stderr.strip() or text.strip())[-300:])
        return InfoError(f"pgbackrest info did not print JSON: {said or 'nothing'}")

    def info(self, timeout: float = 300) -> StanzaInfo:
        try:
            done = self.runner.run(
                self.argv("info", "--output=json"), timeout=timeout, env=self.env()
            )
        except CommandError as exc:
            raise SourceError(f"pgbackrest info (stanza {self.settings.stanza!r}): {exc}") from None
        try:
            raw = json.loads(done.stdout)
        except ValueError:
            raise self._unreadable(done.stdout, done.stderr) from None
        return parse_info(raw, self.settings.stanza)

    # -- what a restore test runs, as this process's user (root keeps the files' owners as
    # pgBackRest recorded them; pgproof then hands them to the sandbox's user)
    def restore(self, label: str, data_dir: str, tablespace_dir: str, timeout: float) -> None:
        """The backup's files into ``data_dir`` (tablespaces under ``tablespace_dir``, never
        at production's paths); no recovery settings (pgproof writes its own)."""
        argv = self.argv(
            "restore",
            f"--set={label}",
            f"--pg1-path={data_dir}",
            f"--tablespace-map-all={tablespace_dir}",
            "--type=none",
            "--archive-mode=off",
        )
        try:
            self.runner.run(argv, timeout=timeout, env=self.env())
        except CommandError as exc:
            raise _failure(f"pgbackrest restore of {label}", exc) from None

    def archive_get(self, name: str, dest: str, timeout: float = 600) -> bool:
        """One archived WAL file into ``dest``; False when the archive does not have it."""
        try:
            done = self.runner.run(
                self.argv("archive-get", params=(name, dest)),
                timeout=timeout,
                env=self.env(),
                ok_codes=(0, 1),
            )
        except CommandError as exc:
            raise _failure(f"pgbackrest archive-get {name}", exc) from None
        return done.returncode == 0

    def files(self, path: str, timeout: float = 600) -> list[str]:
        """Names of the files under ``path`` in the repository (``repo-ls --recurse``),
        relative to it."""
        argv = self.argv("repo-ls", "--recurse", "--output=json", params=(path,))
        try:
            done = self.runner.run(argv, timeout=timeout, env=self.env())
            listing = json.loads(done.stdout)
        except CommandError as exc:
            raise SourceError(f"pgbackrest repo-ls {path}: {exc}") from None
        except ValueError:
            raise InfoError(f"pgbackrest repo-ls {path} did not print JSON") from None
        if not isinstance(listing, dict):
            raise InfoError(f"pgbackrest repo-ls {path} did not print a JSON object")
        return [
            name
            for name, entry in listing.items()
            if isinstance(entry, dict) and entry.get("type") == "file"
        ]

    def verify(self, timeout: float) -> VerifyResult:
        try:
            done = self.runner.run(
                self.argv("verify", "--output=text", "--verbose"), timeout=timeout, env=self.env()
            )
        except CommandError as exc:
            raise SourceError(f"pgbackrest verify: {exc}") from None
        return parse_verify(done.stdout.decode(errors="replace"))


def where(settings: PgBackRestSettings) -> str:
    """The name a stanza goes by in records, metrics and messages: ``pgbackrest:main/repo2``."""
    return f"pgbackrest:{settings.stanza}" + (f"/repo{settings.repo}" if settings.repo else "")


def _failure(what: str, exc: CommandError) -> SourceError:
    if exc.returncode in DAMAGE_CODES:
        return BackupDamaged(f"{what}: {exc}")
    return SourceError(f"{what}: {exc}")


def health(
    settings: PgBackRestSettings,
    runner: Runner,
    target: str,
    max_backup_age_seconds: float,
    now: dt.datetime | None = None,
    verify: bool = True,
) -> HealthReport:
    """``pgproof check`` of a pgBackRest stanza, without restoring: its backups as pgBackRest
    lists them, the newest one's age, each backup's WAL within the archived range, and (with
    ``verify``) ``pgbackrest verify`` over every backup file and archived segment."""
    now = now or dt.datetime.now(dt.UTC)
    named = where(settings)
    report = RepoReport(named, settings.config or "pgBackRest's default config")
    problems: list[str] = []
    with PgBackRest(settings, runner) as tool:
        try:
            info = tool.info()
        except SourceError as exc:
            report.reachable = False
            return HealthReport(target, [report], [f"{named}: {exc}"], utc_iso(now))
        checked: VerifyResult | SourceError | None = None
        if verify:
            try:
                checked = tool.verify(timeout=24 * 3600)
            except SourceError as exc:
                checked = exc
    for b in info.backups:
        report.backups.append(
            {
                "id": b.label,
                "kind": "physical",
                "type": b.type,
                "state": "complete",
                "size_bytes": b.stored,
                "database_bytes": b.size,
                "started_at": utc_iso(b.started),
                "finished_at": utc_iso(b.finished),
                "start_wal": b.start_wal,
                "stop_wal": b.stop_wal,
            }
        )
        if b.error:
            problems.append(f"{named}: backup {b.label}: pgBackRest found page checksum errors")
    ranges = {a.db_id: a for a in info.archives}
    for b in info.backups:
        archived = ranges.get(b.db_id)
        last = archived.last if archived else None
        if b.stop_wal and not walnames.archive_reaches(last, b.stop_wal):
            problems.append(
                f"{named}: backup {b.label}: its WAL up to {b.stop_wal} is not archived "
                f"(the archive ends at {archived.last if archived else 'nothing'})"
            )
    if info.archives:
        report.wal = {"first": info.archives[0].first, "last": info.archives[-1].last}
    if not info.backups:
        problems.append(f"{named}: no backup")
    else:
        age = (now - info.backups[-1].finished).total_seconds()
        if age > max_backup_age_seconds:
            problems.append(
                f"{named}: the newest backup {info.backups[-1].label} is {age / 3600:.1f} h old "
                f"(limit {max_backup_age_seconds / 3600:.1f} h)"
            )
    if isinstance(checked, SourceError):
        problems.append(f"{named}: {checked}")
    elif checked is not None and not checked.ok:
        problems.append(f"{named}: pgbackrest verify: {' '.join(checked.report.split())}")
    report.problems = problems
    return HealthReport(target, [report], problems, utc_iso(now))
