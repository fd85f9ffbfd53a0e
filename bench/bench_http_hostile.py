"""`pgproof serve`'s HTTP endpoint under hostile load, measured from outside the process.

Usage (after scripts/setup):
    .venv/bin/python -m bench.bench_http_hostile [--records 600] [--old GIT-REV]

Starts a real `pgproof serve` (fd limit 1,024, as systemd's default) over a filesystem
repository of synthetic backups and ``--records`` restore-test records, its source down, and
prints, for this tree and (with ``--old``) for another revision of it in the same run:
  throughput  /metrics requests/s with 10, 50 and 200 keep-alive clients
  idle        2,000 idle connections + 300 slow-loris clients (a header line a second) held
              open: /metrics p99 (a new connection per scrape), serve's threads, fds, RSS
  headers     150 clients sending endless headers: serve's peak RSS against its baseline
  reports     50 clients fetching /reports/ in a loop: /metrics p99 meanwhile
  logs        lines of serve's --log-format json output that are not one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import yaml

from pgproof.backups.storage.filesystem import FilesystemRepository
from tests.support import synthetic
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 5.0


def make_repository(base: Path, records: int) -> Path:
    repo = base / "repo"
    repo.mkdir()
    writer = synthetic.Writer(FilesystemRepository("local", repo))
    synthetic.fill(writer, "main", backups=records, wal_segments=records * 2, records_every=1)
    return repo


def write_config(base: Path, repo: Path) -> Path:
    config = base / "pgproof.yaml"
    doc = {
        "lock_dir": str(base / "locks"),
        "repositories": [{"name": "local", "type": "filesystem", "path": str(repo)}],
        "targets": [
            {
                "name": "main",
                "conninfo": f"host={base}/nosuchsocket dbname=postgres user=postgres",
                "repositories": ["local"],
                "heartbeat": {"enabled": False},
            }
        ],
        "verifier": {"workdir": str(base / "sandboxes")},
    }
    config.write_text(yaml.safe_dump(doc))
    return config


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@contextlib.contextmanager
def serving(tree: Path, config: Path, log: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgproof", "--config", str(config), "serve"]
            + ["--listen", f"127.0.0.1:{port}", "--log-format", "json"],
            cwd=tree,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_fds,  # noqa: PLW1509 - the bench's own child, no threads yet
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(port, "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:]) from None
                time.sleep(0.2)
        for _ in range(3):
            get(port, "/metrics")
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, path: str, timeout: float = 10.0) -> float:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise OSError(f"{path}: HTTP {answer.status}")
    finally:
        conn.close()
    return time.perf_counter() - began


def usage(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) // 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def p99_scrapes(port: int, seconds: float) -> tuple[float, int, int]:
    """p99 of /metrics over fresh connections for ``seconds`` (a failure counts as 10 s)."""
    times, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            times.append(get(port, "/metrics"))
        except OSError:
            failures += 1
            times.append(10.0)
        time.sleep(0.02)
    times.sort()
    return times[min(len(times) - 1, int(len(times) * 0.99))], len(times), failures


def throughput(port: int, clients: int, seconds: float) -> tuple[float, int]:
    count = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            try:
                conn.request("GET", "/metrics")
                answer = conn.getresponse()
                answer.read()
                count[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / seconds, sum(errors)


class Hostile:
    """Hostile clients on an asyncio loop in a thread: idle sockets, slow-loris, endless
    headers, /reports/ loops."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[concurrent.futures.Future[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    def _spawn(self, count: int, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        for _ in range(count):
            self.tasks.append(asyncio.run_coroutine_threadsafe(body(), self.loop))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return None
        self.writers.append(writer)
        return reader, writer

    def idle(self, count: int) -> None:
        async def body() -> None:
            await self._open()

        self._spawn(count, body)

    def slow_loris(self, count: int) -> None:
        async def body() -> None:
            while True:
                pair = await self._open()
                if pair is None:
                    await asyncio.sleep(1)
                    continue
                try:
                    pair[1].write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    for i in range(10**6):
                        await asyncio.sleep(1)
                        pair[1].write(f"X-Slow-{i}: y\r\n".encode())
                        await pair[1].drain()
                except OSError:
                    continue  # closed by the server: come back, as an attacker would

        self._spawn(count, body)

    def endless_headers(self, count: int) -> None:
        async def body() -> None:
            line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
            while True:
                pair = await self._open()
                if pair is None:
                    await asyncio.sleep(0.5)
                    continue
                try:
                    pair[1].write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    while True:
                        pair[1].write(line * 16)
                        await pair[1].drain()
                except OSError:
                    continue

        self._spawn(count, body)

    def reports(self, count: int) -> None:
        async def body() -> None:
            request = b"GET /reports/ HTTP/1.1\r\nHost: x\r\n\r\n"
            while True:
                pair = await self._open()
                if pair is None:
                    await asyncio.sleep(0.5)
                    continue
                reader, writer = pair
                try:
                    while True:
                        writer.write(request)
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = 0
                        for line in head.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":", 1)[1])
                        await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    continue

        self._spawn(count, body)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

        async def close_all() -> None:
            for writer in self.writers:
                writer.close()

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run(label: str, tree: Path, config: Path, base: Path) -> dict[str, object]:
    log = base / f"serve-{label}.log"
    out: dict[str, object] = {}
    with serving(tree, config, log) as (pid, port):
        baseline = usage(pid)
        out["baseline"] = baseline
        for clients in (10, 50, 200):
            rate, errors = throughput(port, clients, SECONDS)
            out[f"throughput_{clients}"] = (round(rate), errors)
        hostile = Hostile(port)
        hostile.idle(2000)
        hostile.slow_loris(300)
        time.sleep(3)
        out["idle_p99"] = p99_scrapes(port, SECONDS * 2)
        out["idle_usage"] = usage(pid)
        hostile.stop()
        time.sleep(2)
        hostile = Hostile(port)
        hostile.endless_headers(150)
        peak = 0
        deadline = time.monotonic() + SECONDS * 2
        while time.monotonic() < deadline:
            peak = max(peak, usage(pid)["rss_mb"])
            time.sleep(0.1)
        hostile.stop()
        time.sleep(2)
        out["headers_peak_rss_mb"] = peak
        out["after_rss_mb"] = usage(pid)["rss_mb"]
        hostile = Hostile(port)
        hostile.reports(50)
        time.sleep(2)
        out["reports_p99"] = p99_scrapes(port, SECONDS * 2)
        hostile.stop()
    lines = log.read_text(errors="replace").splitlines()
    bad = 0
    messages: collections.Counter[str] = collections.Counter()
    for line in lines:
        try:
            messages[str(json.loads(line).get("message"))[:60]] += 1
        except (ValueError, AttributeError):
            bad += 1
    out["log_lines"] = (len(lines), bad)
    out["log_top"] = messages.most_common(3)
    return out


