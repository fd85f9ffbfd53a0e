"""The SMTP settings (import-light: the config module builds them on every command; the
mail client itself lives in ``alerts.smtp``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgproof.alerts.errors import DeliveryError
from pgproof.backups.settings import read_secret

if TYPE_CHECKING:
    import ssl


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
        import ssl  # only when sending: every command reads these settings

        ctx = ssl.create_default_context()
        if self.ca_file:
            ctx.load_verify_locations(self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
