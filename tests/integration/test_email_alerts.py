"""pgproof's email alerts against a real SMTP server (aiosmtpd): STARTTLS, implicit TLS and
AUTH; de-duplication, repeats, resolve notices and state across restarts; a refusing or
silent server, and a broken template, never lose the alert nor raise."""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgproof.alerts.conditions import Alert
from pgproof.alerts.errors import DeliveryError
from pgproof.alerts.notifier import Notifier, NotifierSettings
from pgproof.alerts.render import Rendered
from pgproof.alerts.smtp import SmtpSettings, build_message, send
from tests.support.monitoring import SmtpServer, smtp_server
from tests.support.ports import free_port

STALE = Alert(
    "PgproofBackupTooOld",
    "main",
    "physical",
    "critical",
    "main: newest physical backup is 30.0 h old",
    "Backup 20261123T000000Z-physical-aaaa finished 30.0 h ago; the limit is 26.0 h.",
    "https://example.com/runbook#backup-too-old",
)
GAP = Alert(
    "PgproofWalGap", "main", "", "critical", "main: 3 WAL segments missing", "gap", "https://x"
)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgproof-alerts-") as d:
        yield Path(d)


def _smtp(server: SmtpServer, **kw: object) -> SmtpSettings:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "sender": "pgproof@example.com",
        "to": ("dba@example.com",),
        "starttls": True,
        "ca_file": str(server.cert),
        "timeout_seconds": 5.0,
    }
    base.update(kw)
    return SmtpSettings(**base)  # type: ignore[arg-type]


def _notifier(
    settings: SmtpSettings, state_dir: Path, templates: str | None = None, **kw: float
) -> Notifier:
    return Notifier(
        NotifierSettings(
            settings,
            str(state_dir / "state.json"),
            repeat_interval_seconds=kw.get("repeat", 3600),
            attempts=int(kw.get("attempts", 2)),
            backoff_seconds=0.05,
            templates_dir=templates,
        ),
        host="test-host",
    )


def test_firing_repeat_resolved_and_state_across_restarts(state_dir: Path) -> None:
    with smtp_server() as server:
        settings = _smtp(server)
        n = _notifier(settings, state_dir, repeat=600)
        t0 = 1_000_000.0
        assert n.process([STALE], t0).sent
        assert n.process([STALE], t0 + 60).events == ()  # de-duplicated
        # a restart keeps what was announced
        n2 = _notifier(settings, state_dir, repeat=600)
        assert n2.process([STALE], t0 + 120).events == ()
        repeat = n2.process([STALE, GAP], t0 + 700)
        assert repeat.sent
        assert {(e.alert.name, e.repeat) for e in repeat.events} == {
            ("PgproofBackupTooOld", True),
            ("PgproofWalGap", False),
        }
        resolved = n2.process([GAP], t0 + 800)
        assert [(e.alert.name, e.state) for e in resolved.events] == [
            ("PgproofBackupTooOld", "resolved")
        ]
        assert n2.process([GAP], t0 + 900).events == ()
        subjects = server.mailbox.subjects()
        assert len(subjects) == 3, subjects
        assert subjects[0].startswith("[pgproof] FIRING 1: main: newest physical backup")
        assert subjects[1].startswith("[pgproof] FIRING 2")
        assert subjects[2].startswith("[pgproof] RESOLVED 1")
        assert all(server.mailbox.tls_seen)
        first = server.mailbox.messages[0]
        parts = {p.get_content_type(): p.get_payload(decode=True) for p in first.walk()}
        html = parts["text/html"]
        assert isinstance(html, bytes) and b"Backup 20261123T000000Z-physical-aaaa" in html
        assert first["To"] == "dba@example.com"


def test_html_is_escaped(state_dir: Path) -> None:
    nasty = Alert(
        "PgproofRestoreTestFailed",
        "main",
        "logical",
        "critical",
        "main: logical restore test FAILED",
        "table <script>alert(1)</script> is empty",
        "https://x",
    )
    with smtp_server() as server:
        assert _notifier(_smtp(server), state_dir).process([nasty], 1.0).sent
        parts = {
            p.get_content_type(): p.get_payload(decode=True)
            for p in server.mailbox.messages[0].walk()
        }
        html = parts["text/html"]
        assert isinstance(html, bytes)
        assert b"<script>" not in html and b"&lt;script&gt;" in html


