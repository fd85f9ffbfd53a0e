"""Throwaway PostgreSQL instances behind one small interface.

``Sandbox`` is what a restore needs: a data directory to fill (physical) or a fresh cluster
(logical), start/stop, a way to run client tools and SQL against it, and ``destroy``. The
local-process sandbox (``verifier.processsandbox``) lives in its own temp dir owned by
``postgres``: a private Unix socket in a 0700 directory, ``listen_addresses=''``, archiving
and replication off, a generated password (initdb'd sandboxes), and an ``owner.json`` so that
the next run can find and remove the leftovers of a crashed one. The container sandbox
(``verifier.container``) shares the directory layout and runs the server in a throwaway
container instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgproof.backups import process
from pgproof.backups.errors import CommandError
from pgproof.backups.runner import CommandResult, Runner
from pgproof.backups.source import text_safe
from pgproof.verifier import exhaustion, sandboxconf
from pgproof.verifier.errors import SandboxError

OWNER_FILE = "owner.json"
PREFIX = "pgproof-sandbox-"
SANDBOX_PORT = 5432  # only names the socket file inside the private socket directory


def default_root() -> str:
    """Where sandboxes live unless ``verifier.workdir`` says otherwise."""
    return os.path.join(tempfile.gettempdir(), "pgproof-sandboxes")


class Sandbox(ABC):
    kind: str
    major: int  # the server's PostgreSQL major version
    memory_mb: int  # what the server may use (shared_buffers, maintenance_work_mem follow)
    # zstd can run where the server runs (the restore_command decompresses archived WAL)
    has_zstd: bool = True

    @property
    @abstractmethod
    def data_dir(self) -> Path: ...

    @property
    @abstractmethod
    def work_dir(self) -> Path:
        """Scratch space owned by the postgres user (downloads, prefetched WAL)."""

    user: str  # the database superuser pgproof connects as

    @abstractmethod
    def initdb(self, checksums: bool = False, superuser: str | None = None) -> None:
        """A fresh cluster with a generated password for its superuser ``user``: named
        ``superuser`` (the source's bootstrap superuser, so that grants made by it restore
        on PostgreSQL 16+), else a name no production role has."""

    @abstractmethod
    def configure(
        self,
        *,
        fast: bool,
        preload: list[str] | None = None,
        recovery: sandboxconf.Recovery | None = None,
    ) -> None: ...

    @abstractmethod
    def start(self, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
        """Start and wait until connections are accepted; ``on_wait`` runs while waiting."""

    def why_it_stopped(self) -> str:
        """For an error message: the server log's FATAL and PANIC lines first (what stopped
        it), then its tail."""
        text = self.server_log()
        fatal = [ln for ln in text.splitlines() if " FATAL: " in ln or " PANIC: " in ln][-3:]
        return "\n".join([*fatal, "--- log tail ---", text[-3000:]]) if fatal else text[-3000:]

    def server_log(self) -> str:
        """The server's log so far (empty when the backend keeps none)."""
        return ""

    def space(self) -> exhaustion.Space | None:
        """The sandbox's directory, what its files take and its filesystem's size and free
        space (None when it has no local directory)."""
        return None

    @abstractmethod
    def stop(self, mode: str = "fast") -> None: ...

    @abstractmethod
    def destroy(self) -> None: ...

    @abstractmethod
    def run(self, program: str, args: list[str], timeout: float, **kw: Any) -> CommandResult:
        """Run a PostgreSQL binary (server major) as the sandbox's OS user, where the server
        runs (``ok_codes`` and ``env`` are honoured)."""

    @abstractmethod
    def libraries(self) -> set[str]:
        """Names of the server's loadable modules (its pkglibdir, without ``.so``)."""

    @abstractmethod
    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str: ...

    @abstractmethod
    def client_env(self) -> dict[str, str]: ...

    def connect(self, dbname: str = "postgres", user: str | None = None) -> psycopg.Connection[Any]:
        password = self._password()
        try:
            if password is None:
                conn = psycopg.connect(self.conninfo(dbname, user), autocommit=True)
            else:
                conn = psycopg.connect(
                    self.conninfo(dbname, user), autocommit=True, password=password
                )
            return text_safe(conn)
        except psycopg.Error as exc:
            raise SandboxError(f"cannot connect to the sandbox: {exc}") from None

    def _password(self) -> str | None:
        return None

    @contextlib.contextmanager
    def session(self) -> Iterator[Sandbox]:
        """Destroyed on leaving, whatever happens (SIGTERM is turned into SystemExit by the CLI)."""
        try:
            yield self
        finally:
            self.destroy()


