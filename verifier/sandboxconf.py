"""What a sandbox's configuration says: pure functions, no I/O.

A restored cluster brings production's settings (archive_command, primary_conninfo,
restore_command, ssl files, hba_file, shared_preload_libraries...). pgproof replaces
``postgresql.conf`` and ``postgresql.auto.conf`` with its own (the originals are kept beside,
renamed) so nothing from production can reach out or fail to load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SETTING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(.*?)\s*$")


def parse_conf(text: str) -> dict[str, str]:
    """Last value of each setting in a postgresql.conf text (quotes removed, comments cut)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if not line.strip():
            continue
        match = _SETTING.match(line)
        if not match:
            continue
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'")
        values[match.group(1).lower()] = value
    return values


def _strip_comment(line: str) -> str:
    out, quoted = [], False
    for ch in line:
        if ch == "'":
            quoted = not quoted
        if ch == "#" and not quoted:
            break
        out.append(ch)
    return "".join(out)


def split_list(value: str) -> list[str]:
    return [v.strip().strip('"') for v in value.split(",") if v.strip()]


def usable_preload(requested: Iterable[str], available: set[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): production's shared_preload_libraries that the sandbox can load."""
    kept: list[str] = []
    dropped: list[str] = []
    for lib in requested:
        name = lib.rsplit("/", 1)[-1].removeprefix("$libdir/").removesuffix(".so")
        (kept if name in available else dropped).append(name)
    return kept, dropped


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Recovery:
    """Recovery settings for a physical restore (restore_command reads local files only)."""

    restore_command: str
    target: Mapping[str, str]  # e.g. {"recovery_target_time": "..."} or {} for latest


def render(
    socket_dir: str,
    port: int,
    *,
    fast: bool,
    preload: Iterable[str] = (),
    recovery: Recovery | None = None,
    memory_mb: int = 256,
    temp_file_limit_mb: int | None = None,
) -> str:
    """The sandbox's whole postgresql.conf."""
    settings: dict[str, str] = {
        "listen_addresses": quote(""),
        "unix_socket_directories": quote(socket_dir),
        "unix_socket_permissions": "0700",
        "port": str(port),
        "max_connections": "30",
        "superuser_reserved_connections": "3",
        "shared_buffers": f"{max(memory_mb // 4, 16)}MB",
        "maintenance_work_mem": f"{max(memory_mb // 4, 16)}MB",
        "archive_mode": "off",
        "archive_command": quote(""),
        "primary_conninfo": quote(""),
        "primary_slot_name": quote(""),
        "max_wal_senders": "0",
        "max_replication_slots": "0",
        "max_logical_replication_workers": "0",
        "hot_standby": "off",
        "ssl": "off",
        "shared_preload_libraries": quote(",".join(preload)),
        "logging_collector": "off",
        "log_min_messages": "warning",
        "log_checkpoints": "off",
        "jit": "off",
        "wal_level": "minimal" if fast and recovery is None else "replica",
        "fsync": "off" if fast else "on",
        "synchronous_commit": "off",
        "full_page_writes": "off" if fast else "on",
        "checkpoint_timeout": "30min",
        "max_wal_size": "4GB",
        "autovacuum": "off",
        "timezone": quote("UTC"),
        "log_timezone": quote("UTC"),
    }
    if temp_file_limit_mb:
        settings["temp_file_limit"] = f"{temp_file_limit_mb}MB"
    if recovery is not None:
        settings["restore_command"] = quote(recovery.restore_command)
        settings["recovery_target_timeline"] = quote("latest")
        settings["recovery_target_action"] = quote("promote")
        for key, value in recovery.target.items():
            settings[key] = value if key == "recovery_target_inclusive" else quote(value)
    lines = ["# written by pgproof for a throwaway restore-test sandbox"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


HBA = (
    "# pgproof sandbox: Unix socket only (directory mode 0700, owned by postgres)\n"
    "local all all {method}\n"
)
