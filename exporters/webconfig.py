"""The web-config file of Prometheus exporters (prometheus/exporter-toolkit), for /metrics.

```yaml
tls_server_config:
  cert_file: /etc/pgproof/tls.crt
  key_file: /etc/pgproof/tls.key
  client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
  client_ca_file: /etc/pgproof/clients-ca.crt
  min_version: TLS12                             # TLS10 .. TLS13
http_server_config:
  headers: {Strict-Transport-Security: max-age=31536000}
basic_auth_users:
  prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')
```

Keys the toolkit has but Python's ssl module cannot honour the same way (cipher_suites,
curve_preferences, RequireAnyClientCert, RequestClientCert) are refused, never ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

from pgproof.exporters.errors import WebConfigError

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}
_HTTP_KEYS = {"headers", "http2"}


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{where}: must be a mapping")
    return value


def _file(base: str, value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{where}: must be a file path")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.isfile(path):
        raise WebConfigError(f"{where}: {path} does not exist")
    return path


def _tls(raw: dict[str, Any], base: str) -> ssl.SSLContext | None:
    if not raw:
        return None
    unknown = set(raw) - _TLS_KEYS
    if unknown:
        raise WebConfigError(f"tls_server_config.{sorted(unknown)[0]}: not supported by pgproof")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert = _file(base, raw.get("cert_file"), "tls_server_config.cert_file")
    key = _file(base, raw.get("key_file"), "tls_server_config.key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(f"tls_server_config: cannot load {cert} / {key}: {exc}") from None
    auth = raw.get("client_auth_type") or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth!r} is not one of " + ", ".join(_CLIENT_AUTH)
        )
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        ca = _file(base, raw.get("client_ca_file"), "tls_server_config.client_ca_file")
        ctx.load_verify_locations(ca)
    for key_name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if raw.get(key_name) is not None:
            if raw[key_name] not in _VERSIONS:
                raise WebConfigError(
                    f"tls_server_config.{key_name}: {raw[key_name]!r} is not one of "
                    + ", ".join(_VERSIONS)
                )
            setattr(ctx, attr, _VERSIONS[raw[key_name]])
    if raw.get("min_version") is None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def parse(raw: object, base: str = ".") -> WebConfig:
    top = _mapping(raw, "web config")
    unknown = set(top) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise WebConfigError(f"{sorted(unknown)[0]}: unknown key")
    tls = _tls(_mapping(top.get("tls_server_config"), "tls_server_config"), base)
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(top.get("basic_auth_users"), "basic_auth_users").items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"basic_auth_users.{user}: must be a bcrypt hash ($2y$...)")
        users[user] = hashed.encode()
    http = _mapping(top.get("http_server_config"), "http_server_config")
    unknown = set(http) - _HTTP_KEYS
    if unknown:
        raise WebConfigError(f"http_server_config.{sorted(unknown)[0]}: not supported by pgproof")
    headers = _mapping(http.get("headers"), "http_server_config.headers")
    return WebConfig(tls, users, {k: str(v) for k, v in headers.items()})


def load(path: str) -> WebConfig:
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise WebConfigError(f"cannot read web config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise WebConfigError(f"web config {path} is not valid YAML") from None
    return parse(raw, os.path.dirname(os.path.abspath(path)))


class Authenticator:
    """Checks basic-auth credentials; a success is remembered (bcrypt costs ~50 ms a check,
    and Prometheus sends the same credentials on every scrape)."""

    def __init__(self, users: Mapping[str, bytes]):
        self.users = dict(users)
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def check(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(b"x", bcrypt.hashpw(b"y", bcrypt.gensalt(4)))  # similar time either way
            return False
        token = hashlib.sha256(hashed + b"\0" + user.encode() + b"\0" + password.encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(token, good) for good in self._good):
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1))
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._good) > 1000:
                    self._good.clear()
                self._good.add(token)
        return ok