class LocalDirSandbox(Sandbox):
    """A sandbox whose files live in a private directory of this machine: ``data`` (the
    cluster), ``sock`` (its Unix socket), ``work`` (downloads, WAL) and ``server.log``, all
    owned by the postgres user (``runner.postgres_identity()``, or us when not root), with an
    ``owner.json`` naming the process that made it, for :func:`reap_leftovers`."""

    def __init__(self, runner: Runner, root: str | None, memory_mb: int):
        self.root = Path(root or default_root())
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.root))
        self.password = secrets.token_urlsafe(24)
        self.user = "postgres"
        self.memory_mb = memory_mb
        self._auth = "trust"
        self.running = False
        ident = runner.postgres_identity()
        (self.base / OWNER_FILE).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "created": time.time(),
                    "kind": self.kind,
                }
            )
        )
        for sub in ("sock", "work"):
            (self.base / sub).mkdir(mode=0o700)
        self.base.chmod(0o700)
        if ident is not None:
            for path in (self.base, self.base / "sock", self.base / "work"):
                os.chown(path, ident.uid, ident.gid)
        self.runner = runner.with_secrets([self.password])

    # -- places ------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def work_dir(self) -> Path:
        return self.base / "work"

    @property
    def socket_dir(self) -> str:
        return str(self.base / "sock")

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def server_log(self) -> str:
        return self.log_tail(10_000_000)

    def space(self) -> exhaustion.Space | None:
        used = 0
        for dirpath, _dirs, files in os.walk(self.base):
            for name in files:
                with contextlib.suppress(OSError):
                    used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        try:
            fs = os.statvfs(self.base)
        except OSError:
            return None
        return exhaustion.Space(
            str(self.base), used, fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        )

    def _chown(self, path: Path) -> None:
        ident = self.runner.postgres_identity()
        if ident is not None:
            os.chown(path, ident.uid, ident.gid)

    # -- cluster files -------------------------------------------------------------------
    def initdb(self, checksums: bool = False, superuser: str | None = None) -> None:
        self.user = superuser or f"pgproof_sandbox_{secrets.token_hex(4)}"
        pwfile = self.base / "work" / ".pw"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        args = [
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if checksums:
            args.append("--data-checksums")
        try:
            self.run("initdb", args, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        self._auth = "scram-sha-256"

    def configure(
        self,
        *,
        fast: bool,
        preload: list[str] | None = None,
        recovery: sandboxconf.Recovery | None = None,
    ) -> None:
        data = self.data_dir
        for name in ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"):
            original = data / name
            if original.exists() and not (data / f"{name}.pgproof-original").exists():
                original.rename(data / f"{name}.pgproof-original")
        for stale in ("standby.signal", "recovery.signal", "postmaster.pid", "recovery.conf"):
            (data / stale).unlink(missing_ok=True)
        files = {
            "postgresql.conf": sandboxconf.render(
                self.socket_dir,
                SANDBOX_PORT,
                fast=fast,
                preload=preload or [],
                recovery=recovery,
                memory_mb=self.memory_mb,
            ),
            "postgresql.auto.conf": "# pgproof sandbox: production's ALTER SYSTEM set aside\n",
            "pg_hba.conf": sandboxconf.HBA.format(method=self._auth),
            "pg_ident.conf": "",
        }
        if recovery is not None:
            files["recovery.signal"] = ""
        for name, text in files.items():
            path = data / name
            path.write_text(text)
            path.chmod(0o600)
            self._chown(path)

    # -- the server ---------------------------------------------------------------------
    @abstractmethod
    def _server_up(self) -> bool:
        """Is the postmaster still there?"""

    @abstractmethod
    def _kill_server(self) -> None:
        """The last resort when pg_ctl cannot stop it."""

    def stop(self, mode: str = "fast") -> None:
        if not self._server_up():
            self.running = False
            return
        try:
            self.run(
                "pg_ctl",
                ["-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"],
                timeout=90,
            )
        except CommandError:
            self._kill_server()
        self.running = False

    # -- clients -----------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.socket_dir, port=str(SANDBOX_PORT), dbname=dbname, user=user or self.user
        )

    def client_env(self) -> dict[str, str]:
        env = {"PGHOST": self.socket_dir, "PGPORT": str(SANDBOX_PORT), "PGUSER": self.user}
        if self._auth != "trust":
            passfile = self.base / "work" / ".pgpass"
            if not passfile.exists():
                passfile.write_text(f"*:*:*:*:{self.password}\n")
                passfile.chmod(0o600)
                self._chown(passfile)
            env["PGPASSFILE"] = str(passfile)
        return env

    def _password(self) -> str | None:
        return None if self._auth == "trust" else self.password


def kill_postmaster(data_dir: Path) -> None:
    """SIGKILL at once (a sandbox is thrown away, nothing to save); its children follow."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    process.stop_pid(pid, grace=0)


def reap_leftovers(root: str | None = None) -> list[str]:
    """Remove sandboxes whose owning process is gone (a crashed or killed run)."""
    removed: list[str] = []
    base = Path(root or default_root())
    if not base.is_dir():
        return removed
    for path in base.glob(f"{PREFIX}*"):
        try:
            owner = json.loads((path / OWNER_FILE).read_text())
            pid, host = int(owner["pid"]), owner.get("host")
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host = {}, -1, None
        if host not in (None, socket.gethostname()):
            continue
        if pid > 0 and process.alive(pid):
            continue
        if owner.get("kind") != "container":  # a container's pid means nothing here
            kill_postmaster(path / "data")
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed
