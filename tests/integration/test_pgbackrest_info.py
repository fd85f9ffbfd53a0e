"""A real pgBackRest 2.45 repository (PostgreSQL 15 archiving through archive-push), plain and
encrypted, read the way pgproof reads foreign backups: through ``pgbackrest info`` only, the
passphrase through the environment, and the repository's bytes the same before and after."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from pgproof.backups.errors import SourceError
from pgproof.backups.pgbackrest import InfoError, PgBackRest
from pgproof.backups.runner import Runner
from pgproof.backups.settings import PgBackRestSettings
from tests.support.pgbackrest import PASSPHRASE, Stanzas, pgbackrest_stanzas, tree_hash

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed"),
]


@pytest.fixture(scope="module")
def stanzas() -> Iterator[Stanzas]:
    with pgbackrest_stanzas() as found:
        found.backup()
        yield found


def test_info_lists_the_backup_and_the_wal_it_needs(stanzas: Stanzas) -> None:
    before = tree_hash(stanzas.repos[0])
    with PgBackRest(PgBackRestSettings("main", str(stanzas.plain)), Runner()) as tool:
        info = tool.info()
    assert not os.path.exists(tool.private)  # its private lock directory went with it
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
    request_private = tool.private
    assert PASSPHRASE not in " ".join(tool.argv("info"))
    monkeypatch.setenv("BR_PASS", PASSPHRASE)
    info = tool.info()
    assert info.cipher == "aes-256-cbc" and len(info.backups) == 1
    monkeypatch.setenv("BR_PASS", "wrong-passphrase")
    with pytest.raises(SourceError, match="cannot decrypt the repository's backup.info") as wrong:
        tool.info()
    assert "wrong-passphrase" not in str(wrong.value) and "BR_PASS" in str(wrong.value)
    monkeypatch.delenv("BR_PASS")
    with pytest.raises(SourceError, match="BR_PASS is not set"):
        tool.info()
    tool.close()
    assert not os.path.exists(request_private)
    assert tree_hash(stanzas.repos[1]) == before


def test_a_wrong_stanza_or_config_is_named(stanzas: Stanzas) -> None:
    def info(settings: PgBackRestSettings) -> None:
        with PgBackRest(settings, Runner()) as tool:
            tool.info()

    with pytest.raises(InfoError, match="stanza 'other': missing stanza path"):
        info(PgBackRestSettings("other", str(stanzas.plain)))
    with pytest.raises(SourceError, match="unable to open missing file"):
        info(PgBackRestSettings("main", "/nonexistent/pgbackrest.conf"))
    with pytest.raises(SourceError, match="could not start"):
        info(PgBackRestSettings("main", str(stanzas.plain), binary="/nonexistent/pgbackrest"))