# aiosmtpd warns about AUTH without STARTTLS; here the whole connection is TLS (implicit)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_and_auth_with_password_from_env_and_file(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(implicit_tls=True, users={"alerts": "s3cret pass"}) as server:
        monkeypatch.setenv("PGPROOF_SMTP_PASSWORD", "s3cret pass")
        settings = _smtp(
            server,
            starttls=False,
            tls=True,
            username="alerts",
            password_env="PGPROOF_SMTP_PASSWORD",
        )
        assert _notifier(settings, state_dir).process([STALE], 1.0).sent
        secret = state_dir / "smtp.pass"
        secret.write_text("s3cret pass\n")
        by_file = _smtp(
            server, starttls=False, tls=True, username="alerts", password_file=str(secret)
        )
        send(by_file, build_message(by_file, Rendered("s", "t", None)))
        assert server.mailbox.authenticated == [True, True]
        wrong = _smtp(
            server, starttls=False, tls=True, username="alerts", password_env="NOPE_UNSET"
        )
        with pytest.raises(DeliveryError, match="NOPE_UNSET is not set"):
            send(wrong, build_message(wrong, Rendered("s", "t", None)))
        monkeypatch.setenv("PGPROOF_SMTP_PASSWORD", "wrong password")
        with pytest.raises(DeliveryError) as caught:
            send(settings, build_message(settings, Rendered("s", "t", None)))
        assert "wrong password" not in str(caught.value)


def test_starttls_refused_by_an_untrusted_certificate(state_dir: Path) -> None:
    with smtp_server() as server:
        settings = _smtp(server, ca_file=None)  # the system CAs do not know the test cert
        with pytest.raises(DeliveryError, match="certificate"):
            send(settings, build_message(settings, Rendered("s", "t", None)))
        assert server.mailbox.messages == []


def test_a_refusing_server_is_retried_with_backoff_and_nothing_is_lost(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_server() as server:
        server.mailbox.refuse = True
        n = _notifier(_smtp(server), state_dir, attempts=3)
        t0 = 5_000.0
        with caplog.at_level(logging.WARNING, logger="pgproof.alerts"):
            outcome = n.process([STALE], t0)
        assert not outcome.sent and "451" in outcome.error
        assert sum("attempt" in r.message for r in caplog.records) == 3
        assert n.state.tracked[STALE.key].last_sent is None
        assert n.state.next_attempt == t0 + 60  # backs off before the next try
        assert n.process([STALE], t0 + 30).error == "waiting before the next delivery attempt"
        server.mailbox.refuse = False
        later = n.process([STALE], t0 + 61)
        assert later.sent and [e.alert.key for e in later.events] == [STALE.key]
        assert len(server.mailbox.messages) == 1


def test_a_silent_server_times_out_instead_of_hanging(state_dir: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accepts, then says nothing
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        settings = SmtpSettings(
            "127.0.0.1", port, "a@example.com", ("b@example.com",), timeout_seconds=1.0
        )
        n = _notifier(settings, state_dir, attempts=1)
        began = time.monotonic()
        outcome = n.process([STALE], 1.0)
        assert time.monotonic() - began < 5
        assert not outcome.sent and "Timeout" in outcome.error
        nobody = SmtpSettings("127.0.0.1", free_port(), "a@e.com", ("b@e.com",), timeout_seconds=1)
        assert not _notifier(nobody, state_dir, attempts=1).process([GAP], 1.0).sent
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in accepted:
            conn.close()


def test_a_broken_template_falls_back_to_plain_text(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = state_dir / "templates"
    templates.mkdir()
    (templates / "body.txt.j2").write_text("{{ no_such_variable.attribute }}\n")
    with smtp_server() as server:
        with caplog.at_level(logging.ERROR, logger="pgproof.alerts"):
            outcome = _notifier(_smtp(server), state_dir, str(templates)).process([STALE], 1.0)
        assert outcome.sent and outcome.fallback
        assert any("template" in r.message for r in caplog.records)
        message = server.mailbox.messages[0]
        assert message.get_content_type() == "text/plain"
        text = message.get_payload(decode=True)
        assert isinstance(text, bytes) and b"newest physical backup is 30.0 h old" in text
        assert str(message["Subject"]).startswith("[pgproof] FIRING 1")
