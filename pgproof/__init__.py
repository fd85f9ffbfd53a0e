"""pgproof: runs PostgreSQL backups and proves they restore."""

__version__ = "0.1.0"
