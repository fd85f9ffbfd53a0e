"""How backups are made and kept.

PostgreSQL tooling (binary discovery, one runner for every external command), storage
(filesystem, S3), the catalog of manifests, logical and physical backup jobs, the WAL
archive, retention and the fast health checks. Nothing in this package imports the
verifier, the exporters, the alerts or the program.

Errors: every error raised on purpose derives from :class:`backups.errors.BackupError`.
"""

from pgproof.backups.errors import BackupError

__all__ = ["BackupError"]
