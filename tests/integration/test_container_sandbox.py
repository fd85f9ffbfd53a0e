"""The container sandbox against a real engine (podman's Docker API, images built from
Debian packages): restore tests pass in containers, fail on the same broken backups as the
process sandbox, and every bad input (engine absent or mute, image missing, wrong major,
container killed mid-restore, container that cannot start, leftovers of a crashed run) gives
a clear verdict with nothing left behind."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgproof.backups import catalog, compression
from pgproof.backups.runner import Runner
from pgproof.verifier.container import ContainerSandbox
from pgproof.verifier.containersettings import ContainerSettings
from pgproof.verifier.errors import SandboxError
from tests.integration.helpers import backup_under_heartbeat, load_json, repos_of, seed
from tests.support.engine import BROKEN_IMAGE, Engine
from tests.support.fixtures import PGPROOF, Setup, destroy_setup, make_setup, s3_env
from tests.support.pgcluster import available_majors, private_dir
from tests.support.serve import serve, wait_for

pytestmark = pytest.mark.integration

IMAGE = "localhost/pgproof-sandbox:{major}"


def use_container(setup: Setup, eng: Engine, **container: Any) -> Path:
    """The setup's verifier runs in containers of the local images; sandboxes go under a
    directory the test can watch."""
    root = setup.config_path.parent / "sandboxes"
    settings = {"engine": eng.url, "pull": "never", "memory_mb": 512, "cpus": 1, **container}

    def change(d: dict[str, Any]) -> None:
        d["verifier"] = {
            "sandbox": "container",
            "image": IMAGE,
            "workdir": str(root),
            "container": settings,
        }

    setup.edit_config(change)
    return root


def verify(setup: Setup, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    proc = setup.pgproof("verify", "--json", *args, timeout=timeout)
    assert proc.stdout, proc.stderr
    return proc.returncode, load_json(proc.stdout), proc.stderr


def assert_nothing_left(engine: Engine, root: Path) -> None:
    assert engine.sandbox_containers() == []
    assert engine.new_volumes() == []
    assert list(root.glob("pgproof-sandbox-*")) == [] if root.exists() else True


@pytest.fixture
def setup15c(setup15: Setup, podman_engine: Engine) -> Iterator[Setup]:
    yield setup15
    assert_nothing_left(podman_engine, setup15.config_path.parent / "sandboxes")


# -- restore tests pass in containers -------------------------------------------------------
def test_physical_pitr_and_logical_pass_in_a_container(
    setup15c: Setup, podman_engine: Engine
) -> None:
    s = setup15c
    seed(s)
    root = use_container(s, podman_engine)
    backup_id = backup_under_heartbeat(s, 5)
    s.pgproof("backup", "logical", check=True)
    before = {r.name: sorted(i.key for i in r.listing("main/backups/")) for r in repos_of(s)}
    code, doc, err = verify(s, "--kind", "physical", "--pitr", "random")
    record = doc["results"][0]
    assert code == 0, (record["cause"], err)
    assert record["backup_id"] == backup_id and record["verdict"] == "passed"
    assert record["sandbox"] == "container"
    assert record["sandbox_image"] == "localhost/pgproof-sandbox:15"
    checks = {c["name"]: c for c in record["checks"]}
    assert {n for n, c in checks.items() if c["verdict"] == "passed"} >= {
        "verifybackup",
        "wal_replay",
        "heartbeat",
        "amcheck",
        "readable",
        "checksums",
    }
    assert record["pitr"]["mode"] == "time" and record["pitr"]["reached_lsn"]
    assert record["pg_version"].startswith("15.")
    code, doc, err = verify(s, "--kind", "logical")
    record = doc["results"][0]
    assert code == 0, (record["cause"], err)
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["row_counts"]["verdict"] == "passed"
    assert checks["restore_errors"]["verdict"] == "passed"
    assert record["sandbox"] == "container"
    after = {r.name: sorted(i.key for i in r.listing("main/backups/")) for r in repos_of(s)}
    assert after == before  # a restore test writes nothing but its record
    assert_nothing_left(podman_engine, root)


def test_image_with_postgres_only_on_path_and_no_zstd(podman_engine: Engine) -> None:
    """PostgreSQL 17 from /opt via PATH; the image has no zstd, so the WAL is handed in
    decompressed; the backup's major picks the image."""
    if 17 not in available_majors():
        pytest.skip("PostgreSQL 17 binaries not installed (scripts/fetch-postgres 17)")
    s = make_setup(17, None)
    try:
        seed(s)
        s.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
        root = use_container(s, podman_engine)
        path_image = "localhost/pgproof-sandbox:{major}-path"
        s.edit_config(lambda d: d["verifier"].update(image=path_image))
        s.pgproof("backup", "physical", check=True)
        s.cluster.sql("create table after_backup as select g from generate_series(1, 5000) g")
        s.wait_archived(s.cluster.switch_wal())
        s.pgproof("backup", "logical", check=True)
        s.edit_config(
            lambda d: d["targets"][0].update(
                checks=[{"name": "after", "sql": "select count(*) = 5000 from after_backup"}]
            )
        )
        code, doc, err = verify(s, "--kind", "physical", "--pitr", "latest")
        record = doc["results"][0]
        assert code == 0, (record["cause"], err)
        assert record["sandbox_image"] == "localhost/pgproof-sandbox:17-path"
        checks = {c["name"]: c["verdict"] for c in record["checks"]}
        assert checks["custom:after"] == checks["wal_replay"] == "passed"
        code, doc, err = verify(s, "--kind", "logical")
        assert code == 0, (doc["results"][0]["cause"], err)
        assert_nothing_left(podman_engine, root)
    finally:
        destroy_setup(s)


