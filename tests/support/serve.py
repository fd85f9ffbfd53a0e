"""``pgproof serve`` as a real process for tests: started, waited for, scraped, stopped."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures import PGPROOF
from tests.support.ports import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Headers(dict[str, str]):
    """Response headers; names are case-insensitive (HTTP/1.1 servers may send them in
    lower case, as uvicorn does)."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def get(
        self,
        path: str,
        auth: tuple[str, str] | None = None,
        context: ssl.SSLContext | None = None,
        timeout: float = 10,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        request = urllib.request.Request(self.base_url + path)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                return answer.status, answer.read(), Headers(answer.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), Headers(exc.headers.items())

    def scrape(self, **kw: object) -> Samples:
        status, body, _ = self.get("/metrics", **kw)  # type: ignore[arg-type]
        assert status == 200, body
        return parse_samples(body.decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def parse_samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@contextlib.contextmanager
def serve(
    config_path: Path,
    env: Mapping[str, str] | None = None,
    scheme: str = "http",
    context: ssl.SSLContext | None = None,
    port: int | None = None,
) -> Iterator[Served]:
    port = port or free_port()
    log_path = config_path.parent / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [PGPROOF, "--config", str(config_path), "serve", "--listen", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
        )
    served = Served(proc, f"{scheme}://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"pgproof serve exited {proc.returncode}:\n{served.log()}")
            try:
                served.get("/healthz", context=context, timeout=2)
                break
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"pgproof serve did not answer:\n{served.log()}") from None
                time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_for(check: Callable[[], object], timeout: float = 30, every: float = 0.3) -> None:
    """Poll ``check()`` until it returns true (the assertion error says what was last seen)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return
        time.sleep(every)
    raise AssertionError(f"condition not met after {timeout} s (last: {last!r})")
