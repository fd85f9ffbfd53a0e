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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgproof.backups.errors import CommandError, SourceError
from pgproof.backups.runner import Runner
from pgproof.backups.settings import read_secret

BACKUP_TYPES = ("full", "diff", "incr")


@dataclass(frozen=True)
class PgBackRestSettings:
    stanza: str
    config: str | None = None  # --config; None: pgBackRest's default (/etc/pgbackrest...)
    repo: int | None = None  # --repo; None: pgBackRest's default (repo1)
    cipher_pass_env: str | None = None  # an environment variable holding the passphrase
    cipher_pass_file: str | None = None  # or a file (its first line)
    binary: str = "pgbackrest"


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


class PgBackRest:
    """pgBackRest run as this process's runner runs commands (as the postgres user when root)."""

    def __init__(self, settings: PgBackRestSettings, runner: Runner):
        self.settings = settings
        self.runner = runner

    def argv(self, command: str, *options: str) -> list[str]:
        s = self.settings
        out = [s.binary]
        if s.config:
            out.append(f"--config={s.config}")
        out.append(f"--stanza={s.stanza}")
        if s.repo is not None:
            out.append(f"--repo={s.repo}")
        return [*out, "--log-level-console=warn", "--log-level-stderr=error", *options, command]

    def env(self) -> dict[str, str]:
        """The passphrase for pgBackRest, through its environment only."""
        try:
            secret = read_secret(self.settings.cipher_pass_env, self.settings.cipher_pass_file)
        except LookupError as exc:
            raise SourceError(f"pgBackRest cipher passphrase: {exc.args[0]}") from None
        if secret is None:
            return {}
        return {f"PGBACKREST_REPO{self.settings.repo or 1}_CIPHER_PASS": secret}

    def info(self, timeout: float = 300) -> StanzaInfo:
        try:
            done = self.runner.run(
                self.argv("info", "--output=json"),
                timeout=timeout,
                env=self.env(),
                as_postgres=True,
            )
        except CommandError as exc:
            raise SourceError(f"pgbackrest info (stanza {self.settings.stanza!r}): {exc}") from None
        try:
            raw = json.loads(done.stdout)
        except ValueError:
            raise InfoError("pgbackrest info did not print JSON") from None
        return parse_info(raw, self.settings.stanza)
