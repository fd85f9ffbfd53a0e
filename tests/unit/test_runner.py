from __future__ import annotations

import os
import time

import pytest

from pgproof.backups import pgbin
from pgproof.backups.errors import BinaryNotFound, CommandError, CommandTimeout
from pgproof.backups.redact import MASK, redact
from pgproof.backups.runner import Runner


def test_captures_output_and_exit_codes() -> None:
    res = Runner().run(["sh", "-c", "echo out; echo err >&2; exit 3"], ok_codes=(3,))
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", "err\n")


def test_failure_carries_redacted_stderr_tail() -> None:
    runner = Runner(secrets=("hunter2-secret",))
    script = "echo 'FATAL: password hunter2-secret rejected for password=abc' >&2; exit 1"
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", script, "password=shown-in-argv"])
    text = str(info.value)
    assert "hunter2-secret" not in text and "abc" not in text and MASK in text
    assert info.value.returncode == 1 and "rejected" in info.value.stderr_tail
    assert "shown-in-argv" not in " ".join(info.value.argv)


def test_timeout_kills_the_process_group() -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="timed out after 0.5 s"):
        Runner().run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10


def test_streaming_timeout_and_failure() -> None:
    runner = Runner()
    with pytest.raises(CommandTimeout):
        with runner.stream(["sh", "-c", "sleep 30"], timeout=0.5) as cmd:
            cmd.stdout.read()
    with pytest.raises(CommandError, match="boom"):
        with runner.stream(["sh", "-c", "echo data; echo boom >&2; exit 2"]) as cmd:
            assert cmd.stdout.read() == b"data\n"


def test_missing_program_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="could not start"):
        Runner().run(["/nonexistent/pg_dump"])


def test_postgres_binaries_run_as_postgres_when_root() -> None:
    runner = Runner()
    out = runner.run(["id", "-un"], as_postgres=True).stdout.decode().strip()
    assert out == ("postgres" if os.geteuid() == 0 else os.environ.get("USER", out))
    assert runner.run(["id", "-un"]).stdout.decode().strip() != "postgres" or os.geteuid() != 0


def test_redact_conninfo_and_uri() -> None:
    assert redact("host=x password='a b' user=y") == f"host=x password={MASK} user=y"
    assert redact("postgresql://u:pw@h/db") == f"postgresql://u:{MASK}@h/db"


def test_binary_discovery(tmp_path: pytest.TempPathFactory) -> None:
    runner = Runner()
    majors = pgbin.installed_majors()
    if not majors:
        pytest.skip("no PostgreSQL binaries installed")
    found = pgbin.find(majors[0], runner)
    assert found.major == majors[0] and os.path.exists(found.path("pg_dump"))
    assert pgbin.find_at_least(majors[0], runner).major == majors[-1]
    with pytest.raises(BinaryNotFound, match="looked in .*/usr/lib/postgresql/99/bin"):
        pgbin.find(99, runner)
    configured = pgbin.find(majors[0], runner, configured=str(found.bin_dir))
    assert configured.bin_dir == found.bin_dir
    assert pgbin.parse_version_output("pg_dump (PostgreSQL) 17.11") == (17, 11)