def show(label: str, r: dict[str, Any]) -> None:
    base = r["baseline"]
    idle = r["idle_usage"]
    assert isinstance(base, dict) and isinstance(idle, dict)
    p99, n, fails = r["idle_p99"]
    rp99, rn, rfails = r["reports_p99"]
    print(f"\n{label}")
    print(f"  idle baseline: RSS {base['rss_mb']} MB, {base['threads']} threads, {base['fds']} fds")
    for clients in (10, 50, 200):
        rate, errors = r[f"throughput_{clients}"]
        print(f"  /metrics, {clients:3d} keep-alive clients: {rate:6d} req/s, {errors} errors")
    print(
        f"  2,000 idle + 300 slow-loris: /metrics p99 {p99 * 1000:.0f} ms ({n} scrapes, "
        f"{fails} failed); serve {idle['threads']} threads, {idle['fds']} fds, RSS "
        f"{idle['rss_mb']} MB ({idle['rss_mb'] / max(1, base['rss_mb']):.2f}x baseline)"
    )
    peak = r["headers_peak_rss_mb"]
    assert isinstance(peak, int)
    print(
        f"  150 endless-header clients: peak RSS {peak} MB "
        f"({peak / max(1, base['rss_mb']):.2f}x baseline), {r['after_rss_mb']} MB after"
    )
    print(
        f"  50 clients on /reports/: /metrics p99 {rp99 * 1000:.0f} ms ({rn} scrapes, "
        f"{rfails} failed)"
    )
    total, bad = r["log_lines"]
    print(f"  serve's JSON log: {total} lines, {bad} not one JSON object; most: {r['log_top']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--old", help="also measure this git revision of the tree")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the hostile side needs many
    base = Path(tempfile.mkdtemp(prefix="pgproof-bench-http-"))
    old_tree = None
    try:
        config = write_config(base, make_repository(base, args.records))
        print(f"{args.records} restore-test records; serve's fd limit 1,024; {SECONDS:.0f} s each")
        if args.old:
            old_tree = base / "old"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old],
                check=True,
                capture_output=True,
            )
            show(f"before ({args.old})", run("old", old_tree, config, base))
        show("now", run("new", ROOT, config, base))
    finally:
        if old_tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
