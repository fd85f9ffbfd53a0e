"""What ``pgbackrest verify`` found, and where the damage lives (pure).

pgBackRest (2.45 to 2.55 at least; verify has no JSON output) prints a summary, ``status:
ok|error`` then a line per archive id and per backup set with counts, and, at its ``info``
log level, one line per bad file: ``invalid checksum '<set>/pg_data/base/5/16396.gz'`` (also
``file missing``, ``invalid size``, ``invalid result``), the path relative to the stanza's
backup (or archive) directory. The first part of a backup file's path is the backup set that
holds it: a diff or incr stores only what changed and refers to its full (and prior sets)
for the rest, so one damaged file of a full makes every backup that depends on it invalid,
each counted with "checksum invalid: 1". ``located`` says that once, naming the file, the
set holding it and the sets that depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

LABEL = re.compile(r"\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} P\d+ +([A-Z]+): (.*)$")
_BAD_FILE = re.compile(r"^(file missing|invalid checksum|invalid size|invalid result) '(.+)'$")
_BAD_JOB = re.compile(r"^invalid result (\S+): \[(\d+)\] (.*)$")
_BACKUP = re.compile(r"^\s*backup: (\S+), status: ([\w-]+)")
_ARCHIVE = re.compile(r"^\s*archiveId: (\S+), total WAL checked: (\d+), total valid WAL: (\d+)")
_CONTINUED = 20  # log messages go on over lines indented to the message's column


@dataclass(frozen=True)
class InvalidFile:
    reason: str  # file missing | invalid checksum | invalid size | invalid result
    path: str  # as pgBackRest names it: <set>/pg_data/... or <archive id>/.../<segment>
    detail: str = ""  # invalid result: pgBackRest's error

    @property
    def backup_set(self) -> str | None:
        """The backup set holding the file; None for an archived WAL file."""
        head = self.path.split("/", 1)[0]
        return head if LABEL.fullmatch(head) else None

    def __str__(self) -> str:
        return f"{self.reason} {self.path}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool  # nothing wrong anywhere in the stanza (or the set verified)
    report: str  # pgBackRest's own summary (``verify --output=text --verbose``)
    backups: Mapping[str, str]  # label -> status (valid, invalid, ...)
    archive_problems: tuple[str, ...]  # archive ids with invalid or missing WAL
    invalid_files: tuple[InvalidFile, ...] = ()  # named at pgBackRest's info log level

    def backup_ok(self, label: str) -> bool:
        return self.backups.get(label) == "valid"


def parse_verify(text: str) -> VerifyResult:
    """``pgbackrest verify --output=text --verbose`` run with ``--log-level-console=info``:
    the log's lines name the bad files; the rest is the summary (pgBackRest 2.45 exits 0
    either way, so the summary's status decides). ValueError when there is no status."""
    status = None
    backups: dict[str, str] = {}
    archives: list[str] = []
    invalid: list[InvalidFile] = []
    in_log = False
    for line in text.splitlines():
        if m := _LOG_LINE.match(line):
            in_log = True
            message = m.group(2).strip()
            if bad := _BAD_FILE.match(message):
                invalid.append(InvalidFile(bad.group(1), bad.group(2)))
            elif job := _BAD_JOB.match(message):
                invalid.append(InvalidFile("invalid result", job.group(1), job.group(3)))
            continue
        if in_log and len(line) - len(line.lstrip(" ")) >= _CONTINUED:
            continue  # the summary repeated inside the log: read once, below
        in_log = False
        if line.startswith("status:"):
            status = line.split(":", 1)[1].strip()
        elif m := _BACKUP.match(line):
            backups[m.group(1)] = m.group(2)
        elif (m := _ARCHIVE.match(line)) and m.group(2) != m.group(3):
            archives.append(f"{m.group(1)}: {m.group(3)} of {m.group(2)} WAL files valid")
    if status not in ("ok", "error"):
        raise ValueError(f"pgbackrest verify printed no status: {text.strip()[-300:]!r}")
    return VerifyResult(status == "ok", _summary(text), backups, tuple(archives), _unique(invalid))


def _summary(text: str) -> str:
    """The summary as pgBackRest prints it on stdout, without the log lines."""
    out: list[str] = []
    in_log = False
    for line in text.splitlines():
        if _LOG_LINE.match(line):
            in_log = True
            continue
        if in_log and len(line) - len(line.lstrip(" ")) >= _CONTINUED:
            continue
        in_log = False
        out.append(line)
    return "\n".join(out).strip()


def _unique(files: Iterable[InvalidFile]) -> tuple[InvalidFile, ...]:
    return tuple(dict.fromkeys(files))


def dependents(holder: str, references: Mapping[str, Sequence[str]]) -> list[str]:
    """The backup sets other than ``holder`` that refer to files of ``holder``
    (``references``: {label: the sets it refers to}, as ``pgbackrest info`` lists them)."""
    return sorted(label for label, refs in references.items() if holder in refs)


def located(
    result: VerifyResult,
    references: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    label: str | None = None,
) -> list[str]:
    """One sentence per bad file: what is wrong, the set that holds it, the sets that
    depend on it (only those that bear on ``label`` when given: the set itself and the
    ones it depends on)."""
    said = []
    for bad in result.invalid_files:
        holder = bad.backup_set
        if holder is None:
            said.append(f"{bad}: in the WAL archive")
            continue
        if label is not None and holder != label and holder not in references.get(label, ()):
            continue
        kind = types.get(holder, "")
        users = dependents(holder, references)
        text = f"{bad}: in {kind + ' ' if kind else ''}backup {holder}"
        if users:
            named = ", ".join(f"{types.get(u, '')} {u}".strip() for u in users)
            text += f", which {named} depend{'s' if len(users) == 1 else ''} on"
        said.append(text)
    return said
