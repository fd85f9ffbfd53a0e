"""The HTTP endpoint under hostile clients: idle and slow connections are closed, oversized
headers refused, the connection cap never locks a scraper out, a bad Accept is no error."""

from __future__ import annotations

import logging
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from pgproof.exporters.http import HttpEndpoint, Response
from pgproof.exporters.scrape import metrics_handler
from pgproof.exporters.settings import HttpLimits
from tests.support.monitoring import self_signed
from tests.support.serve import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint() -> Iterator[HttpEndpoint]:
    registry = CollectorRegistry()
    Counter("pgproof_test_requests", "a metric to scrape", registry=registry).inc()
    ep = HttpEndpoint(
        "127.0.0.1:0",
        {"/metrics": metrics_handler(registry), "/": lambda r: Response(200, "text/plain", b"ok")},
        limits=HttpLimits(max_connections=16, header_timeout_seconds=1.0, idle_timeout_seconds=1.0),
    )
    ep.start()
    try:
        yield ep
    finally:
        ep.close()


def connect(ep: HttpEndpoint) -> socket.socket:
    sock = socket.create_connection(ep.address, timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed the connection (reads whatever it sent first)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    return time.monotonic() - started


def scrape(ep: HttpEndpoint, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://{ep.address[0]}:{ep.address[1]}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read().decode()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    endpoint: HttpEndpoint,
) -> None:
    sock = connect(endpoint)
    took = closed_within(sock, 5)
    assert 0.8 < took < 3, took
    sock.close()


def test_slow_headers_are_cut_off(endpoint: HttpEndpoint) -> None:
    sock = connect(endpoint)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for i in range(50):  # one header every 0.2 s: never complete
            sock.sendall(f"X-Slow-{i}: y\r\n".encode())
            time.sleep(0.2)
    assert time.monotonic() - started < 4
    sock.close()


def test_an_oversized_header_gets_431_and_is_closed(endpoint: HttpEndpoint) -> None:
    sock = connect(endpoint)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    sock.settimeout(5)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    sock.close()


def test_too_many_headers_get_431(endpoint: HttpEndpoint) -> None:
    sock = connect(endpoint)
    many = b"".join(f"X-H{i}: v\r\n".encode() for i in range(150))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(100).startswith(b"HTTP/1.1 431")
    sock.close()


def test_a_malformed_accept_gets_the_text_format(
    endpoint: HttpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        status, ctype, body = scrape(endpoint, "application/openmetrics-text; version=abc")
    assert status == 200 and ctype.startswith("text/plain")
    assert "pgproof_test_requests_total 1.0" in body
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_idle_connections_at_the_cap_never_lock_a_scraper_out(endpoint: HttpEndpoint) -> None:
    idle = [connect(endpoint) for _ in range(40)]  # more than the cap of 16
    try:
        time.sleep(0.2)
        for _ in range(5):
            assert scrape(endpoint)[0] == 200
        still_open = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                if sock.recv(1) != b"":
                    still_open += 1
            except BlockingIOError:
                still_open += 1  # nothing to read and not closed
            except ConnectionResetError:
                pass
        assert still_open <= 16, still_open  # the server holds at most its cap
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_disconnects_early_is_no_error(
    endpoint: HttpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            sock = connect(endpoint)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()  # RST before the answer is read
        # 20 aborted requests against a cap of 16: a connection whose request is being
        # served is never evicted (uvicorn stops reading it until its answer is written, so
        # the reset is seen only then); once those answers are out, the scraper gets in
        wait_for(lambda: _scrape_status(endpoint) == 200, timeout=10, every=0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def _scrape_status(ep: HttpEndpoint) -> int | None:
    try:
        return scrape(ep)[0]
    except OSError:  # refused at the cap while the aborted requests are still served
        return None


def _tls_get(ep: HttpEndpoint, ctx: ssl.SSLContext) -> int:
    url = f"https://127.0.0.1:{ep.address[1]}/"
    with urllib.request.urlopen(url, timeout=5, context=ctx) as answer:
        return int(answer.status)


def test_client_certificates_and_a_new_server_certificate_from_the_next_handshake(
    tmp_path: Path,
) -> None:
    server_dir, client_dir, next_dir = (tmp_path / n for n in ("server", "client", "next"))
    for d in (server_dir, client_dir, next_dir):
        d.mkdir()
    cert, key = self_signed(server_dir)
    client_cert, client_key = self_signed(client_dir)
    web = tmp_path / "web.yml"

    def write(cert_file: Path, key_file: Path) -> None:
        web.write_text(
            yaml.safe_dump(
                {
                    "tls_server_config": {
                        "cert_file": str(cert_file),
                        "key_file": str(key_file),
                        "client_auth_type": "RequireAndVerifyClientCert",
                        "client_ca_file": str(client_cert),
                    }
                }
            )
        )

    write(cert, key)
    ep = HttpEndpoint("127.0.0.1:0", {"/": lambda r: Response(200, "text/plain", b"ok")}, str(web))
    ep.start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(OSError):
            _tls_get(ep, trusted)  # no client certificate: refused in the handshake
        trusted.load_cert_chain(str(client_cert), str(client_key))
        assert _tls_get(ep, trusted) == 200
        new_cert, new_key = self_signed(next_dir)
        time.sleep(0.01)
        write(new_cert, new_key)  # a renewed certificate: no restart
        renewed = ssl.create_default_context(cafile=str(new_cert))
        renewed.load_cert_chain(str(client_cert), str(client_key))
        assert _tls_get(ep, renewed) == 200
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            _tls_get(ep, trusted)  # the old certificate is no longer served
    finally:
        ep.close()
