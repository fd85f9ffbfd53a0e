"""A real container engine for the container-sandbox tests: podman's Docker-compatible API
(``podman system service``) on pgproof's private store (scripts/podman), with the images of
scripts/build-sandbox-images. No network settings of the host are touched: containers run
with ``--network none`` and publish no port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PODMAN = str(REPO / "scripts" / "podman")
IMAGES = ("localhost/pgproof-sandbox:15", "localhost/pgproof-sandbox:17-path")
BROKEN_IMAGE = "localhost/pgproof-broken:1"
LABEL = "org.pgproof.sandbox"


@dataclass
class Engine:
    url: str  # DOCKER_HOST
    proc: subprocess.Popen[bytes]
    work: Path
    baseline_volumes: frozenset[str] = frozenset()

    def podman(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [PODMAN, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def sandbox_containers(self) -> list[dict[str, Any]]:
        out = self.podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "json")
        return list(json.loads(out or "[]"))

    def volumes(self) -> list[str]:
        return self.podman("volume", "ls", "--format", "{{.Name}}").split()

    def new_volumes(self) -> list[str]:
        """Volumes made since the engine started (by the tests)."""
        return [v for v in self.volumes() if v not in self.baseline_volumes]


def _image_exists(name: str) -> bool:
    return subprocess.run([PODMAN, "image", "exists", name], check=False).returncode == 0


@contextlib.contextmanager
def podman_service() -> Iterator[Engine]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup installs it)")
    if not all(_image_exists(i) for i in (*IMAGES, BROKEN_IMAGE)):
        subprocess.run([str(REPO / "scripts" / "build-sandbox-images")], check=True, timeout=1200)
    work = Path(tempfile.mkdtemp(prefix="pgproof-podman-"))
    sock = work / "podman.sock"
    log = (work / "service.log").open("wb")
    proc = subprocess.Popen(
        [PODMAN, "system", "service", "--time=0", f"unix://{sock}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(f"unix://{sock}", proc, work)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"podman system service did not start: {(work / 'service.log').read_text()}"
                )
            time.sleep(0.05)
        engine.baseline_volumes = frozenset(engine.volumes())
        yield engine
    finally:
        with contextlib.suppress(Exception):  # whatever a failed test left behind
            for c in engine.sandbox_containers():
                engine.podman("rm", "-f", "-v", c["Id"], check=False)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[Engine]:
    with podman_service() as engine:
        yield engine
