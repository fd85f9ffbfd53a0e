"""A real pgBackRest 2.45 repository (PostgreSQL 15 archiving through archive-push), plain and
encrypted, read the way pgproof reads foreign backups: through ``pgbackrest info`` only, the
passphrase through the environment, and the repository's bytes the same before and after."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgproof.backups.errors import SourceError
from pgproof.backups.pgbackrest import InfoError, PgBackRest, PgBackRestSettings
from pgproof.backups.runner import Runner
from tests.support.pgcluster import Cluster, make_cluster, private_dir
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed"),
]
PASSPHRASE = "correct-horse-battery-staple-7"


@dataclass
class Stanzas:
    cluster: Cluster
    plain: Path  # the config pgproof reads with (no passphrase in it)
    encrypted: Path
    repos: tuple[Path, Path]


def as_postgres(*argv: str) -> None:
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]


def conf(root: Path, name: str, cluster: Cluster, cipher: bool) -> tuple[Path, Path, Path]:
    """(the archive's config with the passphrase, pgproof's without it, the repository)."""
    repo = root / f"repo-{name}"
    for sub in (repo, root / "lock", root / "log", root / "spool"):
        sub.mkdir(parents=True, exist_ok=True)
    base = (
        f"[global]\nrepo1-path={repo}\nrepo1-retention-full=2\ncompress-type=gz\nstart-fast=y\n"
        "log-level-console=warn\n"
        f"log-level-file=off\nlock-path={root}/lock\nlog-path={root}/log\n"
        f"spool-path={root}/spool\n"
    )
    stanza = (
        f"\n[main]\npg1-path={cluster.datadir}\npg1-socket-path={cluster.socket_dir}\n"
        f"pg1-port={cluster.port}\n"
    )
    secret = f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PASSPHRASE}\n" if cipher else ""
    full, reader = root / f"{name}.conf", root / f"{name}-reader.conf"
    full.write_text(base + secret + stanza)
    reader.write_text(base + ("repo1-cipher-type=aes-256-cbc\n" if cipher else "") + stanza)
    full.chmod(0o600)
    reader.chmod(0o644)
    subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
    return full, reader, repo


@pytest.fixture(scope="module")
def stanzas() -> Iterator[Stanzas]:
    cluster = make_cluster(15, free_port())
    root = private_dir("pgproof-pgbr-")
    try:
        cluster.initdb(checksums=True)
        plain_full, plain, plain_repo = conf(root, "plain", cluster, cipher=False)
        enc_full, encrypted, enc_repo = conf(root, "enc", cluster, cipher=True)
        # archive into both (the second through a wrapper: archive_command is one command)
        both = root / "pgbackrest-archive-both.sh"  # backup checks the name
        both.write_text(
            "#!/bin/sh\nset -e\n"
            f'pgbackrest --config={plain_full} --stanza=main archive-push "$1"\n'
            f'pgbackrest --config={enc_full} --stanza=main archive-push "$1"\n'
        )
        both.chmod(0o755)
        cluster.set(archive_mode="on", archive_command=f"'{both} %p'")
        cluster.start()
        for full in (plain_full, enc_full):
            as_postgres("pgbackrest", f"--config={full}", "--stanza=main", "stanza-create")
        cluster.pgbench("-i", "-q", "-s", "1")
        for full in (plain_full, enc_full):
            as_postgres("pgbackrest", f"--config={full}", "--stanza=main", "--type=full", "backup")
        yield Stanzas(cluster, plain, encrypted, (plain_repo, enc_repo))
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_info_lists_the_backup_and_the_wal_it_needs(stanzas: Stanzas) -> None:
    before = tree_hash(stanzas.repos[0])
    info = PgBackRest(PgBackRestSettings("main", str(stanzas.plain)), Runner()).info()
    (backup,) = info.backups
    assert backup.type == "full" and backup.pg_major == 15 and not backup.error
    assert backup.start_wal and backup.stop_wal and backup.start_lsn < backup.stop_lsn
    (archive,) = info.archives
    assert archive.first is not None and archive.last is not None
    assert archive.first <= backup.start_wal <= backup.stop_wal <= archive.last
    sysid = stanzas.cluster.sql("select system_identifier::text from pg_control_system()")
    assert backup.system_identifier == sysid[0][0]
    assert tree_hash(stanzas.repos[0]) == before  # read, never written


def test_an_encrypted_repository_reads_with_the_passphrase_from_the_environment(
    stanzas: Stanzas, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree_hash(stanzas.repos[1])
    settings = PgBackRestSettings("main", str(stanzas.encrypted), cipher_pass_env="BR_PASS")
    tool = PgBackRest(settings, Runner())
    assert PASSPHRASE not in " ".join(tool.argv("info"))
    monkeypatch.setenv("BR_PASS", PASSPHRASE)
    info = tool.info()
    assert info.cipher == "aes-256-cbc" and len(info.backups) == 1
    monkeypatch.setenv("BR_PASS", "wrong-passphrase")
    with pytest.raises(SourceError) as wrong:
        tool.info()
    assert "wrong-passphrase" not in str(wrong.value)
    monkeypatch.delenv("BR_PASS")
    with pytest.raises(SourceError, match="BR_PASS is not set"):
        tool.info()
    assert tree_hash(stanzas.repos[1]) == before


def test_a_wrong_stanza_or_config_is_named(stanzas: Stanzas) -> None:
    with pytest.raises(InfoError, match="stanza 'other': missing stanza path"):
        PgBackRest(PgBackRestSettings("other", str(stanzas.plain)), Runner()).info()
    with pytest.raises(SourceError, match="unable to open missing file"):
        PgBackRest(PgBackRestSettings("main", "/nonexistent/pgbackrest.conf"), Runner()).info()
    missing = PgBackRestSettings("main", str(stanzas.plain), binary="/nonexistent/pgbackrest")
    with pytest.raises(SourceError, match="could not start"):
        PgBackRest(missing, Runner()).info()
    assert os.path.exists(stanzas.plain)
