"""The verifier's bad inputs: each gives a failed (or error) verdict that names the cause."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgproof.backups import catalog, compression, pgbin, process
from pgproof.backups.runner import Runner
from pgproof.verifier.errors import SandboxError
from pgproof.verifier.processsandbox import ProcessSandbox
from tests.integration.helpers import load_json, repos_of, seed
from tests.support.fixtures import PGPROOF, Setup, s3_env, small_tmpfs
from tests.support.pgcluster import make_cluster, private_dir
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def verify(setup: Setup, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = setup.pgproof("verify", "--kind", "physical", "--json", *args)
    return proc.returncode, load_json(proc.stdout) if proc.stdout else {}, proc.stderr


def physical_with_wal(setup: Setup, segments: int = 3) -> tuple[str, list[str]]:
    setup.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    seed(setup)
    backup_id = setup.pgproof("backup", "physical", check=True).stdout.strip()
    names = []
    for i in range(segments):
        setup.cluster.sql(f"create table w{i} as select g from generate_series(1, 1000) g")
        names.append(setup.cluster.switch_wal())
    setup.wait_archived(names[-1])
    time.sleep(0.5)
    return backup_id, names


def sandboxes(setup: Setup) -> list[Path]:
    root = setup.config_path.parent / "sandboxes"
    return sorted(root.glob("pgproof-sandbox-*")) if root.exists() else []


def use_sandbox_dir(setup: Setup, path: Path | None = None) -> Path:
    root = path or setup.config_path.parent / "sandboxes"
    setup.edit_config(lambda d: d.setdefault("verifier", {}).update(workdir=str(root)))
    return root


def test_truncated_base_backup_fails_naming_the_file(setup15: Setup) -> None:
    backup_id, _ = physical_with_wal(setup15, 1)
    key = catalog.backup_prefix("main", backup_id) + "base.tar.zst"
    for repo in repos_of(setup15):
        repo.put_bytes(key, repo.read_bytes(key)[:100_000])
    code, doc, _ = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "failed"
    assert (
        "file base.tar.zst has 100000 bytes" in record["cause"] and "truncated" in record["cause"]
    )


def test_missing_wal_segment_fails_naming_it(setup15: Setup) -> None:
    _, names = physical_with_wal(setup15, 3)
    victim = names[1]
    for repo in repos_of(setup15):
        repo.delete([f"main/wal/{victim}.zst"])
    code, doc, _ = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "failed"
    assert f"WAL segment {victim} is missing from the archive" in record["cause"]


def test_wal_segment_of_another_cluster_fails(setup15: Setup) -> None:
    _, names = physical_with_wal(setup15, 3)
    other = make_cluster(15, free_port())
    try:
        other.initdb()
        other.start()
        first = other.switch_wal()
        foreign = (other.datadir / "pg_wal" / first).read_bytes()
    finally:
        other.destroy()
    victim = names[1]
    payload = compression.zstd_compress_bytes(foreign)
    meta = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "source-sha256": hashlib.sha256(foreign).hexdigest(),
        "source-size": str(len(foreign)),
    }
    for repo in repos_of(setup15):
        repo.put_bytes(f"main/wal/{victim}.zst", payload, meta)
    code, doc, _ = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "failed"
    assert f"WAL segment {victim} belongs to another cluster" in record["cause"]


def test_pitr_target_before_the_backup_is_a_clear_error(setup15: Setup) -> None:
    physical_with_wal(setup15, 1)
    code, doc, err = verify(setup15, "--pitr", "2020-01-01T00:00:00Z")
    assert code == 2 and not doc
    assert "PITR target 2020-01-01T00:00:00+00:00 is before the backup's end" in err
    code, _, err = verify(setup15, "--pitr", "yesterday-ish")
    assert code == 2 and "not a timestamp" in err


def test_production_archive_command_is_neutralised(setup15: Setup) -> None:
    sentinel = private_dir("pgproof-prod-archive-")
    # in postgresql.auto.conf of the source (not reloaded): the backup carries it
    setup15.cluster.sql(f"alter system set archive_command = 'cp %p {sentinel}/%f'")
    setup15.cluster.sql("alter system set shared_preload_libraries = 'no_such_library'")
    physical_with_wal(setup15, 2)
    archive_before = {
        r.name: sorted((i.key, i.size) for i in r.listing("main/wal/")) for r in repos_of(setup15)
    }
    code, doc, _ = verify(setup15)
    record = doc["results"][0]
    assert code == 0, record["cause"]
    assert list(sentinel.iterdir()) == []  # the restored cluster archived nothing anywhere
    archive_after = {
        r.name: sorted((i.key, i.size) for i in r.listing("main/wal/")) for r in repos_of(setup15)
    }
    assert archive_after == archive_before


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    with small_tmpfs("12m") as mount_point:
        yield mount_point


def test_sandbox_disk_filling_up_is_an_error_and_cleaned(setup15: Setup, tiny_disk: Path) -> None:
    physical_with_wal(setup15, 1)
    use_sandbox_dir(setup15, tiny_disk)
    code, doc, err = verify(setup15)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "error", err
    assert "No space left on device" in record["cause"]
    # where, and how much: the sandbox's directory, its filesystem and the backup's size
    assert "ran out of disk space" in record["cause"] and str(tiny_disk) in record["cause"]
    assert "restores to about" in record["cause"], record["cause"]
    assert list(tiny_disk.glob("pgproof-sandbox-*")) == []


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Verify runs started in the background; killed and reaped whatever the test did."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def start_verify(setup: Setup, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PGPROOF, "--config", str(setup.config_path), "verify", "--kind", "physical"],
        env=dict(os.environ, **s3_env()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(proc)
    return proc


def wait_for_server(setup: Setup, proc: subprocess.Popen[bytes]) -> tuple[Path, int]:
    """The sandbox and its postmaster's PID, once postmaster.pid is written (the server
    creates the file before it writes its first line)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for box in sandboxes(setup):
            pid = postmaster_pid(box)
            if pid is not None:
                return box, pid
        time.sleep(0.05)
    raise AssertionError("the sandbox server never started")


