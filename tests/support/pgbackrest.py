"""A PostgreSQL source backed up by the real pgBackRest (Debian's 2.45, or trixie's 2.55.1
that scripts/fetch-pgbackrest unpacks: ``releases``) into two stanza repositories on this
machine: one plain, one encrypted (aes-256-cbc). The archive's config
holds the passphrase (as production's does); the config pgproof reads does not (pgproof
takes it from its environment)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port

PASSPHRASE = "correct-horse-battery-staple-7"


@dataclass(frozen=True)
class Release:
    version: str
    binary: str
    majors: tuple[int, ...]  # the PostgreSQL majors it knows


def releases() -> list[Release]:
    """The pgBackRest releases installed here: Debian's (bookworm: 2.45, PostgreSQL up to
    15) and the one scripts/fetch-pgbackrest unpacks (trixie: 2.55.1, up to 17 here)."""
    found = []
    system = shutil.which("pgbackrest")
    if system is not None:
        found.append(Release("2.45", system, (15,)))
    cache = os.environ.get("PGPROOF_PGBACKREST_CACHE", "/var/cache/pgproof/pgbackrest")
    unpacked = os.path.join(cache, "2.55.1", "usr", "bin", "pgbackrest")
    if os.access(unpacked, os.X_OK):
        found.append(Release("2.55.1", unpacked, (15, 16, 17)))
    return found


@dataclass(frozen=True)
class S3Repo:
    """A second repository of the plain stanza in S3 (pgBackRest speaks HTTPS only: the port
    is a TLS front of SeaweedFS, tests.support.tlsproxy). The writer's config holds the
    keys; readers take them from PGBACKREST_REPO2_S3_KEY[_SECRET] (``reader_env``)."""

    port: int
    bucket: str
    key: str
    secret: str

    def lines(self, n: int, with_keys: bool) -> str:
        r = f"repo{n}"
        text = (
            f"{r}-type=s3\n{r}-path=/pgbackrest\n{r}-s3-bucket={self.bucket}\n"
            f"{r}-s3-endpoint=127.0.0.1\n{r}-s3-region=us-east-1\n{r}-s3-uri-style=path\n"
            f"{r}-storage-port={self.port}\n{r}-storage-verify-tls=n\n{r}-retention-full=2\n"
            f"{r}-bundle=y\n"  # small files bundled into a few objects, as advised for S3
        )
        if with_keys:
            text += f"{r}-s3-key={self.key}\n{r}-s3-key-secret={self.secret}\n"
        return text

    def reader_env(self) -> dict[str, str]:
        """The keys for a reader whose repo1 is this bucket (pgBackRest reads them there)."""
        return {"PGBACKREST_REPO1_S3_KEY": self.key, "PGBACKREST_REPO1_S3_KEY_SECRET": self.secret}


@dataclass
class Stanzas:
    cluster: Cluster
    root: Path
    plain: Path  # the config pgproof reads with (no passphrase in it)
    encrypted: Path
    repos: tuple[Path, Path]
    writers: tuple[Path, Path]  # the archive's configs (with the passphrase)
    s3: S3Repo | None = None  # the plain stanza's repo2
    binary: str = "pgbackrest"

    def backup(self, kind: str = "full", plain_only: bool = False) -> None:
        for full in self.writers[:1] if plain_only else self.writers:
            as_postgres(
                self.binary, f"--config={full}", "--stanza=main", f"--type={kind}", "backup"
            )
        if self.s3 is not None and not plain_only:
            as_postgres(
                self.binary, f"--config={self.writers[0]}", "--stanza=main", "--repo=2",
                f"--type={kind}", "backup",
            )  # fmt: skip

    @property
    def s3_reader(self) -> Path:
        """pgproof's config for the plain stanza's S3 repository (keys from the environment)."""
        return self.root / "plain-s3-reader.conf"

    def reader_for(self, repo: Path, name: str) -> Path:
        """A pgproof-side config reading another copy of the plain repository."""
        conf = self.root / f"{name}-reader.conf"
        conf.write_text(self.plain.read_text().replace(str(self.repos[0]), str(repo)))
        conf.chmod(0o644)
        return conf


def as_postgres(*argv: str) -> str:
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _conf(
    root: Path, name: str, cluster: Cluster, cipher: bool, s3: S3Repo | None = None
) -> tuple[Path, Path, Path]:
    repo = root / f"repo-{name}"
    for sub in (repo, root / "lock", root / "log", root / "spool"):
        sub.mkdir(parents=True, exist_ok=True)
    base = (
        f"[global]\nrepo1-path={repo}\nrepo1-retention-full=2\ncompress-type=gz\n"
        f"start-fast=y\nlog-level-console=warn\nlog-level-file=off\nlock-path={root}/lock\n"
        f"log-path={root}/log\nspool-path={root}/spool\n"
    )
    stanza = (
        f"\n[main]\npg1-path={cluster.datadir}\npg1-socket-path={cluster.socket_dir}\n"
        f"pg1-port={cluster.port}\n"
    )
    cipher_type = "repo1-cipher-type=aes-256-cbc\n" if cipher else ""
    secret = f"repo1-cipher-pass={PASSPHRASE}\n" if cipher else ""
    full, reader = root / f"{name}.conf", root / f"{name}-reader.conf"
    full.write_text(base + cipher_type + secret + (s3.lines(2, True) if s3 else "") + stanza)
    reader.write_text(base + cipher_type + stanza)
    if s3 is not None:  # a reader of the bucket alone: its repo1 is the S3 one, no keys
        on_s3 = root / f"{name}-s3-reader.conf"
        on_s3.write_text(
            "\n".join(line for line in base.splitlines() if not line.startswith("repo1-"))
            + "\n"
            + s3.lines(1, False)
            + stanza
        )
        on_s3.chmod(0o644)
    full.chmod(0o600)
    reader.chmod(0o644)
    subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
    return full, reader, repo


@contextlib.contextmanager
def pgbackrest_stanzas(
    major: int = 15, scale: int = 1, s3: S3Repo | None = None, binary: str = "pgbackrest"
) -> Iterator[Stanzas]:
    """The source running and archiving into both stanzas (the plain one also into ``s3``),
    pgbench data loaded (``scale``), no backup yet."""
    cluster = make_cluster(major, free_port())
    root = private_dir("pgproof-pgbr-")
    try:
        cluster.initdb(checksums=True)
        plain_full, plain, plain_repo = _conf(root, "plain", cluster, cipher=False, s3=s3)
        enc_full, encrypted, enc_repo = _conf(root, "enc", cluster, cipher=True)
        both = root / "pgbackrest-archive-both.sh"  # pgBackRest checks the command's name
        both.write_text(
            "#!/bin/sh\nset -e\n"
            f'{binary} --config={plain_full} --stanza=main archive-push "$1"\n'
            f'{binary} --config={enc_full} --stanza=main archive-push "$1"\n'
        )
        both.chmod(0o755)
        cluster.set(archive_mode="on", archive_command=f"'{both} %p'")
        cluster.start()
        for full in (plain_full, enc_full):
            as_postgres(binary, f"--config={full}", "--stanza=main", "stanza-create")
        cluster.pgbench("-i", "-q", "-s", str(scale), timeout=7200)
        yield Stanzas(
            cluster,
            root,
            plain,
            encrypted,
            (plain_repo, enc_repo),
            (plain_full, enc_full),
            s3,
            binary,
        )
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def tree_hash(root: Path) -> str:
    """Every name and byte under ``root``: equal before and after means nothing was written."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def target(name: str, conf: Path, **extra: object) -> dict[str, object]:
    """A pgproof target whose backups the stanza read through ``conf`` holds; its records
    go to the repository ``local`` (``write_pgproof_config``)."""
    source: dict[str, object] = {"type": "pgbackrest", "stanza": "main", "config": str(conf)}
    for key in ("cipher_pass_env", "binary"):
        if key in extra:
            source[key] = extra.pop(key)
    return {"name": name, "results": "local", "source": source, **extra}


