"""A folder of a repository, listed incrementally: on a filesystem only when its mtime
changed; on S3 only the names after the newest known ones (ids and WAL names sort by time),
with ``RELIST_OVERLAP`` names re-listed before them (parallel pushes land out of order), and
a full listing every so often to see deletions (``exporters.index`` decides when)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from pgproof.backups.storage.base import Repository

RELIST_OVERLAP = 512


@dataclass
class Folder:
    """The names directly under one folder, kept up to date with as little listing as can be."""

    prefix: str
    # sub-folders count only while they hold an object (S3-compatible servers with real
    # directories, SeaweedFS among them, keep listing a prefix whose objects are all gone)
    deep: bool = False
    names: set[str] = field(default_factory=set)
    ordered: list[str] = field(default_factory=list)
    token: str | None = None
    listed_at: float | None = None  # monotonic time of the last full listing

    def update(
        self, repo: Repository, now: float, full_every: float, force_full: bool = False
    ) -> Change:
        """What changed since the last committed update (folders end with ``/``). Nothing
        is remembered until the caller, having processed it, calls ``commit()``: a refresh
        that fails half way sees the same change again next time."""
        token = repo.change_token(self.prefix)
        if token is not None and token == self.token and self.listed_at is not None:
            return Change(self, [], set(), token, None)
        incremental = (
            token is None
            and not force_full
            and self.listed_at is not None
            and now - self.listed_at < full_every
            and not repo.listing_is_cheap
        )
        if incremental:
            after = None
            if len(self.names) >= RELIST_OVERLAP:
                after = heapq.nlargest(RELIST_OVERLAP, self.names)[-1].rstrip("/")
            added = sorted(n for n in repo.child_names(self.prefix, after) if n not in self.names)
            return Change(self, added, set(), token, None)
        current = set(self._full(repo))
        return Change(self, sorted(current - self.names), self.names - current, token, now)

    def _full(self, repo: Repository) -> list[str]:
        if not self.deep or repo.listing_is_cheap:
            return repo.child_names(self.prefix)
        names: set[str] = set()
        for info in repo.listing(self.prefix):
            name, sep, _ = info.key[len(self.prefix) :].partition("/")
            names.add(name + sep)
        return list(names)


@dataclass
class Change:
    folder: Folder
    added: list[str]
    removed: set[str]
    token: str | None
    listed_at: float | None  # set when this was a full listing

    def commit(self) -> None:
        f = self.folder
        if self.added or self.removed:
            f.names.difference_update(self.removed)
            f.names.update(self.added)
        f.token = self.token
        if self.listed_at is not None:
            f.listed_at = self.listed_at