def postmaster_pid(box: Path) -> int | None:
    try:
        first = (box / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def test_sigterm_removes_the_sandbox(
    setup15: Setup, background: list[subprocess.Popen[bytes]]
) -> None:
    physical_with_wal(setup15, 1)
    use_sandbox_dir(setup15)
    proc = start_verify(setup15, background)
    box, pid = wait_for_server(setup15, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert not box.exists() and not process.alive(pid)


def test_leftovers_of_a_killed_run_are_removed_by_the_next(
    setup15: Setup, background: list[subprocess.Popen[bytes]]
) -> None:
    physical_with_wal(setup15, 1)
    use_sandbox_dir(setup15)
    proc = start_verify(setup15, background)
    box, pid = wait_for_server(setup15, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert box.exists() and process.alive(pid)  # what a crash leaves behind
    code, doc, _ = verify(setup15)
    assert code == 0, doc["results"][0]["cause"]
    assert not box.exists() and not process.alive(pid)
    assert sandboxes(setup15) == []


def test_sandboxes_do_not_collide_and_a_taken_socket_is_an_error() -> None:
    runner = Runner()
    bins = pgbin.find(15, runner)
    root = str(private_dir("pgproof-sbx-"))
    a, b = ProcessSandbox(bins, runner, root), ProcessSandbox(bins, runner, root)
    try:
        for box in (a, b):
            box.initdb()
            box.configure(fast=True)
            box.start(timeout=60)  # both run at once: each has its own private socket
        with a.connect() as conn, b.connect() as conn2:
            assert conn.execute("select 1").fetchone() == conn2.execute("select 1").fetchone()
        c = ProcessSandbox(bins, runner, root)
        try:
            c.initdb()
            c.configure(fast=True)
            conf = c.data_dir / "postgresql.conf"  # force the socket of a running sandbox
            conf.write_text(conf.read_text().replace(c.socket_dir, a.socket_dir))
            with pytest.raises(SandboxError, match="sandbox"):
                c.start(timeout=30)
        finally:
            c.destroy()
        with a.connect() as conn:  # the running one is unharmed
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        a.destroy()
        b.destroy()
    assert not any(Path(root).iterdir())


def test_sandbox_server_runs_under_resource_limits() -> None:
    runner = Runner()
    box = ProcessSandbox(pgbin.find(15, runner), runner, str(private_dir("pgproof-lim-")))
    try:
        box.initdb()
        box.configure(fast=True)
        box.start(timeout=60)
        pid = postmaster_pid(box.base)
        assert pid is not None
        limits = Path(f"/proc/{pid}/limits").read_text()
        lines = {line[:26].strip(): line[26:].split() for line in limits.splitlines()[1:]}
        assert lines["Max address space"][0] == str(4096 * 1024 * 1024)
        assert lines["Max core file size"][0] == "0"
        assert lines["Max file size"][0] == str(4 << 30)
    finally:
        box.destroy()