def write_pgproof_config(base: Path, *targets: dict[str, object]) -> Path:
    """``base/pgproof.yaml`` with a filesystem results repository ``local`` under ``base``."""
    results = base / "results"
    results.mkdir(exist_ok=True)
    config = base / "pgproof.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lock_dir": str(base / "locks"),
                "repositories": [{"name": "local", "type": "filesystem", "path": str(results)}],
                "targets": list(targets),
            }
        )
    )
    return config


def recording(base: Path, real: str) -> tuple[Path, Path]:
    """A ``pgbackrest`` that appends its uid and arguments to a log, then runs ``real``:
    (the wrapper, the log). pgproof is pointed at it with ``binary:``."""
    bindir = base / "recording-bin"
    bindir.mkdir(exist_ok=True)
    log = base / "pgbackrest-calls.log"
    log.touch()
    log.chmod(0o666)
    wrapper = bindir / "pgbackrest"
    wrapper.write_text(f'#!/bin/sh\necho "$(id -u) $*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    bindir.chmod(0o755)
    return wrapper, log


def calls(log: Path) -> list[tuple[int, str]]:
    """(uid, command) of every pgBackRest run the wrapper saw (its first non-option word)."""
    out = []
    for line in log.read_text().splitlines():
        uid, *args = line.split()
        words = [a for a in args if not a.startswith("--")]
        out.append((int(uid), words[0] if words else ""))
    return out
