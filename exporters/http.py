"""The read-only HTTP endpoint: ``/metrics``, ``/healthz`` and whatever else the service adds.

Served by uvicorn (asyncio, h11) on one event loop thread: an idle or slow client costs a
socket and a few kilobytes, never a thread. Work is bounded by construction:

- at most ``max_connections`` connections: at the cap the longest-idle connection (kept
  alive, or still sending its headers) is closed to make room, and only when every one is
  being served is the new one refused; at most ``ACCEPT_BURST`` accepts per loop turn;
- a client must complete its request headers within ``header_timeout`` of connecting (or of
  its previous response): slow-loris trickling is cut off; an idle keep-alive connection is
  closed after ``idle_timeout``;
- request headers are limited to ``max_header_bytes`` in all and ``max_headers`` in number
  (431, and the connection is closed);
- handlers run in two small thread pools: ``/metrics`` in its own, everything else
  (``/reports/``) in another with a few requests in flight at most, so a crowd on the
  reports cannot slow a scrape; scrapes that arrive together share one collection.

Basic auth and TLS come from a web-config file (``exporters.webconfig``), re-read when it
changes (a broken edit is logged and the previous settings stay). TLS certificates, keys and
client CAs are reloaded per handshake (the server context hands each handshake to the
current one); switching TLS on or off, or the client-certificate mode, takes a restart.
Errors go through logging; a client that disconnects early is not an error.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import gzip
import logging
import os
import resource
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from pgproof.exporters import connections, webconfig
from pgproof.exporters.errors import ListenError, WebConfigError
from pgproof.exporters.settings import HttpLimits

log = logging.getLogger("pgproof.http")
ACCEPT_BURST = 64  # connections accepted before the cap's evictions free their sockets


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
TEXT = "text/plain; charset=utf-8"


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _bind(listen: str, backlog: int) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class HttpEndpoint:
    def __init__(
        self,
        listen: str,
        routes: Mapping[str, Handler],
        web_config_file: str | None = None,
        prefix_routes: Mapping[str, Handler] | None = None,
        limits: HttpLimits | None = None,
    ):
        self.routes = dict(routes)
        self.prefix_routes = dict(prefix_routes or {})
        self.web_config_file = web_config_file
        limits = limits or HttpLimits()
        room = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - ACCEPT_BURST - 64
        if limits.max_connections > room:
            # a burst of accepts beyond the fd limit makes asyncio stop accepting for a while
            log.warning(
                "http.max_connections lowered to fit the file descriptor limit",
                extra={"configured": limits.max_connections, "used": room},
            )
            limits = dataclasses.replace(limits, max_connections=max(8, room))
        self.limits = limits
        self._config = webconfig.WebConfig()
        self._config_stamp: tuple[int, int] | None = None
        self._auth = webconfig.Authenticator({})
        self._config_lock = threading.Lock()
        if web_config_file:
            self._reload(initial=True)
        self._tls = self._config.tls  # the server's context; handshakes move to the current one
        if self._tls is not None:
            self._tls.sni_callback = self._handshake
        self.socket = _bind(listen, ACCEPT_BURST * 2)
        self._metrics_pool = concurrent.futures.ThreadPoolExecutor(
            limits.metrics_threads, thread_name_prefix="pgproof-http-metrics"
        )
        self._other_pool = concurrent.futures.ThreadPoolExecutor(
            limits.other_threads, thread_name_prefix="pgproof-http"
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        # requests other than /metrics in flight at once (taken on the server's loop)
        self._others = asyncio.Semaphore(limits.other_threads * 2)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

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
        if not initial and (config.tls is None) != (self._config.tls is None):
            log.error("web config: switching TLS on or off takes a restart of pgproof serve")
        elif not initial and config.tls and self._config.tls:
            if config.tls.verify_mode != self._config.tls.verify_mode:
                log.error("web config: a new client_auth_type takes a restart of pgproof serve")
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

    def _handshake(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.tls_context()
        if current is not None and current is not ctx:
            sslobj.context = current  # the reloaded certificate, key and client CAs

    def start(self) -> None:
        config = uvicorn.Config(
            self._asgi,
            http=connections.limited_protocol(self.limits),
            interface="asgi3",
            lifespan="off",
            proxy_headers=False,
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=max(1, int(self.limits.idle_timeout_seconds)),
            timeout_graceful_shutdown=2,
            backlog=ACCEPT_BURST,  # also how many connections asyncio accepts in one go
            h11_max_incomplete_event_size=self.limits.max_header_bytes,
            ssl_context_factory=(lambda cfg, default: self._tls) if self._tls else None,  # type: ignore[arg-type,return-value]
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[self.socket]))
            except Exception:  # noqa: BLE001 - logged: the endpoint thread must say why it ended
                log.exception("the HTTP endpoint stopped")

        self._thread = threading.Thread(target=run, name="pgproof-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
        self._metrics_pool.shutdown(wait=False, cancel_futures=True)
        self._other_pool.shutdown(wait=False, cancel_futures=True)

    def route(self, path: str) -> Handler | None:
        if path in self.routes:
            return self.routes[path]
        for prefix, handler in self.prefix_routes.items():
            if path.startswith(prefix):
                return handler
        return None

    # -- the ASGI application ----------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        if scope["path"] == "/metrics":
            await self._serve(scope, send, raw_headers, headers)
            return
        async with self._others:  # big pages a few at a time: scrapes keep their turn
            await self._serve(scope, send, raw_headers, headers)

    async def _serve(
        self,
        scope: dict[str, Any],
        send: Any,
        raw_headers: list[tuple[bytes, bytes]],
        headers: Mapping[str, str],
    ) -> None:
        head = scope["method"] == "HEAD"
        config, auth = (
            await asyncio.get_running_loop().run_in_executor(self._other_pool, self.current)
            if self.web_config_file
            else (self._config, self._auth)
        )
        response = self._precheck(scope, raw_headers, headers, auth)
        if response is None:
            path = scope["path"]
            handler = self.route(path)
            if handler is None:
                response = Response(404, TEXT, b"Not Found\n")
            else:
                request = Request(path, scope["query_string"].decode("latin-1"), headers)
                pool = self._metrics_pool if path == "/metrics" else self._other_pool
                try:
                    response = await asyncio.get_running_loop().run_in_executor(
                        pool, handler, request
                    )
                except Exception:  # noqa: BLE001 - one bad request never stops the endpoint
                    log.exception("serving %s failed", path)
                    response = Response(500, TEXT, b"Internal Server Error\n")
        await self._send(send, response, config, headers, head)

    def _precheck(
        self,
        scope: dict[str, Any],
        raw_headers: list[tuple[bytes, bytes]],
        headers: Mapping[str, str],
        auth: webconfig.Authenticator,
    ) -> Response | None:
        """What is answered before any handler runs: method, sizes, authentication."""
        if scope["method"] not in ("GET", "HEAD"):
            return Response(501, TEXT, b"Not Implemented\n")
        if len(raw_headers) > self.limits.max_headers:
            return Response(431, TEXT, b"Too many request headers\n", {"Connection": "close"})
        if sum(len(k) + len(v) + 4 for k, v in raw_headers) > self.limits.max_header_bytes:
            # h11 bounds what it buffers; a request that arrives whole is measured here
            return Response(
                431, TEXT, b"Request header fields too large\n", {"Connection": "close"}
            )
        if len(scope.get("raw_path") or b"") > 2048:
            return Response(414, TEXT, b"URI Too Long\n")
        if auth.enabled and not _authorized(headers.get("authorization", ""), auth):
            return Response(
                401, TEXT, b"Unauthorized\n", {"WWW-Authenticate": 'Basic realm="pgproof"'}
            )
        return None

    async def _send(
        self,
        send: Any,
        response: Response,
        config: webconfig.WebConfig,
        request_headers: Mapping[str, str],
        head: bool,
    ) -> None:
        body = response.body
        headers = dict(config.headers)
        headers.update(response.headers)
        if len(body) > 1024 and "gzip" in request_headers.get("accept-encoding", ""):
            body = gzip.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = response.content_type
        headers["Content-Length"] = str(len(body))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else body})


def _authorized(header: str, auth: webconfig.Authenticator) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return bool(sep) and auth.check(user, password)
