"""Restore tests in throwaway PostgreSQL containers (the Docker API: Docker or podman).

One container per restore test, from the image of the backup's major version (the
``image`` template's ``{major}``). Its only own process is a keeper shell; every server-side
program runs in it with ``exec``: initdb, the postmaster, pg_ctl, pg_verifybackup, pg_waldump,
pg_checksums. Binaries are found in the official images' layout (/usr/lib/postgresql/N/bin)
or on the image's PATH, and the server's version must be the backup's major.

- Files: the sandbox's private directory (``data``, ``sock``, ``work``, ``server.log``, the
  same layout as the process sandbox) is bind-mounted at the same path, so no path needs
  translating; pgproof writes the restored files from outside.
- Identity: the container runs as the uid/gid that owns those files (the host's postgres user
  when pgproof runs as root), named ``postgres`` by a generated /etc/passwd and /etc/group
  mounted read-only; the client tools outside reach the server through the socket.
- Isolation: no network (``network_mode: none``), read-only root filesystem with a small
  /tmp, every capability dropped, no-new-privileges, memory (no swap), CPU and pids limits,
  nofile/nproc ulimits. The repository is never mounted: backup files and WAL are fetched and
  checked outside and handed in through the work directory.
- Lifetime: labels name the owning host, process and directory; ``destroy`` removes the
  container with its anonymous volumes (the official images declare one), and :func:`reap`
  removes the containers of an owner that died. No helper container (testcontainers' Ryuk)
  holds the engine's socket: pgproof removes its own containers.
- Engine errors: every call to the engine goes through :func:`engine_calls`, the one place
  where the client's exceptions become ``EngineUnavailable`` (no answer) or the
  ``SandboxError`` of what the engine refused.

Commands run detached, their output and exit status written to files in the work directory
(a long pg_verifybackup keeps no API connection open); a command that outlives its timeout
takes the container with it (the engine cannot signal an exec'd process).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psycopg
from docker.models.containers import Container
from docker.types import Ulimit

from pgproof.backups import process
from pgproof.backups.errors import CommandError, CommandTimeout
from pgproof.backups.runner import CommandResult, Runner
from pgproof.verifier import engine
from pgproof.verifier.containersettings import ContainerSettings
from pgproof.verifier.engine import LABEL, LABEL_HOST, LABEL_PID
from pgproof.verifier.errors import EngineUnavailable, SandboxError
from pgproof.verifier.sandbox import LocalDirSandbox

KEEPER = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


class ContainerSandbox(LocalDirSandbox):
    kind = "container"

    def __init__(
        self,
        settings: ContainerSettings,
        major: int,
        runner: Runner,
        root: str | None = None,
        poll: float = 0.2,
    ):
        super().__init__(runner, root, max(64, settings.memory_mb // 2))
        self.settings = settings
        self.image = settings.image_for(major)
        self.major = major
        self.poll = poll
        self._server_rc: Path | None = None
        self._exec_lock = threading.Lock()
        self._serial = 0
        self._client: docker.DockerClient | None = None
        self._keeper: Container | None = None  # the container (its keeper shell runs)
        try:
            self._client = engine.make_client(settings)
            self._keeper = self._create(self._client)
            self.bindir, self.libdir, self.has_zstd = self._probe(major)
        except BaseException:
            self.destroy()
            raise

    # -- the container -------------------------------------------------------------------
    def _identity(self) -> tuple[int, int]:
        ident = self.runner.postgres_identity()
        return (ident.uid, ident.gid) if ident is not None else (os.getuid(), os.getgid())

    def _create(self, client: docker.DockerClient) -> Container:
        uid, gid = self._identity()
        etc = self.base / "etc"
        etc.mkdir(mode=0o755)
        (etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/sh\npostgres:x:{uid}:{gid}:pgproof sandbox:"
            f"{self.work_dir}:/bin/sh\n"
        )
        (etc / "group").write_text(f"root:x:0:\npostgres:x:{gid}:\n")
        engine.ensure_image(client, self.settings, self.image)
        s = self.settings
        with engine.engine_calls(s):
            container = client.containers.create(
                self.image,
                command=["/bin/sh", "-c", KEEPER],
                name=self.base.name,
                volumes={
                    str(self.base): {"bind": str(self.base), "mode": "rw"},
                    str(etc / "passwd"): {"bind": "/etc/passwd", "mode": "ro"},
                    str(etc / "group"): {"bind": "/etc/group", "mode": "ro"},
                },
                user=f"{uid}:{gid}",
                network_mode="none",
                labels={
                    LABEL: str(self.base),
                    LABEL_HOST: socket.gethostname(),
                    LABEL_PID: str(os.getpid()),
                },
                read_only=True,
                tmpfs={"/tmp": "rw,size=64m,mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=f"{s.memory_mb}m",
                memswap_limit=f"{s.memory_mb}m",
                shm_size=f"{max(64, s.memory_mb // 4)}m",
                nano_cpus=round(s.cpus * 1e9),
                pids_limit=s.pids,
                ulimits=[
                    Ulimit(name="nofile", soft=s.nofile, hard=s.nofile),
                    Ulimit(name="nproc", soft=s.nproc, hard=s.nproc),
                ],
                working_dir=str(self.work_dir),
            )
        self._keeper = container  # removed by destroy() whatever happens next

        def not_started(exc: docker.errors.APIError) -> SandboxError:
            return SandboxError(
                f"the container engine could not start image {self.image}: "
                f"{engine.explain(exc)}{self._logs_note()}"
            )

        with engine.engine_calls(s, not_started):
            container.start()
        self._settle()
        return container

    def _settle(self) -> None:
        """A container whose keeper dies at once cannot run anything: say why (its log)."""
        time.sleep(0.05)
        state = self._state()
        if state is not None and state.get("Running"):
            return
        code = state.get("ExitCode") if state else None
        raise SandboxError(
            f"the container of image {self.image} exited as soon as it started (exit code "
            f"{code}); the image needs /bin/sh and sleep{self._logs_note()}"
        )

    def _container(self) -> Container:
        if self._keeper is None:
            raise SandboxError("the sandbox container is gone")
        return self._keeper

    def _api(self) -> docker.APIClient:
        if self._client is None:
            raise SandboxError("the sandbox container is gone")
        return self._client.api

    def _state(self) -> dict[str, Any] | None:
        """The container's state, None when it no longer exists."""
        try:
            container = self._container()
        except SandboxError:
            return None
        with engine.engine_calls(self.settings):
            try:
                container.reload()
            except docker.errors.NotFound:
                return None
            return dict(container.attrs.get("State") or {})

    def _logs_note(self, size: int = 2000) -> str:
        """The container's own output, for an error message (empty when it cannot be had)."""
        try:
            with engine.engine_calls(self.settings):
                raw = self._container().logs(stdout=True, stderr=True)
        except (SandboxError, EngineUnavailable):
            return ""
        text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else ""
        return f"\ncontainer log (last {size} chars):\n{text[-size:]}" if text else ""

    def _gone(self, doing: str) -> SandboxError:
        state = self._state()
        if state is None:
            why = "the container was removed"
        elif state.get("OOMKilled"):
            why = f"out of memory (limit {self.settings.memory_mb} MB): the kernel killed it"
        else:
            why = f"exit code {state.get('ExitCode')}"
            if state.get("Error"):
                why += f", {state['Error']}"
        return SandboxError(
            f"the sandbox container stopped while {doing} ({why}){self._logs_note()}"
        )

    # -- what the image has -----------------------------------------------------------------
    def _probe(self, major: int) -> tuple[str, str, bool]:
        debian = f"/usr/lib/postgresql/{major}/bin"
        script = (
            f"if [ -x {debian}/postgres ]; then d={debian}; "
            'elif p=$(command -v postgres); then d=$(dirname "$p"); '
            f'else echo "no PostgreSQL server in the image: neither {debian}/postgres '
            'nor postgres on PATH" >&2; exit 3; fi; '
            'echo "$d"; "$d/postgres" --version || exit 4; '
            'if [ -x "$d/pg_config" ]; then "$d/pg_config" --pkglibdir; '
            'else echo "$(dirname "$d")/lib"; fi; '
            "if command -v zstd >/dev/null 2>&1; then echo zstd; else echo -; fi"
        )
        try:
            res = self._exec(["/bin/sh", "-c", script], timeout=60, doing="looking at the image")
        except CommandError as exc:
            raise SandboxError(f"image {self.image}: {exc.stderr_tail.strip()[-500:]}") from None
        lines = res.stdout.decode(errors="replace").split("\n")
        if len(lines) < 4:
            raise SandboxError(f"image {self.image}: unexpected answer {lines!r}")
        bindir, version, libdir, zstd = (line.strip() for line in lines[:4])
        match = _VERSION.search(version)
        if not match or int(match.group(1)) != major:
            raise SandboxError(
                f"image {self.image} runs {version or 'no PostgreSQL'!s}, but this backup needs "
                f"PostgreSQL {major}: set verifier.image (or the target's image) to an image "
                "of the backup's major, e.g. postgres:{major}"
            )
        return bindir, libdir, zstd == "zstd"

    # -- commands -----------------------------------------------------------------------
    def _exec(
        self,
        argv: list[str],
        timeout: float,
        doing: str,
        env: Mapping[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> CommandResult:
        with self._exec_lock:
            self._serial += 1
            stem = self.work_dir / f".exec-{self._serial}"
        rc, out, err = (Path(f"{stem}.{x}") for x in ("rc", "out", "err"))
        wrapper = '"$@" >"$0.out" 2>"$0.err"; echo $? >"$0.rc.tmp" && mv "$0.rc.tmp" "$0.rc"'
        started = time.monotonic()
        self._spawn(["/bin/sh", "-c", wrapper, str(stem), *argv], doing, env)
        delay, checked = 0.002, started
        doing = f"running {self.runner.redact(shlex.join(argv))[:200]}"
        try:
            while not rc.exists():
                now = time.monotonic()
                if now - started > timeout:
                    self._remove()
                    raise CommandTimeout(
                        argv,
                        None,
                        self._read(err),
                        f"timed out after {timeout:g} s (the sandbox container was removed)",
                    )
                checked = self._check_alive(checked, doing)
                time.sleep(delay)
                delay = min(delay * 1.5, self.poll)
            code = int(rc.read_text().strip() or "-1")
            stdout = out.read_bytes() if out.exists() else b""
            stderr = self._read(err)
        finally:
            for path in (rc, out, err):
                path.unlink(missing_ok=True)
        result = CommandResult(argv, code, stdout, stderr, time.monotonic() - started)
        if code not in ok_codes:
            raise CommandError(argv, code, stderr[-8192:])
        return result

    def _spawn(self, argv: list[str], doing: str, env: Mapping[str, str] | None = None) -> None:
        """Start ``argv`` in the container, detached (its end is seen through files)."""
        container = self._container()
        with engine.engine_calls(self.settings, lambda exc: self._gone(doing)):
            api = self._api()
            exec_id = api.exec_create(container.id, argv, environment=dict(env or {}))["Id"]
            api.exec_start(exec_id, detach=True)

    def _check_alive(self, checked: float, doing: str) -> float:
        """Once a second, ask the engine whether the container still runs (SandboxError
        naming why when it stopped); returns when it last asked."""
        now = time.monotonic()
        if now - checked <= 1.0:
            return checked
        state = self._state()
        if not (state and state.get("Running")):
            raise self._gone(doing)
        return now

    def _read(self, path: Path) -> str:
        try:
            return self.runner.redact(path.read_bytes().decode(errors="replace"))
        except OSError:
            return ""

    def run(self, program: str, args: list[str], timeout: float, **kw: Any) -> CommandResult:
        env = dict(kw.pop("env", None) or {})
        env.update(self.client_env())
        ok_codes = tuple(kw.pop("ok_codes", (0,)))
        if kw:
            raise TypeError(f"container sandbox: unsupported options {sorted(kw)}")
        return self._exec(
            [f"{self.bindir}/{program}", *args],
            timeout,
            doing=f"running {program}",
            env=env,
            ok_codes=ok_codes,
        )

    def libraries(self) -> set[str]:
        try:
            res = self._exec(["ls", "-1", self.libdir], timeout=30, doing="listing libraries")
        except (CommandError, SandboxError):
            return set()
        return {n.removesuffix(".so") for n in res.stdout.decode(errors="replace").split()}

    # -- the server ---------------------------------------------------------------------
    def start(self, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
        """The postmaster runs under an exec'd shell that records its exit status."""
        self._server_rc = self.work_dir / ".server.rc"
        self._server_rc.unlink(missing_ok=True)
        script = '"$0" -D "$1" >>"$2" 2>&1; echo $? >"$3"'
        argv = [
            "/bin/sh",
            "-c",
            script,
            f"{self.bindir}/postgres",
            str(self.data_dir),
            str(self.log_file),
            str(self._server_rc),
        ]
        self._spawn(argv, "starting the server")
        self.running = True
        ping = psycopg.pq.PGconn.ping
        target = self.conninfo().encode()
        checked = time.monotonic()

        def check() -> None:
            nonlocal checked
            if self._server_rc is not None and self._server_rc.exists():
                self.running = False
                raise SandboxError(
                    f"sandbox server exited while starting:\n{self.why_it_stopped()}"
                )
            try:
                checked = self._check_alive(checked, "the server was starting")
            except SandboxError as exc:
                self.running = False
                raise SandboxError(f"{exc}\n{self.log_tail()}") from None

        # PQPING_OK (0): accepting connections
        if not process.wait_until(lambda: ping(target) == 0, timeout, self.poll, check, on_wait):
            raise SandboxError(f"sandbox not ready after {timeout:g} s:\n{self.log_tail()}")

    def _server_up(self) -> bool:
        return self.running and (self.data_dir / "postmaster.pid").exists()

    def _kill_server(self) -> None:
        with contextlib.suppress(CommandError, SandboxError):
            self.run("pg_ctl", ["-D", str(self.data_dir), "-m", "immediate", "stop"], 30)

    def _remove(self) -> None:
        """Remove the container and its anonymous volumes (the server dies with it)."""
        keeper, self._keeper = self._keeper, None
        client, self._client = self._client, None
        try:
            if keeper is not None:
                with contextlib.suppress(EngineUnavailable), engine.engine_calls(self.settings):
                    with contextlib.suppress(docker.errors.NotFound):
                        keeper.remove(force=True, v=True)
        finally:
            if client is not None:
                client.close()

    def destroy(self) -> None:
        self.running = False
        self._remove()
        shutil.rmtree(self.base, ignore_errors=True)
