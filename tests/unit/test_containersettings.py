"""The container sandbox's settings: image templates and engine discovery (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgproof.verifier import containersettings
from pgproof.verifier.containersettings import ContainerSettings, check_image_template, engine_url
from pgproof.verifier.errors import EngineUnavailable


def test_image_template() -> None:
    assert ContainerSettings().image_for(17) == "postgres:17"
    assert ContainerSettings(image="acme/pg:{major}-postgis").image_for(15) == "acme/pg:15-postgis"
    assert (
        ContainerSettings(image="acme/pg:16").image_for(15) == "acme/pg:16"
    )  # fixed: checked later
    assert check_image_template("postgres:{major}") is None
    assert "placeholder" in (check_image_template("postgres:{version}") or "")
    assert "spaces" in (check_image_template("postgres: 15") or "")
    assert check_image_template("") is not None
    base = ContainerSettings(memory_mb=2048)
    assert base.with_image(None) is base
    assert (
        base.with_image("x:{major}").image == "x:{major}" and base.with_image("x").memory_mb == 2048
    )


def test_engine_url_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configured = ContainerSettings(engine="unix:///run/podman/podman.sock")
    assert engine_url(configured, {"DOCKER_HOST": "tcp://elsewhere:2375"}) == configured.engine
    assert engine_url(ContainerSettings(), {"DOCKER_HOST": "tcp://h:2375"}) == "tcp://h:2375"
    sock = tmp_path / "docker.sock"
    sock.touch()
    monkeypatch.setattr(containersettings, "DEFAULT_SOCKETS", (str(tmp_path / "none"), str(sock)))
    assert engine_url(ContainerSettings(), {}) == f"unix://{sock}"
    sock.unlink()
    with pytest.raises(EngineUnavailable) as info:
        engine_url(ContainerSettings(), {})
    message = str(info.value)
    assert "DOCKER_HOST is unset" in message and "verifier.sandbox: process" in message
