"""The read-only HTTP endpoint: ``/metrics``, ``/healthz`` and whatever else the service adds.

Basic auth and TLS come from a web-config file (``exporters.webconfig``), re-read when it
changes (a broken edit is logged and the previous settings stay). The TLS handshake happens in
the connection's own thread, so a slow client cannot hold up the others.
"""

from __future__ import annotations

import base64
import gzip
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporters import webconfig
from exporters.errors import ListenError, WebConfigError

log = logging.getLogger("pgproof.http")


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    path: str
    query: str
    headers: Mapping[str, str]


Handler = Callable[[Request], Response]


def metrics_handler(registry: CollectorRegistry) -> Handler:
    def handle(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, content_type, encoder(registry))

    return handle


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    endpoint: HttpEndpoint

    def finish_request(self, request: Any, client_address: Any) -> None:
        ctx = self.endpoint.tls_context()
        if ctx is not None:
            request.settimeout(10)
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.info("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpEndpoint:
    def __init__(
        self,
        listen: str,
        routes: Mapping[str, Handler],
        web_config_file: str | None = None,
        prefix_routes: Mapping[str, Handler] | None = None,
    ):
        self.routes = dict(routes)
        self.prefix_routes = dict(prefix_routes or {})
        self.web_config_file = web_config_file
        self._config = webconfig.WebConfig()
        self._config_stamp: tuple[int, int] | None = None
        self._auth = webconfig.Authenticator({})
        self._config_lock = threading.Lock()
        if web_config_file:
            self._reload(initial=True)
        host, port = parse_listen(listen)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server = server_class((host, port), _make_handler(self))
        except OSError as exc:
            raise ListenError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.server.endpoint = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self._config.tls is not None else "http"

    def _reload(self, initial: bool = False) -> None:
        assert self.web_config_file
        try:
            st = os.stat(self.web_config_file)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError as exc:
            if initial:
                raise WebConfigError(
                    f"cannot read web config {self.web_config_file}: {exc.strerror}"
                ) from None
            return
        if stamp == self._config_stamp:
            return
        try:
            config = webconfig.load(self.web_config_file)
        except WebConfigError as exc:
            if initial:
                raise
            log.error("web config not reloaded, keeping the previous one: %s", exc)
            self._config_stamp = stamp
            return
        self._config = config
        self._auth = webconfig.Authenticator(config.users)
        self._config_stamp = stamp

    def current(self) -> tuple[webconfig.WebConfig, webconfig.Authenticator]:
        if self.web_config_file:
            with self._config_lock:
                self._reload()
        return self._config, self._auth

    def tls_context(self) -> ssl.SSLContext | None:
        return self.current()[0].tls

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="pgproof-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def route(self, path: str) -> Handler | None:
        if path in self.routes:
            return self.routes[path]
        for prefix, handler in self.prefix_routes.items():
            if path.startswith(prefix):
                return handler
        return None


def _make_handler(endpoint: HttpEndpoint) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        server_version = "pgproof"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            log.debug("%s " + format, self.client_address[0], *args)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            config, auth = endpoint.current()
            if auth.enabled and not self._authorized(auth):
                self._send(
                    Response(
                        401,
                        "text/plain; charset=utf-8",
                        b"Unauthorized\n",
                        {"WWW-Authenticate": 'Basic realm="pgproof"'},
                    ),
                    config,
                    head,
                )
                return
            split = urlsplit(self.path)
            handler = endpoint.route(split.path)
            if handler is None:
                self._send(Response(404, "text/plain; charset=utf-8", b"Not Found\n"), config, head)
                return
            request = Request(
                split.path, split.query, {k.lower(): v for k, v in self.headers.items()}
            )
            try:
                response = handler(request)
            except Exception:  # noqa: BLE001 - one bad request never stops the endpoint
                log.exception("serving %s failed", split.path)
                response = Response(500, "text/plain; charset=utf-8", b"Internal Server Error\n")
            self._send(response, config, head)

        def _authorized(self, auth: webconfig.Authenticator) -> bool:
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return bool(sep) and auth.check(user, password)

        def _send(self, response: Response, config: webconfig.WebConfig, head: bool) -> None:
            body = response.body
            headers = dict(config.headers)
            headers.update(response.headers)
            if len(body) > 1024 and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, 1)
                headers["Content-Encoding"] = "gzip"
            self.send_response(response.status, HTTPStatus(response.status).phrase)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return RequestHandler
