"""TLS in front of a plain-HTTP server (SeaweedFS's S3): pgBackRest speaks S3 over HTTPS only.
Bytes are forwarded as they are (the Host header, hence SigV4 signatures, unchanged); the
certificate is a throwaway self-signed one (clients are told not to verify it). Loopback
only; ``stop`` closes the listener and every connection."""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.support.monitoring import self_signed


class TlsProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._dir = tempfile.TemporaryDirectory(prefix="pgproof-tls-")
        cert, key = self_signed(Path(self._dir.name))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name="tls-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self._context.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            raw.close()
            return
        with self._lock:
            self._open |= {client, upstream}
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        done.wait(5)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
        with self._lock:
            self._open -= {client, upstream}

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()
        self._dir.cleanup()


@contextlib.contextmanager
def tls_proxy(upstream_port: int) -> Iterator[TlsProxy]:
    proxy = TlsProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.stop()
