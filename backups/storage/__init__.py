"""Repositories: where backups, WAL and result records are kept (filesystem or S3)."""

from pgproof.backups.storage.base import ObjectInfo, Repository, StoredObject

__all__ = ["ObjectInfo", "Repository", "StoredObject"]
