"""Putting a physical backup's files into the sandbox: the base archive, every tablespace
(extracted inside the sandbox and linked from ``pg_tblspc/<oid>``, never at production's
location), the backup_manifest pg_verifybackup reads, and their owner."""

from __future__ import annotations

import os
from pathlib import Path

from pgproof.backups import catalog, compression
from pgproof.backups.physical import parse_tablespace_map
from pgproof.backups.progress import NullProgress
from pgproof.verifier.errors import RestoreFailed
from pgproof.verifier.extract import extract, in_thread
from pgproof.verifier.fetch import download, verified_chunks
from pgproof.verifier.job import RestoreJob
from pgproof.verifier.sandbox import Sandbox


def extract_file(job: RestoreJob, entry: catalog.BackupFile, dest: Path) -> None:
    chunks = verified_chunks(job.repo, job.manifest, entry, job.progress)
    if entry.compression.startswith("zstd"):
        chunks = compression.zstd_decompress(chunks)
    job.progress.start(f"restore {entry.name}", entry.size)
    try:
        extract(in_thread(chunks), dest)
    except compression.ZstdError as exc:
        raise RestoreFailed(
            f"backup {job.manifest.id}: {entry.name} does not decompress: {exc}"
        ) from exc
    job.progress.done()


def tablespace_root(sandbox: Sandbox) -> Path:
    return sandbox.work_dir / "tablespaces"


def restore_tablespaces(job: RestoreJob) -> int:
    """Every tablespace of the backup is extracted inside the sandbox and linked from
    ``pg_tblspc/<oid>``: nothing points at production's locations (the backup's
    tablespace_map, which names them, is removed once pg_verifybackup has read it).
    Returns the bytes restored."""
    manifest, data_dir = job.manifest, job.sandbox.data_dir
    mapped = set()
    map_file = data_dir / "tablespace_map"
    if map_file.exists():
        mapped = set(parse_tablespace_map(map_file.read_bytes()))
    listed = {t.oid for t in manifest.tablespaces}
    if mapped != listed:
        raise RestoreFailed(
            f"backup {manifest.id}: its tablespace_map names tablespaces {sorted(mapped)}, "
            f"its manifest {sorted(listed)}"
        )
    files = {f.name: f for f in manifest.files}
    size = 0
    for space in manifest.tablespaces:
        dest = tablespace_root(job.sandbox) / str(space.oid)
        dest.parent.mkdir(mode=0o700, exist_ok=True)
        extract_file(job, files[space.file], dest)
        link = data_dir / "pg_tblspc" / str(space.oid)
        link.parent.mkdir(mode=0o700, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(dest)
        size += files[space.file].size
    return size


def place_backup_manifest(job: RestoreJob) -> None:
    """pg_verifybackup reads backup_manifest from the data directory: a backup taken with
    tablespaces keeps it beside the archives, not inside base.tar."""
    target = job.sandbox.data_dir / "backup_manifest"
    if target.exists():
        return
    entry = next((f for f in job.manifest.files if f.role == "backup_manifest"), None)
    if entry is None:
        raise RestoreFailed(f"backup {job.manifest.id}: no backup_manifest in the backup")
    download(job.repo, job.manifest, entry, target, NullProgress())


def chown_tree(root: os.PathLike[str] | str, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), uid, gid)
