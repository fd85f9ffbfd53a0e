"""What the container sandbox is told (``verifier.container``), without importing the Docker
client: the configuration and every ``pgproof`` command import this module."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pgproof.verifier.errors import EngineUnavailable

DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
PULL_POLICIES = ("missing", "never")
FALLBACK = (
    "set verifier.sandbox: process to restore with this machine's PostgreSQL binaries instead"
)


@dataclass(frozen=True)
class ContainerSettings:
    """``verifier.container`` (and ``verifier.image``, a target's ``image``)."""

    image: str = "postgres:{major}"
    engine: str | None = None  # a DOCKER_HOST URL; None: $DOCKER_HOST, else a default socket
    pull: str = "missing"  # "missing": pull an image the engine lacks; "never": refuse
    memory_mb: int = 1024
    cpus: float = 2.0
    pids: int = 512
    nofile: int = 4096
    nproc: int = 16384
    api_timeout: float = 30.0

    def image_for(self, major: int) -> str:
        return self.image.replace("{major}", str(major))

    def with_image(self, image: str | None) -> ContainerSettings:
        return self if image is None else replace(self, image=image)


def check_image_template(template: str) -> str | None:
    """Why an image template is unusable, or None (pure)."""
    rest = template.replace("{major}", "")
    if not template.strip() or any(c.isspace() for c in template):
        return "must be an image reference without spaces"
    if "{" in rest or "}" in rest:
        return "may use {major} and no other placeholder"
    return None


def engine_url(settings: ContainerSettings, environ: Mapping[str, str]) -> str:
    """The engine to talk to: the configured URL, $DOCKER_HOST, else a default socket."""
    url = settings.engine or environ.get("DOCKER_HOST")
    if url:
        return url
    for path in DEFAULT_SOCKETS:
        if os.path.exists(path):
            return f"unix://{path}"
    raise EngineUnavailable(
        "no container engine: DOCKER_HOST is unset, verifier.container.engine is not set and "
        f"neither {' nor '.join(DEFAULT_SOCKETS)} exists. Start Docker (or `podman system "
        f"service`) and point DOCKER_HOST at it, or {FALLBACK}"
    )
