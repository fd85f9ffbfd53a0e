"""The container engine (Docker, or podman's Docker API), and the one boundary of its errors.

Every call to the engine goes through :func:`engine_calls`: an answer refusing the call
becomes the ``SandboxError`` saying what could not be done, anything else the client raises
(no answer, a refused connection, a timeout) ``EngineUnavailable``. A client is made only
after a bounded check that the engine answers (the Docker client would wait, or leak the
socket of a refused connection). :func:`reap` removes the containers of sandboxes whose
owning process died.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator

import docker
import docker.errors
import requests.exceptions

from pgproof.backups import process
from pgproof.verifier.containersettings import FALLBACK, ContainerSettings, engine_url
from pgproof.verifier.errors import EngineUnavailable, SandboxError

LABEL = "org.pgproof.sandbox"  # value: the sandbox directory
LABEL_HOST = "org.pgproof.host"
LABEL_PID = "org.pgproof.pid"
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _preflight(url: str, timeout: float) -> None:
    """Is an engine answering at ``url``? Asked on a socket of our own, closed whatever
    happens (the Docker client leaks the socket of a refused connection) and bounded by
    ``timeout`` (an engine that accepts and never answers is an error, not a hang)."""
    parsed = urllib.parse.urlparse(url)
    address: str | tuple[str, int]
    if parsed.scheme == "unix":
        family, address, speak_http = socket.AF_UNIX, parsed.path, True
    elif parsed.scheme in ("tcp", "http", "https") and parsed.hostname:
        tls = parsed.scheme == "https" or bool(os.environ.get("DOCKER_TLS_VERIFY"))
        port = parsed.port or (2376 if tls else 2375)
        family, address, speak_http = socket.AF_INET, (parsed.hostname, port), not tls
        if ":" in parsed.hostname:
            family = socket.AF_INET6
    else:  # ssh://, npipe://: left to the client
        return
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        if speak_http:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            if not sock.recv(64).startswith(b"HTTP/"):
                raise OSError("the socket does not speak HTTP")


def make_client(settings: ContainerSettings) -> docker.DockerClient:
    """A client of the configured engine, after a bounded check that it answers."""
    url = engine_url(settings, os.environ)
    try:
        _preflight(url, settings.api_timeout)
    except OSError as exc:
        raise _engine_error(settings, exc) from None
    with engine_calls(settings):
        # from_env: DOCKER_TLS_VERIFY / DOCKER_CERT_PATH apply as they would to docker(1)
        return docker.from_env(
            environment={**os.environ, "DOCKER_HOST": url},
            timeout=max(1, round(settings.api_timeout)),
        )


@contextlib.contextmanager
def engine_calls(
    settings: ContainerSettings,
    refused: Callable[[docker.errors.APIError], Exception] | None = None,
) -> Iterator[None]:
    """The one boundary of the engine's errors: an answer refusing the call becomes
    ``refused(exc)`` when given (the SandboxError saying what could not be done); anything
    else the client raises (no answer, a refused connection, a timeout) EngineUnavailable."""
    try:
        yield
    except docker.errors.APIError as exc:
        if refused is None:
            raise _engine_error(settings, exc) from None
        raise refused(exc) from None
    except _ENGINE_ERRORS as exc:
        raise _engine_error(settings, exc) from None


def _engine_error(settings: ContainerSettings, exc: BaseException) -> EngineUnavailable:
    url = settings.engine or os.environ.get("DOCKER_HOST") or "the default socket"
    if isinstance(exc, TimeoutError | socket.timeout):
        detail = f"no answer within {settings.api_timeout:g} s"
    else:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return EngineUnavailable(
        f"the container engine at {url} does not answer ({detail[:300]}); {FALLBACK}"
    )


def explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc).strip() or type(exc).__name__


def ensure_image(client: docker.DockerClient, settings: ContainerSettings, image: str) -> None:
    """The image is in the engine, pulled when missing unless the pull policy is ``never``."""
    with engine_calls(settings):
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
    if settings.pull == "never":
        raise SandboxError(
            f"image {image} is not in the container engine and "
            "verifier.container.pull is never: pull or build it first, or set "
            "verifier.image (or the target's image) to one that exists"
        )

    def not_pulled(exc: docker.errors.APIError) -> SandboxError:
        return SandboxError(
            f"image {image} is not in the container engine and could not be pulled: {explain(exc)}"
        )

    with engine_calls(settings, not_pulled):
        client.images.pull(image)


def reap(settings: ContainerSettings) -> list[str]:
    """Remove sandbox containers (and their volumes) whose owning process on this host is
    gone; returns their names. Raises EngineUnavailable when no engine answers."""
    client = make_client(settings)
    removed: list[str] = []
    try:
        with engine_calls(settings):
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                labels = container.labels or {}
                if labels.get(LABEL_HOST) != socket.gethostname():
                    continue
                try:
                    pid = int(labels.get(LABEL_PID, "0"))
                except ValueError:
                    pid = 0
                if pid > 0 and process.alive(pid):
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                    removed.append(container.name or container.id or "?")
    finally:
        client.close()
    return removed
