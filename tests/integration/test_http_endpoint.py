"""`pgproof serve`'s endpoint: TLS and basic auth from an exporter-toolkit web-config file,
re-read when it changes; bad web configs are refused with the field named."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from pgproof.exporters import webconfig
from pgproof.exporters.errors import WebConfigError
from tests.support.fixtures import PGPROOF
from tests.support.monitoring import self_signed
from tests.support.ports import free_port
from tests.support.serve import serve, value, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pgproof-http-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _config(workdir: Path, web_config: Path | None) -> Path:
    repo = workdir / "repo"
    repo.mkdir(exist_ok=True)
    doc = {
        "lock_dir": str(workdir / "locks"),
        "repositories": [{"name": "local", "type": "filesystem", "path": str(repo)}],
        "targets": [
            {
                "name": "main",
                # nothing listens there: source_up must say 0, the endpoint must still answer
                "conninfo": f"host=127.0.0.1 port={free_port()} dbname=app user=backup",
                "repositories": ["local"],
            }
        ],
        "exporter": {"refresh": "1s", "source_timeout": "2s"},
        "http": {"web_config_file": str(web_config)} if web_config else {},
    }
    path = workdir / "pgproof.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")


def test_tls_and_basic_auth_and_reload(workdir: Path) -> None:
    cert, key = self_signed(workdir)
    web = workdir / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                "basic_auth_users": {"prometheus": _hash("scrape me")},
                "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            }
        )
    )
    trust = ssl.create_default_context(cafile=str(cert))
    with serve(_config(workdir, web), scheme="https", context=trust) as srv:
        status, _, headers = srv.get("/metrics", context=trust)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert srv.get("/metrics", auth=("prometheus", "wrong"), context=trust)[0] == 401
        assert srv.get("/metrics", auth=("nobody", "scrape me"), context=trust)[0] == 401
        m = srv.scrape(auth=("prometheus", "scrape me"), context=trust)
        assert value(m, "pgproof_source_up", target="main") == 0
        assert value(m, "pgproof_repository_up", repository="local") == 1
        assert (value(m, "pgproof_scrape_errors_total") or 0) >= 1
        status, _, headers = srv.get("/healthz", auth=("prometheus", "scrape me"), context=trust)
        assert status == 200 and headers["X-Frame-Options"] == "deny"
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            srv.get("/metrics", context=ssl.create_default_context())  # untrusted: refused
        # plain HTTP to the TLS port gets nothing useful
        with pytest.raises(OSError):
            _plain(srv.base_url)

        # the password changes: the next requests use the new file
        web.write_text(
            yaml.safe_dump(
                {
                    "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                    "basic_auth_users": {"prometheus": _hash("new secret")},
                }
            )
        )
        wait_for(
            lambda: srv.get("/metrics", auth=("prometheus", "new secret"), context=trust)[0] == 200
        )
        assert srv.get("/metrics", auth=("prometheus", "scrape me"), context=trust)[0] == 401
        # a broken edit is logged and the previous settings stay
        web.write_text("basic_auth_users: [oops")
        assert srv.get("/metrics", auth=("prometheus", "new secret"), context=trust)[0] == 200
        assert "web config not reloaded" in srv.log()


def _plain(base_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(base_url.replace("https://", "http://") + "/metrics", timeout=5):
        pass


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"basic_auth_users": {"u": "plaintext"}}, "basic_auth_users.u: must be a bcrypt hash"),
        (
            {"tls_server_config": {"cert_file": "/nope.crt", "key_file": "/nope.key"}},
            "does not exist",
        ),
        ({"tls_server_config": {"cipher_suites": ["X"]}}, "cipher_suites: not supported"),
        ({"tls_srever_config": {}}, "tls_srever_config: unknown key"),
    ],
)
def test_bad_web_configs_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(WebConfigError, match=message):
        webconfig.parse(doc)


def test_serve_refuses_a_bad_web_config_with_exit_2(workdir: Path) -> None:
    web = workdir / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"u": "plaintext"}}))
    proc = subprocess.run(
        [
            PGPROOF,
            "--config",
            str(_config(workdir, web)),
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "basic_auth_users.u: must be a bcrypt hash" in proc.stderr
