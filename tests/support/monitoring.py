"""Real monitoring servers for tests: Prometheus, Alertmanager (Debian packages) and an SMTP
server (aiosmtpd) that requires STARTTLS with a self-signed certificate. Each binds to
127.0.0.1 on a free port, lives in its own temp dir and is stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.ports import free_port, wait_port


def self_signed(directory: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=IP:{name}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)
    authenticated: list[bool] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refuse: bool = False  # answer every RCPT with 451 (a refusing server)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(message_from_bytes(content, policy=email_policy.default))
            self.tls_seen.append(session.ssl is not None)
            self.authenticated.append(bool(session.authenticated))
        return "250 Message accepted"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for m in self.messages]


@dataclass
class SmtpServer:
    port: int
    cert: Path
    mailbox: Mailbox


@contextlib.contextmanager
def smtp_server(
    require_starttls: bool = True,
    implicit_tls: bool = False,
    users: dict[str, str] | None = None,
) -> Iterator[SmtpServer]:
    """STARTTLS required (default), or TLS from the first byte (``implicit_tls``); with
    ``users``, AUTH is required and checked."""
    work = Path(tempfile.mkdtemp(prefix="pgproof-smtp-"))
    cert, key = self_signed(work)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    extra: dict[str, Any] = {}
    if users is not None:

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
                data.password.decode()
            )
            return AuthResult(success=ok, handled=False)

        extra.update(authenticator=authenticate, auth_required=True)
    if implicit_tls:
        # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS throughout
        controller = Controller(
            mailbox,
            hostname="127.0.0.1",
            port=port,
            ssl_context=ctx,
            auth_require_tls=False,
            **extra,
        )
    else:
        controller = Controller(
            mailbox,
            hostname="127.0.0.1",
            port=port,
            tls_context=ctx,
            require_starttls=require_starttls,
            auth_require_tls=True,
            **extra,
        )
    controller.start()
    try:
        yield SmtpServer(port, cert, mailbox)
    finally:
        controller.stop()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    work: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def log(self) -> str:
        return (self.work / "server.log").read_text(errors="replace")


def _run(binary: str, args: list[str], work: Path, port: int, ready: str) -> Server:
    with (work / "server.log").open("wb") as log:
        proc = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT, cwd=work)
    server = Server(proc, port, work)
    try:
        wait_port(port, 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(server.url + ready, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{binary} did not get ready:\n{server.log()}") from None
                time.sleep(0.2)
    except BaseException:
        _stop(server)
        raise
    return server


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    shutil.rmtree(server.work, ignore_errors=True)


@contextlib.contextmanager
def _server(
    binaries: tuple[str, ...],
    prefix: str,
    config: dict[str, Any],
    flags: list[str],
    files: dict[str, Any] | None = None,
) -> Iterator[Server]:
    """Start one of the Prometheus family with ``config`` written to ``config.yml`` (and
    ``files`` beside it) in a temp dir; ``flags`` may use {work} and {port}; stopped by PID
    and removed afterwards."""
    binary = next((found for b in binaries if (found := shutil.which(b))), None)
    if binary is None:
        raise AssertionError(f"{binaries[0]} not installed (scripts/setup installs it)")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    for name, content in (files or {}).items():
        (work / name).write_text(json.dumps(content))
    config = json.loads(json.dumps(config).replace("{work}", str(work)))
    (work / "config.yml").write_text(json.dumps(config))
    port = free_port()
    args = [f"--config.file={work / 'config.yml'}"] + [
        f.format(work=work, port=port) for f in flags
    ]
    server = _run(binary, args, work, port, "/-/ready")
    try:
        yield server
    finally:
        _stop(server)


def alertmanager(config: dict[str, Any]) -> contextlib.AbstractContextManager[Server]:
    return _server(
        ("prometheus-alertmanager", "alertmanager"),
        "pgproof-am-",
        config,
        [
            "--storage.path={work}/data",
            "--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
    )


def prometheus(
    config: dict[str, Any], rules: dict[str, Any] | None = None
) -> contextlib.AbstractContextManager[Server]:
    files = {}
    if rules is not None:
        files["rules.yml"] = rules
        config = dict(config, rule_files=["{work}/rules.yml"])
    return _server(
        ("prometheus",),
        "pgproof-prom-",
        config,
        ["--storage.tsdb.path={work}/data", "--web.listen-address=127.0.0.1:{port}"],
        files,
    )


def exporter_once(config_path: Path) -> tuple[str, list[Any]]:
    """One refresh of the exporter ``serve`` would build from the config: the metrics text
    and the alerts that would fire now."""
    import time

    from prometheus_client import generate_latest

    from pgproof import config as config_mod
    from pgproof.alerts.conditions import evaluate
    from pgproof.backups.storage.factory import opened
    from pgproof.exporters.collector import registry
    from pgproof.exporters.exporter import Exporter
    from pgproof.service import alert_limits, exported_targets

    cfg = config_mod.load(str(config_path))
    with opened(cfg.repositories) as repos:
        exporter = Exporter(exported_targets(cfg), repos)
        try:
            exporter.refresh()
            text = generate_latest(registry(exporter)).decode()
            statuses = list(exporter.statuses())
        finally:
            exporter.close()
    return text, list(evaluate(statuses, time.time(), alert_limits(cfg)))
