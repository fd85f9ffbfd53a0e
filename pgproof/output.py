"""What the CLI prints and how it exits: one line per problem on stderr, one JSON document on
stdout with ``--json``, progress only on a terminal.

Exit codes: 0 success, 1 the job failed (or problems found), 2 usage or configuration error,
255 ``wal-fetch`` could not read any repository (PostgreSQL then stops recovery instead of
ending it early).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from pgproof.backups.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FETCH_ABORT = 0, 1, 2, 255


def err(message: str) -> None:
    sys.stderr.write(f"pgproof: {message}\n")


def out_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def progress_for(args: argparse.Namespace) -> Progress:
    """A progress line on an interactive stderr; nothing with --json or without a terminal."""
    from pgproof.backups.progress import NullProgress

    if getattr(args, "json", False) or not sys.stderr.isatty():
        return NullProgress()
    from pgproof.progress import TerminalProgress

    return TerminalProgress()
