"""Who a process sandbox runs as, and the refusal to share that user with a real cluster.

A restore test's server and tools run as a dedicated unprivileged OS user
(``verifier.sandbox_user``, ``pgproof-sandbox`` by default, created by ``scripts/setup``),
not as ``postgres``: production's data directory and tablespaces (0700, owned by
``postgres``) and the repositories (owned by whoever runs pgproof) cannot be opened for
writing by it, whatever path a restored cluster's WAL or catalog names. pgproof, as root,
hands files in (chowned to that user) and reads results out.

When pgproof is not root it cannot switch users; then the sandbox runs as pgproof's own user,
and that is refused if the same user owns a PostgreSQL data directory on this machine (a
running server, or a Debian-registered cluster) unless ``verifier.share_sandbox_user`` says
the operator accepts it. The collecting of facts (``local_clusters``) is apart from the
decision (``sharing``), which is pure.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pgproof.backups.runner import Runner
from pgproof.verifier.errors import SandboxUserError
from pgproof.verifier.settings import DEFAULT_SANDBOX_USER

__all__ = ["DEFAULT_SANDBOX_USER", "LocalCluster", "sandbox_runner", "sharing"]

SANDBOX_PREFIX = "pgproof-sandbox-"  # verifier.sandbox.PREFIX: a sandbox's own directory


@dataclass(frozen=True)
class LocalCluster:
    data_dir: str
    owner_uid: int
    how: str  # "running, PID n" | "registered in /etc/postgresql"


def _is_data_dir(path: Path) -> bool:
    return (path / "PG_VERSION").is_file() and (path / "global").is_dir()


def running_clusters(proc: Path = Path("/proc")) -> list[LocalCluster]:
    """Data directories of running PostgreSQL servers we can see (a postmaster's and its
    children's working directory is the data directory; without root only our own). The
    directory is looked at through ``/proc/<pid>/cwd``, so a server in a container counts too
    (by the uid that owns its files on this machine: the official image's postgres is uid
    999, which may be a local system user's too)."""
    found: dict[tuple[int, int], LocalCluster] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            cwd = entry / "cwd"
            st = cwd.stat()
            if (st.st_dev, st.st_ino) in found or not _is_data_dir(cwd):
                continue
            shown = os.readlink(cwd)
            found[(st.st_dev, st.st_ino)] = LocalCluster(
                shown, st.st_uid, f"running, PID {entry.name}"
            )
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to look at
    return list(found.values())


def registered_clusters(etc: Path = Path("/etc/postgresql")) -> list[LocalCluster]:
    """Clusters Debian's postgresql-common knows (``/etc/postgresql/<version>/<name>``)."""
    out = []
    for conf in sorted(etc.glob("*/*/postgresql.conf")) if etc.is_dir() else ():
        version, name = conf.parent.parent.name, conf.parent.name
        data = Path(f"/var/lib/postgresql/{version}/{name}")
        try:
            for line in conf.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "data_directory":
                    data = Path(value.split("#", 1)[0].strip().strip("'\""))
            if _is_data_dir(data):
                out.append(
                    LocalCluster(data.as_posix(), data.stat().st_uid, f"registered in {conf}")
                )
        except OSError:
            continue
    return out


def local_clusters() -> list[LocalCluster]:
    seen: dict[str, LocalCluster] = {}
    for cluster in running_clusters() + registered_clusters():
        seen.setdefault(cluster.data_dir, cluster)
    return list(seen.values())


def sharing(uid: int, clusters: Iterable[LocalCluster]) -> list[LocalCluster]:
    """The clusters ``uid`` could write: those it owns, other than pgproof's own sandboxes."""
    return [
        c
        for c in clusters
        if c.owner_uid == uid
        and not any(p.startswith(SANDBOX_PREFIX) for p in Path(c.data_dir).parts)
    ]


def sandbox_runner(runner: Runner, user: str, share_allowed: bool) -> Runner:
    """The runner a process sandbox runs its server and tools with (as ``user`` when we are
    root, else as ourselves); refused when that user owns a PostgreSQL data directory here."""
    sandboxed = runner.as_user(user)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise SandboxUserError(
                f"the sandbox user {user!r} does not exist: create it (scripts/setup does: "
                f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "
                f"{user}) or set verifier.sandbox_user"
            ) from None
        ident = sandboxed.postgres_identity()
        assert ident is not None
        uid, shown = ident.uid, f"the sandbox user {user!r}"
        if uid == 0:
            raise SandboxUserError(f"verifier.sandbox_user must not be root ({user!r} is uid 0)")
    else:
        uid, shown = os.geteuid(), f"pgproof's own user (uid {os.geteuid()}; not root)"
    if share_allowed:
        return sandboxed
    shared = sharing(uid, local_clusters())
    if shared:
        named = "; ".join(f"{c.data_dir} ({c.how})" for c in shared[:3])
        raise SandboxUserError(
            f"refusing to run a restore test as {shown}: it owns the PostgreSQL data "
            f"directory {named}, which a restored cluster's WAL or catalog could then write. "
            f"Run sandboxes as a dedicated user (verifier.sandbox_user, scripts/setup creates "
            f"{DEFAULT_SANDBOX_USER}), or set verifier.share_sandbox_user: true to accept it"
        )
    return sandboxed
