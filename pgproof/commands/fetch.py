"""``fetch``: one backup's files copied out of a repository into a directory, each verified
against its manifest (size, sha256) and, in an encrypted repository, decrypted: what a
restore by hand starts from (README's runbooks), whatever the repository."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pgproof.backups import catalog
from pgproof.backups.errors import BackupError
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.factory import opened
from pgproof.config import Config, Target
from pgproof.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out_json, progress_for
from pgproof.verifier.errors import VerifierError


def _find(
    repos: list[Repository], target: str, backup_id: str, wanted: str | None
) -> tuple[Repository, catalog.Manifest]:
    """The backup's first repository holding it complete (``wanted``: only that one)."""
    problems = []
    for repo in sorted(repos, key=lambda r: r.kind != "filesystem"):
        if wanted and repo.name != wanted:
            continue
        try:
            return repo, catalog.read_manifest(repo, target, backup_id)
        except BackupError as exc:
            problems.append(str(exc))
    where = f": {'; '.join(problems)}" if problems else ""
    raise LookupError(f"no complete backup {backup_id} of {target!r}{where}")


def cmd_fetch(cfg: Config, targets: tuple[Target, ...], args: argparse.Namespace) -> int:
    from pgproof.verifier import fetch

    target = targets[0]
    if target.settings.foreign is not None:
        err(f"fetch: {target.name}'s backups are another tool's: restore them with that tool")
        return EXIT_USAGE
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        err(f"fetch: {out} is not empty: pgproof never writes over files")
        return EXIT_USAGE
    with opened(target.settings.repositories) as repos:
        try:
            repo, manifest = _find(repos, target.name, args.backup, args.repository)
        except LookupError as exc:
            err(f"fetch: {exc}")
            return EXIT_FAILED
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        progress = progress_for(args)
        progress.start(f"fetch {manifest.id}", manifest.size)
        try:
            for entry in manifest.files:
                fetch.download(repo, manifest, entry, out / entry.name, progress)
        except VerifierError as exc:  # damaged, missing or unreadable: named by fetch
            err(f"fetch: {exc}")
            return EXIT_FAILED
        finally:
            progress.done()
        manifest_path = out / catalog.MANIFEST_NAME
        manifest_path.write_bytes(manifest.to_json())
        os.chmod(manifest_path, 0o600)
    files = [str(out / f.name) for f in manifest.files]
    if args.json:
        out_json(
            {
                "backup": manifest.id,
                "kind": manifest.kind,
                "repository": repo.name,
                "files": files,
                "manifest": str(manifest_path),
            }
        )
    else:
        print(f"{manifest.kind} backup {manifest.id} from {repo.name}: {len(files)} files in {out}")
    return EXIT_OK
