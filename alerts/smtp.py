"""Sending one email with aiosmtplib: STARTTLS or implicit TLS, optional AUTH.

The password comes from an environment variable or a file, read when sending (never stored in
the config, never logged). Every failure (refused, timeout, TLS, auth) is a DeliveryError
naming the server and the reason.
"""

from __future__ import annotations

import asyncio
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from pgproof.alerts.errors import DeliveryError
from pgproof.alerts.render import Rendered
from pgproof.alerts.settings import SmtpSettings as SmtpSettings  # the settings this client takes

# subjects are kept under 250 characters: no folding needed (RFC 5322 allows 998)
_POLICY = policy.SMTP.clone(max_line_length=998)


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
