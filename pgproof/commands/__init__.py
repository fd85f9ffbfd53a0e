"""One function per CLI command: parse what argparse gave, call the packages, print.

Each command's module is imported only when it runs (``wal-push`` and ``wal-fetch`` start
once per WAL segment). A command returns its exit code (``pgproof.output``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from pgproof.config import Config, Target

Command = Callable[[Config, tuple[Target, ...], argparse.Namespace], int]

_MODULES = {
    "backup": "backup",
    "retention": "backup",
    "wal-push": "wal",
    "wal-push-worker": "wal",
    "wal-fetch": "wal",
    "list": "inspect",
    "check": "inspect",
    "fetch": "fetch",
    "verify": "verify",
    "report": "verify",
    "heartbeat": "serve",
    "serve": "serve",
}


def handler(command: str) -> Command:
    module = importlib.import_module(f"pgproof.commands.{_MODULES[command]}")
    found: Command = getattr(module, "cmd_" + command.replace("-", "_"))
    return found
