"""docker-compose.yml and the files it mounts: valid for docker-compose, Prometheus,
Alertmanager and pgproof itself (there is no container engine here to run the stack)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pgproof import config as config_mod

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not installed (scripts/setup installs it)")
    return found


def test_docker_compose_config_accepts_the_stack() -> None:
    proc = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    services = resolved["services"]
    assert set(services) >= {
        "source",
        "pgproof",
        "minio",
        "prometheus",
        "alertmanager",
        "grafana",
        "mailpit",
    }
    assert "wal-push" in " ".join(services["source"]["command"])
    assert services["pgproof"]["command"][:2] == ["pgproof", "serve"]
    # every file or folder a service mounts from the repository exists
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
    for port in (p for s in services.values() for p in s.get("ports", [])):
        host_ip = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"published beyond loopback: {port}"


def test_prometheus_and_alertmanager_configs_are_valid() -> None:
    proc = subprocess.run(
        [_tool("promtool"), "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [_tool("amtool"), "check-config", str(ROOT / "deploy" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_stack_s_pgproof_config_is_valid() -> None:
    cfg = config_mod.load(str(ROOT / "deploy" / "pgproof.yaml"))
    assert [t.name for t in cfg.targets] == ["app"]
    assert cfg.alerts.email is not None and cfg.alerts.email.host == "mailpit"
