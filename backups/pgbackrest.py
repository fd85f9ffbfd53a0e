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
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pgproof.backups.errors import CommandError, SourceError
from pgproof.backups.pgbackrestverify import VerifyResult, parse_verify
from pgproof.backups.runner import CommandResult, Runner
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
    references: tuple[str, ...] = ()  # every set whose files an incr/diff refers to


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
            references=tuple(str(r) for r in b.get("reference") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InfoError(
            f"pgbackrest info: backup {b.get('label')!r} is not understood: {exc!r}"
        ) from None


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InfoError(f"pgbackrest info: {what} is not a JSON object")
    return value


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


_LOCKING = ("info", "restore", "archive-get")  # the commands that take --lock-path
_VERSION = re.compile(r"pgBackRest (\d+)\.(\d+)(?:\.(\d+))?")


class PgBackRest:
    """pgBackRest as pgproof runs it: read-only commands, with nothing written where
    production's pgBackRest keeps its state (no log file; locks in a private directory), so a
    restore test touches neither the repository nor the host's pgBackRest.

    Every command but ``restore`` runs as the repository's owner (``settings.user``) when
    pgproof is root: pgBackRest 2.59 refuses them as root, and the owner is who production
    runs them as. ``restore`` runs as pgproof itself (root keeps the files' owners as
    pgBackRest recorded them; pgproof then hands them to the sandbox's user). The private
    directory (locks, WAL being fetched) belongs to the owner; ``scratch`` is where it is
    made (the sandboxes' directory: a fetched segment is then moved, not copied)."""

    def __init__(self, settings: PgBackRestSettings, runner: Runner, scratch: str | None = None):
        self.settings = settings
        self.runner = runner
        self.owner = runner.as_user(settings.user)
        self._version: tuple[int, int, int] | None = None
        if scratch is not None:
            os.makedirs(scratch, mode=0o711, exist_ok=True)
        self.private = tempfile.mkdtemp(prefix="pgproof-pgbackrest-", dir=scratch)
        self.staging = os.path.join(self.private, "wal")
        os.mkdir(self.staging, 0o700)
        try:
            ident = self.owner.postgres_identity()
        except KeyError:
            self.close()
            raise SourceError(
                f"the OS user {settings.user!r} pgBackRest's commands run as does not exist "
                "(source.user: the repository's owner)"
            ) from None
        if ident is not None:
            for path in (self.private, self.staging):
                os.chown(path, ident.uid, ident.gid)

    def close(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(
        self, command: str, *options: str, params: tuple[str, ...] = (), log: str = "warn"
    ) -> list[str]:
        s = self.settings
        out = [s.binary]
        if s.config:
            out.append(f"--config={s.config}")
        out.append(f"--stanza={s.stanza}")
        if s.repo is not None:
            out.append(f"--repo={s.repo}")
        out += [f"--log-level-console={log}", "--log-level-stderr=error", "--log-level-file=off"]
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

    def _run(
        self, argv: list[str], timeout: float, ok_codes: tuple[int, ...] = (0,)
    ) -> CommandResult:
        """A command that is not restore: as the repository's owner."""
        done = self.owner.run(
            argv, timeout=timeout, env=self.env(), as_postgres=True, ok_codes=_ANY_EXIT
        )
        return _checked(done, ok_codes, self.runner)

    def version(self) -> tuple[int, int, int]:
        """pgBackRest's release, e.g. (2, 55, 1)."""
        if self._version is None:
            try:
                done = self.owner.run(
                    [self.settings.binary, "version"], timeout=60, as_postgres=True
                )
            except CommandError as exc:
                raise SourceError(f"pgbackrest version: {exc}") from None
            m = _VERSION.search(done.stdout.decode(errors="replace"))
            if m is None:
                raise InfoError(f"pgbackrest version printed {done.stdout[:100]!r}")
            self._version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        return self._version

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
            done = self._run(self.argv("info", "--output=json"), timeout)
        except CommandError as exc:
            raise SourceError(f"pgbackrest info (stanza {self.settings.stanza!r}): {exc}") from None
        try:
            raw = json.loads(done.stdout)
        except ValueError:
            raise self._unreadable(done.stdout, done.stderr) from None
        return parse_info(raw, self.settings.stanza)

    def restore(self, label: str, data_dir: str, tablespace_dir: str, timeout: float) -> None:
        """The backup's files into ``data_dir`` (tablespaces under ``tablespace_dir``, never
        at production's paths); no recovery settings (pgproof writes its own). The one
        command run as pgproof itself."""
        argv = self.argv(
            "restore",
            f"--set={label}",
            f"--pg1-path={data_dir}",
            f"--tablespace-map-all={tablespace_dir}",
            "--type=none",
            "--archive-mode=off",
        )
        try:
            done = self.runner.run(argv, timeout=timeout, env=self.env(), ok_codes=_ANY_EXIT)
            _checked(done, (0,), self.runner)
        except CommandError as exc:
            raise _failure(f"pgbackrest restore of {label}", exc) from None

    def archive_get(self, name: str, dest: str, timeout: float = 600) -> bool:
        """One archived WAL file into ``dest``; False when the archive does not have it.
        The owner writes it into the private directory; pgproof moves it to ``dest``."""
        staged = os.path.join(self.staging, name)
        try:
            done = self._run(self.argv("archive-get", params=(name, staged)), timeout, (0, 1))
        except CommandError as exc:
            raise _failure(f"pgbackrest archive-get {name}", exc) from None
        if done.returncode != 0:
            return False
        shutil.move(staged, dest)
        return True

    def files(self, path: str, timeout: float = 600) -> list[str]:
        """Names of the files under ``path`` in the repository (``repo-ls --recurse``),
        relative to it."""
        argv = self.argv("repo-ls", "--recurse", "--output=json", params=(path,))
        try:
            done = self._run(argv, timeout)
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

    def verify(self, timeout: float, label: str | None = None) -> VerifyResult:
        """``pgbackrest verify`` of the stanza, or of backup ``label`` (and the files it
        refers to in prior sets) where the release can (``--set``: 2.46 and later), at the
        info log level, which names each bad file."""
        options = ["--output=text", "--verbose"]
        if label is not None and self.version() >= (2, 46, 0):
            options.append(f"--set={label}")
        try:
            done = self._run(self.argv("verify", *options, log="info"), timeout)
        except CommandError as exc:
            raise SourceError(f"pgbackrest verify: {exc}") from None
        try:
            return parse_verify(self.runner.redact(done.stdout.decode(errors="replace")))
        except ValueError as exc:
            raise InfoError(str(exc)) from None


_ANY_EXIT = tuple(range(256))


def _checked(
    done: CommandResult, ok_codes: tuple[int, ...] = (0,), runner: Runner | None = None
) -> CommandResult:
    """CommandError unless the exit is in ``ok_codes``, with what pgBackRest said: its
    stderr, else the ERROR lines of its stdout (2.55 prints an error found while reading
    its options there, whatever --log-level-stderr says)."""
    if done.returncode in ok_codes:
        return done
    said = done.stderr.strip()
    if not said:
        text = done.stdout.decode(errors="replace")
        said = "\n".join(line for line in text.splitlines() if " ERROR: " in line).strip()
        said = (runner.redact(said) if runner is not None else said)[-2000:]
    raise CommandError(done.argv, done.returncode, said)


def references(info: StanzaInfo) -> dict[str, tuple[str, ...]]:
    """{label: the sets whose files it refers to} of every backup of the stanza."""
    return {b.label: b.references for b in info.backups}


def types(info: StanzaInfo) -> dict[str, str]:
    return {b.label: b.type for b in info.backups}


def where(settings: PgBackRestSettings) -> str:
    """The name a stanza goes by in records, metrics and messages: ``pgbackrest:main/repo2``."""
    return f"pgbackrest:{settings.stanza}" + (f"/repo{settings.repo}" if settings.repo else "")


def _failure(what: str, exc: CommandError) -> SourceError:
    if exc.returncode in DAMAGE_CODES:
        return BackupDamaged(f"{what}: {exc}")
    return SourceError(f"{what}: {exc}")
