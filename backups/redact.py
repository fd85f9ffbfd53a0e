"""Removing secrets from text before it reaches logs, errors, metrics or reports."""

from __future__ import annotations

import re
from collections.abc import Iterable

# password=... in a conninfo string, quoted or not; user:password@ in a URI.
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@/\s]+)(@)", re.IGNORECASE)
_AWS_SECRET = re.compile(r"((?:aws_secret_access_key|secret_key|secretkey)\s*[=:]\s*)(\S+)", re.I)

MASK = "********"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask known secret values and password-shaped fields in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _AWS_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return text
