"""The ``pgproof`` command line (DESIGN.md: CLI contract).

Exit codes (``pgproof.output``): 0 success, 1 the job failed (or problems found), 2 usage or
configuration error. ``wal-fetch`` exits 1 when the file is not archived and 255 when no
repository could be read, so that PostgreSQL stops recovery instead of ending it early.
``--json`` prints exactly one JSON document on stdout.

Imports are lazy per command: ``wal-push``/``wal-fetch`` run once per WAL segment and must
start fast (no psycopg; boto3 only when an S3 repository is configured).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

from pgproof import __version__
from pgproof.configfields import ConfigError
from pgproof.output import EXIT_FAILED, EXIT_USAGE, err


def build_parser() -> argparse.ArgumentParser:
    import argparse  # not at module level: the async wal-push path must start fast

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # one line, exit 2 (argparse's default too)
            self.exit(EXIT_USAGE, f"pgproof: {message}\n")

    parser = _Parser(prog="pgproof", description="PostgreSQL backups, proven restorable.")
    parser.add_argument("--config", help="config file (default $PGPROOF_CONFIG or ./pgproof.yaml)")
    parser.add_argument("--version", action="version", version=f"pgproof {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_target(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--target", help="target name (needed when several are configured)")
        return p

    p = with_target(sub.add_parser("backup", help="take one backup into every repository"))
    p.add_argument("kind", choices=("logical", "physical"))
    p.add_argument("--json", action="store_true")
    p = with_target(sub.add_parser("wal-push", help="archive_command: pgproof wal-push %%p"))
    p.add_argument("path")
    p = with_target(sub.add_parser("wal-push-worker"))  # internal: no help=, not listed
    p.add_argument("pg_wal")
    p.add_argument("--lock-fd", type=int, default=None)
    p = with_target(sub.add_parser("wal-fetch", help="restore_command: pgproof wal-fetch %%f %%p"))
    p.add_argument("name")
    p.add_argument("dest")
    p = with_target(sub.add_parser("list", help="backups, sizes and state"))
    p.add_argument("--json", action="store_true")
    p = with_target(sub.add_parser("fetch", help="copy one backup's files out, verified"))
    p.add_argument("--backup", required=True, help="the backup id (pgproof list)")
    p.add_argument("--out", required=True, help="a new or empty directory")
    p.add_argument("--repository", help="read from this repository only")
    p.add_argument("--json", action="store_true")
    p = with_target(sub.add_parser("check", help="fast checks without restoring"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-data", action="store_true", help="check sizes only, do not re-hash")
    p = with_target(sub.add_parser("verify", help="restore test: restore, recover, check"))
    p.add_argument("--backup", default="latest", help="backup id (default: latest)")
    p.add_argument("--kind", choices=("logical", "physical"), help="default: both")
    p.add_argument(
        "--pitr",
        default="latest",
        help="physical: latest | random | immediate | TIMESTAMP | lsn:X/Y | xid:N | name:R",
    )
    p.add_argument("--json", action="store_true")
    p = with_target(sub.add_parser("retention", help="apply retention"))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    p = with_target(sub.add_parser("heartbeat", help="write the heartbeat row on the source"))
    p.add_argument("--once", action="store_true")
    p = with_target(sub.add_parser("report", help="audit report of the restore tests"))
    p.add_argument("--format", choices=("html", "json"), default="html")
    p.add_argument("--out", help="write to this file (default: stdout)")
    p.add_argument(
        "--verify-chain",
        action="store_true",
        help="recompute the hash chain of result records; exit 1 names what was tampered with",
    )
    p.add_argument("--json", action="store_true", help="with --verify-chain: one JSON document")
    p = sub.add_parser("keys", help="make keys: a record-signing key pair or a master key")
    keys = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    k = keys.add_parser("generate", help="write a new key (0600); never overwrites")
    k.add_argument("--type", choices=("signing", "master"), default="signing")
    k.add_argument("--out", required=True, help="the key file (signing: also FILE.pub)")
    k.add_argument("--json", action="store_true")
    p = sub.add_parser("serve", help="metrics and health over HTTP, alert emails")
    p.add_argument("--listen", help="host:port (default: http.listen of the config)")
    p.add_argument("--log-format", choices=("text", "json"), help="default: serve.log_format")
    # the internal async WAL worker (added without help=, so not listed) stays out of usage
    sub.metavar = "{" + ",".join(c for c in sub.choices if c != "wal-push-worker") + "}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pgproof import walfast

    fast = walfast.try_fast(list(sys.argv[1:] if argv is None else argv))
    if fast is not None:
        return fast
    from pgproof import lifeline

    lifeline.bind_to_serve()
    args = build_parser().parse_args(argv)
    if args.command == "keys":  # needs no config
        from pgproof.commands.keys import cmd_keys

        return cmd_keys(args)
    from pgproof import config as config_mod

    try:
        cfg = config_mod.load(args.config)
        single = args.command in (
            "wal-push",
            "wal-push-worker",
            "wal-fetch",
            "backup",
            "heartbeat",
            "verify",
            "fetch",
        )
        name = getattr(args, "target", None)
        targets = (cfg.target(name),) if single else cfg.select(name)
    except ConfigError as exc:
        err(f"configuration error: {exc}")
        return EXIT_USAGE
    from pgproof.backups.errors import BackupError
    from pgproof.commands import handler

    try:
        return handler(args.command)(cfg, targets, args)
    except ConfigError as exc:
        err(f"configuration error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BackupError as exc:  # e.g. a repository that cannot be opened
        err(f"{args.command}: {exc}")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, exit 1
        if os.environ.get("PGPROOF_DEBUG"):
            raise
        from pgproof.backups.redact import redact

        err(f"{args.command} failed unexpectedly: {type(exc).__name__}: {redact(str(exc))}")
        return EXIT_FAILED
