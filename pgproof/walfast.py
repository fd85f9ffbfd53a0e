"""The async ``wal-push`` foreground without loading the YAML config.

PostgreSQL archives one file at a time, so with async archiving the foreground's own cost
bounds throughput. The first ``wal-push`` of a config writes a small JSON cache (per user,
keyed by the config's path, invalidated by its mtime and size) with what the foreground
needs: whether the target archives asynchronously, its spool and timeout. Later calls read
it, wait for the worker's verdict and exit, importing little more than the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

from pgproof import __version__


def _cache_path(config_path: str) -> str | None:
    directory = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"pgproof-{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(directory):
        return None  # not ours or not private: do not trust or write it
    key = config_path.strip("/").replace("%", "%25").replace("/", "%2F")
    return os.path.join(directory, f"walpush-{key[-200:]}.json")


def _stamp(config_path: str) -> list[int] | None:
    try:
        st = os.stat(config_path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def write_cache(config_path: str, targets: dict[str, dict[str, Any]]) -> None:
    """Remember, for this config file, what the async foreground needs (best effort)."""
    config_path = os.path.abspath(config_path)
    path, stamp = _cache_path(config_path), _stamp(config_path)
    if path is None or stamp is None:
        return
    doc = {"config": config_path, "stamp": stamp, "version": __version__, "targets": targets}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError:
        pass


def _parse(argv: list[str]) -> tuple[str, str, str | None] | None:
    """``[--config C] wal-push PATH [--target T]`` -> (config, path, target); else None."""
    config = os.environ.get("PGPROOF_CONFIG") or "pgproof.yaml"
    rest = list(argv)
    if rest[:1] == ["--config"] and len(rest) >= 2:
        config, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--config="):
        config, rest = rest[0].split("=", 1)[1], rest[1:]
    if rest[:1] != ["wal-push"]:
        return None
    rest = rest[1:]
    target = None
    if "--target" in rest:
        i = rest.index("--target")
        if i + 1 >= len(rest):
            return None
        target = rest[i + 1]
        del rest[i : i + 2]
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    return os.path.abspath(config), rest[0], target


def try_fast(argv: list[str]) -> int | None:
    """Run the async foreground from the cache; None means: take the normal path."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    config_path, wal_path, target = parsed
    cache = _cache_path(config_path)
    if cache is None:
        return None
    try:
        with open(cache) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if doc.get("stamp") != _stamp(config_path) or doc.get("version") != __version__:
        return None
    targets = doc.get("targets", {})
    if target is None and len(targets) == 1:
        target = next(iter(targets))
    entry = targets.get(target) if target else None
    if not entry or not entry.get("async"):
        return None
    return run_foreground(
        config_path, target or "", wal_path, entry["spool_dir"], float(entry["timeout"])
    )


def run_foreground(
    config_path: str, target: str, wal_path: str, spool_dir: str, timeout: float
) -> int:
    from pgproof.backups import walasync
    from pgproof.backups.errors import BackupError

    name = os.path.basename(wal_path)
    try:
        pg_wal = walasync.check_ready_dir(wal_path)
        spool = walasync.Spool.for_target(spool_dir, target)
        spool.prepare()
    except (BackupError, OSError) as exc:
        sys.stderr.write(f"pgproof: wal-push {name}: {exc}\n")
        return 1

    def spawn(lock_fd: int) -> None:
        import subprocess

        from pgproof.backups import process

        with open(spool.log_path(), "ab") as log:
            process.spawn(  # detached (its own session): outlives this archive_command
                [
                    sys.executable,
                    "-m",
                    "pgproof",
                    "--config",
                    config_path,
                    "wal-push-worker",
                    "--target",
                    target,
                    "--lock-fd",
                    str(lock_fd),
                    str(pg_wal),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(lock_fd,),
            )

    ok, why = walasync.wait_for(spool, name, timeout, spawn)
    if not ok:
        sys.stderr.write(f"pgproof: wal-push {name}: {why}\n")
    return 0 if ok else 1
