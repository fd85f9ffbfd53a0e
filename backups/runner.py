"""The one runner for every external command.

Every external program pgproof starts goes through :class:`Runner`: an argv list (never a
shell), a wall-clock timeout, output captured and redacted, and a typed error that carries
the tail of the command's stderr. When pgproof runs as root, PostgreSQL binaries run as the
``postgres`` OS user (the server refuses root, and files it writes must belong to it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO

from pgproof.backups import process
from pgproof.backups.errors import CommandError, CommandTimeout
from pgproof.backups.redact import redact

STDERR_TAIL_BYTES = 8192
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: str
    seconds: float


@dataclass(frozen=True)
class RunAs:
    """An OS user a child runs as (only honoured when we are root)."""

    user: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        entry = pwd.getpwnam(user)
        return cls(user=user, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


@dataclass
class Runner:
    """Runs external commands; see the module docstring.

    ``secrets`` are masked in every captured output and error message. ``postgres_user``
    is the OS user PostgreSQL binaries run as when the current process is root.
    """

    secrets: tuple[str, ...] = ()
    postgres_user: str = "postgres"
    default_timeout: float = 3600.0
    base_env: Mapping[str, str] | None = None
    _run_as: RunAs | None = field(default=None, init=False, repr=False)

    def with_secrets(self, extra: Iterable[str]) -> Runner:
        return Runner(
            secrets=self.secrets + tuple(s for s in extra if s),
            postgres_user=self.postgres_user,
            default_timeout=self.default_timeout,
            base_env=self.base_env,
        )

    def as_user(self, user: str) -> Runner:
        """The same runner, with PostgreSQL binaries run as ``user`` (when we are root)."""
        if user == self.postgres_user:
            return self
        return dataclasses.replace(self, postgres_user=user)  # its identity looked up anew

    # -- identity --------------------------------------------------------------------
    def postgres_identity(self) -> RunAs | None:
        """The identity PostgreSQL binaries run as, or None when we are not root."""
        if os.geteuid() != 0:
            return None
        if self._run_as is None:
            self._run_as = RunAs.lookup(self.postgres_user)
        return self._run_as

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def _env(self, env: Mapping[str, str] | None, run_as: RunAs | None) -> dict[str, str]:
        merged = dict(os.environ if self.base_env is None else self.base_env)
        # A password in the environment would be inherited by every child: refuse to pass
        # it on implicitly; callers that need it hand a passfile or an explicit env.
        merged.pop("PGPASSWORD", None)
        if run_as is not None:
            merged["HOME"] = run_as.home
            merged["USER"] = merged["LOGNAME"] = run_as.user
        if env:
            merged.update(env)
        return merged

    def _popen(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        as_postgres: bool,
        stdin: int | None,
        stdout: int | None,
    ) -> subprocess.Popen[bytes]:
        run_as = self.postgres_identity() if as_postgres else None
        if run_as is not None and cwd is None:
            cwd = "/"
        try:
            return process.spawn(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=self._env(env, run_as),
                cwd=cwd,
                user=(run_as.uid, run_as.gid) if run_as is not None else None,
            )
        except OSError as exc:
            raise CommandError(self._shown(argv), None, "", f"could not start: {exc}") from exc

    def _shown(self, argv: list[str]) -> list[str]:
        return [self.redact(a) for a in argv]

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """The command and everything it started (its own process group)."""
        process.stop_child(proc, KILL_GRACE_SECONDS, group=True)

    # -- one-shot ----------------------------------------------------------------------
    def run(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        as_postgres: bool = False,
        ok_codes: tuple[int, ...] = (0,),
    ) -> CommandResult:
        """Run to completion and capture stdout/stderr; raise unless the exit is in ok_codes."""
        limit = self.default_timeout if timeout is None else timeout
        started = time.monotonic()
        proc = self._popen(
            argv,
            env=env,
            cwd=cwd,
            as_postgres=as_postgres,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(input=input, timeout=limit)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            raise CommandTimeout(
                self._shown(argv), None, self._tail(err), f"timed out after {limit:g} s"
            ) from None
        except BaseException:
            self._kill(proc)
            raise
        stderr = self.redact(err.decode("utf-8", "replace"))
        if proc.returncode not in ok_codes:
            raise CommandError(self._shown(argv), proc.returncode, self._tail(err))
        return CommandResult(argv, proc.returncode, out, stderr, time.monotonic() - started)

    def _tail(self, err: bytes) -> str:
        return self.redact(err[-STDERR_TAIL_BYTES:].decode("utf-8", "replace"))

    # -- streaming ---------------------------------------------------------------------
    @contextlib.contextmanager
    def stream(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        as_postgres: bool = False,
    ) -> Iterator[StreamingCommand]:
        """Start ``argv`` with its stdout as a pipe to read from.

        On leaving the block the command is waited for (and killed if the block raised or
        the deadline passed); a non-zero exit raises CommandError with the stderr tail.
        """
        limit = self.default_timeout if timeout is None else timeout
        proc = self._popen(
            argv,
            env=env,
            cwd=cwd,
            as_postgres=as_postgres,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        cmd = StreamingCommand(proc, self, argv, limit)
        try:
            yield cmd
        except BaseException:
            self._kill(proc)
            cmd.close()
            raise
        cmd.finish()


class StreamingCommand:
    """A running command whose stdout is read by the caller (see Runner.stream)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], runner: Runner, argv: list[str], limit: float
    ):
        self._proc = proc
        self._runner = runner
        self._argv = argv
        self._limit = limit
        self._timed_out = False
        self._abort_reason: str | None = None
        self._stop_watch = threading.Event()
        self._err: collections.deque[bytes] = collections.deque()
        self._err_len = 0
        self._lock = threading.Lock()
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        self._timer = threading.Timer(limit, self._on_timeout)
        self._timer.daemon = True
        self._timer.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self._proc.stdout is not None
        return self._proc.stdout

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    def _drain_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        read = getattr(stderr, "read1", stderr.read)
        for line in iter(lambda: read(65536), b""):
            with self._lock:
                self._err.append(line)
                self._err_len += len(line)
                while self._err_len > 4 * STDERR_TAIL_BYTES and len(self._err) > 1:
                    self._err_len -= len(self._err.popleft())

    def stderr_text(self) -> str:
        with self._lock:
            data = b"".join(self._err)
        return self._runner.redact(data.decode("utf-8", "replace"))

    def _on_timeout(self) -> None:
        self._timed_out = True
        Runner._kill(self._proc)

    def abort(self, reason: str) -> None:
        """Kill the command now; ``finish`` then raises CommandTimeout with ``reason``."""
        self._abort_reason = reason
        self._on_timeout()

    def watch_stall(self, seconds: float, reason: str) -> Callable[[int], None]:
        """A hook to call with each chunk's size: once data has started, ``seconds``
        without any aborts the command (``reason`` says what it was probably waiting for)."""
        last = [0.0]
        stop = threading.Event()

        def watchdog() -> None:
            while not stop.wait(min(1.0, seconds / 4)):
                if last[0] and time.monotonic() - last[0] > seconds:
                    self.abort(reason)
                    return

        def seen(size: int) -> None:
            last[0] = time.monotonic()

        threading.Thread(target=watchdog, name="pgproof-stall-watch", daemon=True).start()
        self._stop_watch = stop
        return seen

    def close(self) -> None:
        self._timer.cancel()
        self._stop_watch.set()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._err_thread.join(timeout=5)
        if self._proc.stderr is not None and not self._err_thread.is_alive():
            self._proc.stderr.close()

    def finish(self) -> int:
        """Wait for the command; raise CommandError unless it exited 0."""
        try:
            rc = self._proc.wait(timeout=self._limit)
        except subprocess.TimeoutExpired:
            self._on_timeout()
            rc = self._proc.wait()
        self.close()
        tail = self.stderr_text()[-STDERR_TAIL_BYTES:]
        shown = [self._runner.redact(a) for a in self._argv]
        if self._timed_out:
            reason = self._abort_reason or f"timed out after {self._limit:g} s"
            raise CommandTimeout(shown, None, tail, reason)
        if rc != 0:
            raise CommandError(shown, rc, tail)
        return rc