def test_container_is_isolated_and_limited(podman_engine: Engine) -> None:
    settings = ContainerSettings(
        image=IMAGE, engine=podman_engine.url, pull="never", memory_mb=300, cpus=0.5, pids=200
    )
    root = private_dir("pgproof-cbox-")
    box = ContainerSandbox(settings, 15, Runner(), str(root))
    try:
        (c,) = [c for c in podman_engine.sandbox_containers() if c["Names"][0] == box.base.name]
        info = json.loads(podman_engine.podman("inspect", c["Id"]))[0]
        host = info["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["Memory"] == 300 << 20 and host["MemorySwap"] == 300 << 20
        assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 200
        assert host["ReadonlyRootfs"] is True
        assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or [])
        ident = Runner().postgres_identity()
        assert ident is not None and info["Config"]["User"] == f"{ident.uid}:{ident.gid}"
        box.initdb()
        box.configure(fast=True)
        box.start(timeout=60)
        with box.connect() as conn:
            row = conn.execute("select current_setting('archive_mode'), inet_server_addr()")
            assert row.fetchone() == ("off", None)  # a Unix socket, archiving off
        probe = box._exec(
            ["sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1; id -un; touch /x"],
            timeout=30,
            doing="probing",
            ok_codes=(0, 1),
        )
        lines = probe.stdout.decode().split()
        assert [n for n in lines[:-1]] == ["lo"]  # no interface but loopback
        assert lines[-1] == "postgres" and "Read-only file system" in probe.stderr
        assert box.libraries() >= {"amcheck", "plpgsql"}
        assert box.has_zstd
    finally:
        box.destroy()
    assert_nothing_left(podman_engine, root)


# -- the same broken backups fail in both sandboxes ----------------------------------------
def _resign_base(setup: Setup, backup_id: str) -> None:
    """Change one byte of a relation file inside base.tar.zst and re-sign the repository's
    manifest: only the backup's own backup_manifest (pg_verifybackup) can still tell."""
    prefix = catalog.backup_prefix("main", backup_id)
    for repo in repos_of(setup):
        packed = repo.read_bytes(prefix + "base.tar.zst")
        raw = compression.zstd_decompress_bytes(packed)
        src = tarfile.open(fileobj=io.BytesIO(raw))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as dst:
            done = False
            for member in src.getmembers():
                data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
                if data and not done and member.name.startswith("base/") and len(data) > 8192:
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                    done = True
                dst.addfile(member, io.BytesIO(data) if data is not None else None)
        assert done
        new = compression.zstd_compress_bytes(out.getvalue())
        manifest = json.loads(repo.read_bytes(prefix + "manifest.json"))
        for f in manifest["files"]:
            if f["name"] == "base.tar.zst":
                f["size"], f["sha256"] = len(new), hashlib.sha256(new).hexdigest()
        repo.put_bytes(prefix + "base.tar.zst", new, {"sha256": hashlib.sha256(new).hexdigest()})
        body = json.dumps(manifest).encode()
        repo.put_bytes(prefix + "manifest.json", body, {"sha256": hashlib.sha256(body).hexdigest()})


def _drop_wal(setup: Setup, names: list[str]) -> None:
    for repo in repos_of(setup):
        repo.delete([f"main/wal/{names[1]}.zst"])


