"""Sending one email with aiosmtplib: STARTTLS or implicit TLS, optional AUTH.

The password comes from an environment variable or a file, read when sending (never stored in
the config, never logged). Every failure (refused, timeout, TLS, auth) is a DeliveryError
naming the server and the reason.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from alerts.errors import DeliveryError
from alerts.render import Rendered
from backups.settings import read_secret

# subjects are kept under 250 characters: no folding needed (RFC 5322 allows 998)
_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    verify: bool = True
    timeout_seconds: float = 30.0

    def password(self) -> str | None:
        try:
            return read_secret(self.password_env, self.password_file)
        except LookupError as exc:
            raise DeliveryError(str(exc.args[0])) from None

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.ca_file:
            ctx.load_verify_locations(self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def build_message(settings: SmtpSettings, rendered: Rendered) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.to)
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text)
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html")
    return msg


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Deliver or raise DeliveryError; bounded by ``timeout_seconds``."""
    password = settings.password()
    try:
        asyncio.run(_send(settings, message, password))
    except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        text = str(exc).strip() or type(exc).__name__
        if password:
            text = text.replace(password, "********")
        raise DeliveryError(
            f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {text}"
        ) from None


async def _send(settings: SmtpSettings, message: EmailMessage, password: str | None) -> None:
    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        use_tls=settings.tls,
        start_tls=settings.starttls if not settings.tls else False,
        tls_context=settings.tls_context() if (settings.tls or settings.starttls) else None,
        timeout=settings.timeout_seconds,
    )
    sock = None
    try:
        await asyncio.wait_for(client.connect(), timeout=settings.timeout_seconds * 2)
        sock = client.get_transport_info("socket")
        if password is not None and settings.username:
            await client.login(settings.username, password)
        await client.sendmail(
            settings.sender,
            list(settings.to),
            message.as_bytes(policy=_POLICY),  # our policy: no folding of the subject
        )
        await client.quit()
    finally:
        # whatever failed, the connection is closed before the event loop goes away
        if client.is_connected:
            client.close()
        # a TLS close finishes a few loop turns later: let it, rather than leak the socket
        for _ in range(400):
            if sock is None or sock.fileno() == -1:
                break
            await asyncio.sleep(0.005)
