"""The process sandbox: a throwaway PostgreSQL run from this machine's binaries of the
backup's major version, as the sandbox's OS user, under prlimit's memory and address-space
limits (``verifier.sandbox`` has the directory layout it shares with the container sandbox).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from pgproof.backups import process
from pgproof.backups.errors import CommandError
from pgproof.backups.pgbin import PgBinaries
from pgproof.backups.runner import CommandResult, Runner
from pgproof.verifier.errors import SandboxError
from pgproof.verifier.sandbox import SANDBOX_PORT, LocalDirSandbox, kill_postmaster

# in the log since a start, with no pid file: the postmaster has gone (no client can have
# connected before the pid file exists, so a FATAL then is the server's own)
_EXIT_MARKS = (
    "aborting startup due to startup process failure",
    "database system is shut down",
    "FATAL:",
)


class ProcessSandbox(LocalDirSandbox):
    """The server runs here, as a child process of this machine's postgres user."""

    kind = "process"

    def __init__(
        self,
        bins: PgBinaries,
        runner: Runner,
        root: str | None = None,
        memory_mb: int = 256,
        address_space_mb: int = 4096,
    ):
        super().__init__(runner, root, memory_mb)
        self.bins = bins
        self.major = bins.major
        self.address_space_mb = address_space_mb
        self._log_start = 0  # the server log's size when the current start began

    def run(self, program: str, args: list[str], timeout: float, **kw: Any) -> CommandResult:
        env = dict(kw.pop("env", None) or {})
        env.update(self.client_env())
        return self.runner.run(
            [self.bins.path(program), *args], timeout=timeout, as_postgres=True, env=env, **kw
        )

    def libraries(self) -> set[str]:
        try:
            libdir = self.run("pg_config", ["--pkglibdir"], timeout=30).stdout.decode().strip()
            return {n.removesuffix(".so") for n in os.listdir(libdir)}
        except (CommandError, OSError):
            return set()

    def limits(self) -> list[str]:
        """prlimit options for the server (inherited by every backend), when prlimit exists.

        Address space per process (``verifier.address_space_mb``, 4096), no core dumps,
        and no file larger than 4 GiB (data files are 1 GiB segments, WAL 16 MiB or so).
        """
        tool = shutil.which("prlimit")
        if tool is None:
            return []
        space = self.address_space_mb * 1024 * 1024
        return [tool, f"--as={space}", "--core=0", f"--fsize={4 << 30}", "--"]

    def start(self, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
        """Start and wait until it accepts connections (through recovery, if any)."""
        argv = [
            *self.limits(),
            self.bins.path("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-W",
            "start",
        ]
        try:
            self._log_start = self.log_file.stat().st_size
        except OSError:
            self._log_start = 0
        try:
            self.runner.run(argv, timeout=60, as_postgres=True, env=self.client_env())
        except CommandError as exc:
            raise SandboxError(f"sandbox did not start: {exc}\n{self.log_tail()}") from None
        self.running = True
        began = time.monotonic()

        def ready() -> bool:
            probe = self.run(
                "pg_isready",
                ["-h", self.socket_dir, "-p", str(SANDBOX_PORT), "-t", "2"],
                timeout=30,
                ok_codes=(0, 1, 2, 3),
            )
            return probe.returncode == 0

        def check() -> None:
            if self._exited(began):
                self.running = False
                raise SandboxError(
                    f"sandbox server exited while starting:\n{self.why_it_stopped()}"
                )

        if not process.wait_until(ready, timeout, 0.2, check, on_wait):
            raise SandboxError(f"sandbox not ready after {timeout:g} s:\n{self.log_tail()}")

    def _exited(self, began: float) -> bool:
        """Did the server die? An unreadable pid file means "not yet written", not "dead";
        a dead pid is confirmed twice (the postmaster rewrites its pid file while starting)."""
        for attempt in range(2):
            pid = self._postmaster_pid()
            if pid is None:
                # gone before we looked (it removes its pid file on the way out): the log
                # written since this start says so
                if any(m in self._log_since_start() for m in _EXIT_MARKS):
                    return True
                return time.monotonic() - began > 30
            if process.alive(pid):
                return False
            if attempt == 0:
                time.sleep(0.5)
        return True

    def _log_since_start(self) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(self._log_start)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _server_up(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and process.alive(pid)

    def _kill_server(self) -> None:
        kill_postmaster(self.data_dir)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        kill_postmaster(self.data_dir)
        shutil.rmtree(self.base, ignore_errors=True)
