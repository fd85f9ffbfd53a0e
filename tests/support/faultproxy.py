"""An HTTP proxy in front of a real S3 server that injects failures (bounded, loopback only).

``fail(predicate, times)`` answers the next ``times`` requests matching ``predicate`` with a
500 InternalError (``times=None``: every one from now on). The Host header is forwarded as
received so that SigV4 signatures stay valid.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Predicate = Callable[[str, str], bool]  # (method, path with query)

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


@dataclass
class Rule:
    predicate: Predicate
    remaining: int | None


class FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.injected = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy._should_fail(self.command, self.path):
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ERROR_BODY)))
                    self.end_headers()
                    self.wfile.write(ERROR_BODY)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {k: v for k, v in self.headers.items()}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"
                for key, value in answer.getheaders():
                    lower = key.lower()
                    if lower in ("transfer-encoding", "connection"):
                        continue
                    if lower == "content-length" and not head:
                        continue  # recomputed below; HEAD keeps the object's length
                    self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, predicate: Predicate, times: int | None) -> None:
        with self._lock:
            self.rules.append(Rule(predicate, times))

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            self.requests.append((method, path))
            for rule in self.rules:
                if rule.predicate(method, path) and (rule.remaining is None or rule.remaining > 0):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.injected += 1
                    return True
        return False

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def is_put(method: str, path: str) -> bool:
    return method == "PUT"


def is_upload_part(method: str, path: str) -> bool:
    return method == "PUT" and "partNumber=" in path