BREAKAGES = {
    "base file changed, manifest re-signed": ("physical", _resign_base, "pg_verifybackup"),
    "WAL segment missing": ("physical", _drop_wal, "is missing from the archive"),
    "custom assertion false": ("logical", None, "custom:orders_empty"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_same_broken_backups_fail_in_both_sandboxes(
    setup15c: Setup, podman_engine: Engine, breakage: str
) -> None:
    s = setup15c
    kind, breaker, expected = BREAKAGES[breakage]
    s.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    seed(s)
    backup_id = s.pgproof("backup", kind, check=True).stdout.strip()
    names = []
    for i in range(3):
        s.cluster.sql(f"create table w{i} as select g from generate_series(1, 1000) g")
        names.append(s.cluster.switch_wal())
    s.wait_archived(names[-1])
    time.sleep(0.5)
    if breaker is _resign_base:
        _resign_base(s, backup_id)
    elif breaker is _drop_wal:
        _drop_wal(s, names)
    else:
        s.edit_config(
            lambda d: d["targets"][0].update(
                checks=[{"name": "orders_empty", "sql": "select count(*) = 0 from orders"}]
            )
        )
    outcomes = {}
    for sandbox in ("process", "container"):
        if sandbox == "container":
            use_container(s, podman_engine)
        code, doc, err = verify(s, "--kind", kind)
        record = doc["results"][0]
        assert record["sandbox"] == sandbox
        outcomes[sandbox] = (code, record["verdict"], expected in record["cause"])
        assert outcomes[sandbox] == (1, "failed", True), (sandbox, record["cause"], err)
    assert outcomes["process"] == outcomes["container"]


# -- bad input -------------------------------------------------------------------------------
def _physical_backup(setup: Setup) -> str:
    setup.edit_config(lambda d: d["targets"][0].update(heartbeat={"enabled": False}))
    seed(setup)
    backup_id = setup.pgproof("backup", "physical", check=True).stdout.strip()
    setup.wait_archived(setup.cluster.switch_wal())
    return backup_id


@contextlib.contextmanager
def mute_engine() -> Iterator[str]:
    """A Unix socket that accepts connections and never answers (a hung engine)."""
    work = Path(tempfile.mkdtemp(prefix="pgproof-mute-"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(work / "engine.sock"))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"unix://{work / 'engine.sock'}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
        shutil.rmtree(work, ignore_errors=True)


def test_engine_absent_or_mute_is_a_clear_error_never_a_hang(
    setup15c: Setup, podman_engine: Engine
) -> None:
    s = setup15c
    _physical_backup(s)
    root = use_container(s, podman_engine, engine=None)
    env_without = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    # no DOCKER_HOST, no engine configured, no default socket on this machine
    assert not any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/podman/podman.sock"))
    began = time.monotonic()
    proc = subprocess.run(
        [PGPROOF, "--config", str(s.config_path), "verify", "--kind", "physical", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env_without, **s3_env()},
        check=False,
    )
    record = load_json(proc.stdout)["results"][0]
    assert proc.returncode == 1 and record["verdict"] == "error"
    assert "no container engine: DOCKER_HOST is unset" in record["cause"]
    assert "verifier.sandbox: process" in record["cause"]
    assert time.monotonic() - began < 60
    # an engine socket that accepts and never answers: bounded by api_timeout
    with mute_engine() as url:
        use_container(s, podman_engine, engine=url, api_timeout="2s")
        began = time.monotonic()
        code, doc, _ = verify(s, "--kind", "physical", timeout=120)
        took = time.monotonic() - began
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "error"
    assert f"the container engine at {url} does not answer" in record["cause"]
    assert "verifier.sandbox: process" in record["cause"]
    assert took < 30, took
    # nothing was lost: the backup is still there and still restores once the engine is back
    use_container(s, podman_engine)
    code, doc, _ = verify(s, "--kind", "physical")
    assert code == 0, doc["results"][0]["cause"]
    assert_nothing_left(podman_engine, root)


def _error_with_image(s: Setup, eng: Engine, image: str) -> dict[str, Any]:
    """The record of a restore test of a fresh physical backup with the target's image set."""
    _physical_backup(s)
    use_container(s, eng)
    s.edit_config(lambda d: d["targets"][0].update(image=image))
    code, doc, _ = verify(s, "--kind", "physical", timeout=300)
    record: dict[str, Any] = doc["results"][0]
    assert code == 1 and record["verdict"] == "error", record
    return record


def test_missing_image_is_named(setup15c: Setup, podman_engine: Engine) -> None:
    cause = _error_with_image(setup15c, podman_engine, "localhost/pgproof-missing:{major}")["cause"]
    assert "image localhost/pgproof-missing:15 is not in the container engine" in cause
    assert "pull is never" in cause
    # pull: missing asks the registry, which has no such image (here: no registry at all)
    setup15c.edit_config(lambda d: d["verifier"]["container"].update(pull="missing"))
    code, doc, _ = verify(setup15c, "--kind", "physical", timeout=300)
    record = doc["results"][0]
    assert code == 1 and record["verdict"] == "error"
    assert (
        "image localhost/pgproof-missing:15 is not in the container engine and could not be pulled"
        in record["cause"]
    )


def test_image_of_another_major_is_refused(setup15c: Setup, podman_engine: Engine) -> None:
    cause = _error_with_image(setup15c, podman_engine, "localhost/pgproof-sandbox:17-path")["cause"]
    assert "runs postgres (PostgreSQL) 17" in cause
    assert "this backup needs PostgreSQL 15" in cause


def test_container_that_cannot_start_puts_its_log_in_the_record(
    setup15c: Setup, podman_engine: Engine
) -> None:
    cause = _error_with_image(setup15c, podman_engine, BROKEN_IMAGE)["cause"]
    assert "exited as soon as it started (exit code 3)" in cause
    assert "broken image: this container cannot run anything" in cause


def _start_verify(setup: Setup) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PGPROOF, "--config", str(setup.config_path), "verify", "--kind", "physical", "--json"],
        env=dict(os.environ, **s3_env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_replay(root: Path, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for box in root.glob("pgproof-sandbox-*"):
            with contextlib.suppress(OSError):
                if "restored log file" in (box / "server.log").read_text():
                    return box
        time.sleep(0.02)
    raise AssertionError("the sandbox never began replaying WAL")


def _slow_replay(setup: Setup, eng: Engine) -> Path:
    """A physical backup followed by ~100 MB of WAL, replayed on a third of a CPU: a restore
    test that stays in WAL replay for seconds. Returns the sandboxes' directory."""
    _physical_backup(setup)
    for i in range(6):
        setup.cluster.sql(
            f"create table bulk{i} as select g, md5(g::text) from generate_series(1, 150000) g"
        )
    setup.wait_archived(setup.cluster.switch_wal())
    return use_container(setup, eng, cpus=0.3)


def test_container_killed_mid_restore_is_an_error_and_removed(
    setup15c: Setup, podman_engine: Engine
) -> None:
    s = setup15c
    root = _slow_replay(s, podman_engine)
    proc = _start_verify(s)
    box = _wait_for_replay(root, proc)
    (victim,) = [c for c in podman_engine.sandbox_containers() if c["Names"][0] == box.name]
    podman_engine.podman("kill", victim["Id"])
    out, _ = proc.communicate(timeout=180)
    record = json.loads(out)["results"][0]
    assert proc.returncode == 1 and record["verdict"] == "error", record
    assert "the sandbox container stopped" in record["cause"], record["cause"]
    assert_nothing_left(podman_engine, root)


def _crash_mid_replay(s: Setup, eng: Engine, root: Path) -> Path:
    """A verify killed outright (no clean-up at all) during WAL replay; its sandbox."""
    proc = _start_verify(s)
    box = _wait_for_replay(root, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    left = [c for c in eng.sandbox_containers() if c["Names"][0] == box.name]
    assert left and box.exists()  # what a crash leaves behind
    return box


def test_leftovers_of_a_crashed_run_are_removed_by_the_next(
    setup15c: Setup, podman_engine: Engine
) -> None:
    s = setup15c
    root = _slow_replay(s, podman_engine)
    _crash_mid_replay(s, podman_engine, root)
    use_container(s, podman_engine)
    code, doc, _ = verify(s, "--kind", "physical")
    assert code == 0, doc["results"][0]["cause"]
    assert_nothing_left(podman_engine, root)
    # `serve` removes them when it starts
    use_container(s, podman_engine, cpus=0.3)
    box = _crash_mid_replay(s, podman_engine, root)
    with serve(s.config_path, env=s3_env()) as served:
        wait_for(lambda: not podman_engine.sandbox_containers() and not box.exists())
        assert "removed sandboxes left by a killed run" in served.log()
    assert_nothing_left(podman_engine, root)


def test_sandbox_errors_name_the_engine_fallback() -> None:
    """No engine reachable through the API client itself: a refused socket."""
    work = private_dir("pgproof-noengine-")
    settings = ContainerSettings(engine=f"unix://{work}/absent.sock", api_timeout=2)
    with pytest.raises(SandboxError, match="does not answer.*verifier.sandbox: process"):
        ContainerSandbox(dataclasses.replace(settings), 15, Runner(), str(work))
    assert list(work.glob("pgproof-sandbox-*")) == []


def test_image_without_the_major_is_named(podman_engine: Engine) -> None:
    """The Debian PostgreSQL 15 image asked for a 16 backup: no /usr/lib/postgresql/16/bin
    and no postgres on PATH."""
    settings = ContainerSettings(
        image="localhost/pgproof-sandbox:15", engine=podman_engine.url, pull="never"
    )
    root = private_dir("pgproof-nomajor-")
    with pytest.raises(SandboxError) as info:
        ContainerSandbox(settings, 16, Runner(), str(root))
    assert "image localhost/pgproof-sandbox:15: no PostgreSQL server in the image" in str(
        info.value
    )
    assert "/usr/lib/postgresql/16/bin/postgres nor postgres on PATH" in str(info.value)
    assert_nothing_left(podman_engine, root)
