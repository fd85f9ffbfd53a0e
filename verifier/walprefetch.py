"""Fetching the WAL a replay needs, in parallel, before recovery starts.

A restore_command that starts Python per segment would cost more than the replay; instead
every needed segment (and every timeline history file) is fetched up front, in parallel and
as stored (zstd), its stored sha256 and the cluster's system identifier checked, continuity
checked; the sandbox's restore_command only decompresses local files (``zstd -d``, which
verifies each frame's checksum) while replay runs: the sandbox reaches no repository. A
sandbox without zstd (a container image) gets the segments decompressed here instead.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pgproof.backups import catalog, walarchive, walnames
from pgproof.backups.errors import BackupError, KeyUnavailable
from pgproof.backups.progress import Progress
from pgproof.backups.runner import RunAs
from pgproof.backups.storage.base import Repository
from pgproof.verifier.errors import RepositoryUnavailable, RestoreFailed


@dataclass(frozen=True)
class Prefetched:
    directory: Path
    segments: list[str]
    histories: list[str]
    last_segment: str | None  # the newest archived segment on the replay path
    bytes: int
    bad_copies: tuple[str, ...] = ()  # "repository: problem" of copies skipped for a good one


def plan(
    listing: walarchive.ArchiveListing,
    histories: dict[int, list[walnames.HistoryEntry]],
    manifest: catalog.Manifest,
) -> tuple[list[str], str | None]:
    """Segment names from the backup's start to the newest archived, along the timeline path.

    RestoreFailed names the first missing segment (a gap means replay would stop early).
    """
    seg = manifest.wal_segment_size
    assert manifest.start_wal is not None
    start = walnames.parse_segment_name(manifest.start_wal, seg)
    report = walnames.check_continuity(set(listing.segments), histories, start, seg)
    if report.missing_history:
        raise RestoreFailed(f"timeline history file {report.missing_history[0]} is not archived")
    if report.missing:
        raise RestoreFailed(
            f"WAL segment {report.missing[0]} is missing from the archive "
            f"({len(report.missing)} missing between {report.first} and {report.last})"
        )
    if report.problems:
        raise RestoreFailed(f"WAL archive: {report.problems[0]}")
    if report.last is None:
        return [], None
    latest, end = walnames.parse_segment_name(report.last, seg)
    names = []
    for span in walnames.timeline_spans(latest, histories.get(latest, []), seg):
        lo = max(span.first_segno, start[1])
        hi = end if span.last_segno is None else min(span.last_segno, end)
        for segno in range(lo, hi + 1):
            if (span.timeline, segno) in listing.segments:
                names.append(walnames.segment_name(span.timeline, segno, seg))
            else:  # continuity accepted an older timeline's full copy
                older = [t for t, n in listing.segments if n == segno and t < span.timeline]
                names.append(walnames.segment_name(max(older), segno, seg))
    stop = walnames.stop_segment(walnames.parse_lsn(manifest.stop_lsn or "0/1"), seg)
    if end < stop:
        raise RestoreFailed(
            f"the archive ends at {report.last}, before the backup's end "
            f"({manifest.stop_wal}): the backup cannot become consistent"
        )
    return names, report.last


def prefetch(
    target: str,
    repos: Sequence[Repository],
    manifest: catalog.Manifest,
    directory: Path,
    owner: RunAs | None,
    progress: Progress,
    workers: int = 4,
    plain: bool = False,
) -> Prefetched:
    """``plain``: segments decompressed here (their original bytes' sha256 checked), for a
    server side without zstd; otherwise kept as stored."""
    seg = manifest.wal_segment_size
    listing = None
    for repo in sorted(repos, key=lambda r: r.kind != "filesystem"):
        try:
            listing = walarchive.list_archive(repo, target, seg)
            history_repo = repo
            break
        except BackupError:
            continue
    if listing is None:
        raise RestoreFailed(f"no repository of {target!r} could list the WAL archive")
    histories = {}
    for tli, key in listing.histories.items():
        try:
            histories[tli] = walnames.parse_history(history_repo.read_bytes(key).decode())
        except KeyUnavailable as exc:
            raise RepositoryUnavailable(f"timeline history {key}: {exc}") from exc
        except (BackupError, ValueError, UnicodeDecodeError) as exc:
            raise RestoreFailed(f"timeline history {key} is unreadable: {exc}") from exc
    names, last = plan(listing, histories, manifest)
    directory.mkdir(mode=0o700, exist_ok=True)
    wanted = names + [walnames.history_name(t) for t in sorted(histories)]
    expected_sysid = int(manifest.system_identifier)
    progress.start("fetch WAL", len(names) * seg)

    bad_copies: list[str] = []

    def one(name: str) -> int:
        try:
            if walnames.classify(name) is walnames.WalKind.SEGMENT and not plain:
                dest, header, skipped = walarchive.fetch_stored(target, repos, name, directory)
            elif walnames.classify(name) is walnames.WalKind.SEGMENT:
                dest = directory / name
                _, skipped = walarchive.fetch(target, repos, name, dest)
                with dest.open("rb") as fh:
                    header = fh.read(8192)
            else:  # history files: plain, PostgreSQL reads them directly
                dest = directory / name
                _, skipped = walarchive.fetch(target, repos, name, dest)
                header = b""
            bad_copies.extend(skipped)
        except walarchive.WalNotFound:
            raise RestoreFailed(f"WAL file {name} vanished from the archive") from None
        except KeyUnavailable as exc:  # nothing is known of the segment: an error
            raise RepositoryUnavailable(f"WAL file {name} cannot be decrypted here: {exc}") from exc
        except BackupError as exc:
            raise RestoreFailed(f"WAL file {name} could not be fetched: {exc}") from exc
        size = dest.stat().st_size
        if walnames.classify(name) is walnames.WalKind.SEGMENT:
            try:
                sysid = walnames.parse_segment_header(header).system_identifier
            except ValueError as exc:
                raise RestoreFailed(f"WAL segment {name} is not a WAL segment: {exc}") from None
            if sysid != expected_sysid:
                raise RestoreFailed(
                    f"WAL segment {name} belongs to another cluster (system identifier {sysid}, "
                    f"the backup's is {expected_sysid})"
                )
            progress.advance(size)
        if owner is not None:
            os.chown(dest, owner.uid, owner.gid)
        return size

    total = 0
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, n) for n in wanted]
        try:
            for future in concurrent.futures.as_completed(futures):
                total += future.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    progress.done()
    if owner is not None:
        os.chown(directory, owner.uid, owner.gid)
    return Prefetched(
        directory,
        names,
        [n for n in wanted if n.endswith(".history")],
        last,
        total,
        tuple(sorted(bad_copies)),
    )
