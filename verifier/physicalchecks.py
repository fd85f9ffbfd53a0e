"""The checks only a physical restore test runs: ``verifybackup`` (pg_verifybackup against
the backup's own manifest), ``wal_replay`` (did replay reach what it should) and the
``heartbeat`` proof at the point reached."""

from __future__ import annotations

from pgproof.backups import catalog, walnames
from pgproof.backups.errors import CommandError
from pgproof.verifier import heartbeat, pitr
from pgproof.verifier.errors import RestoreFailed
from pgproof.verifier.job import RestoreJob
from pgproof.verifier.records import CheckResult
from pgproof.verifier.sandbox import Sandbox
from pgproof.verifier.walprefetch import Prefetched


def verifybackup(sandbox: Sandbox, wal_included: bool) -> CheckResult:
    args = ["--quiet", str(sandbox.data_dir)]
    if not wal_included:
        args.insert(0, "--no-parse-wal")  # WAL comes from the archive; replay checks it
    try:
        sandbox.run("pg_verifybackup", args, timeout=3600)
    except CommandError as exc:
        raise RestoreFailed(f"pg_verifybackup: {exc.stderr_tail.strip()[-800:]}") from None
    return CheckResult(
        "verifybackup",
        "passed",
        "every file matches the backup's backup_manifest (pg_verifybackup)",
    )


def replay_check(
    reached: pitr.Reached, target: pitr.Target, wal: Prefetched | None, manifest: catalog.Manifest
) -> CheckResult:
    evidence: dict[str, object] = {
        "reached_lsn": reached.lsn,
        "stop_reason": reached.stop_reason,
        "target": target.describe(),
        "wal_segments": len(wal.segments) if wal else 0,
        "archive_ends_with": wal.last_segment if wal else None,
    }
    if wal and wal.bad_copies:
        # replay used a good copy from another repository; the bad one is the repository's
        # problem (`pgproof check` names it), not the backup's
        evidence["bad_copies_skipped"] = list(wal.bad_copies[:20])
        evidence["bad_copies_count"] = len(wal.bad_copies)
    if reached.lsn is None:
        return CheckResult(
            "wal_replay", "error", "the server log does not say where redo ended", evidence
        )
    lsn = walnames.parse_lsn(reached.lsn)
    stop = walnames.parse_lsn(manifest.stop_lsn or "0/0")
    if lsn < stop:
        return CheckResult(
            "wal_replay",
            "failed",
            f"replay ended at {reached.lsn}, before the backup's end {manifest.stop_lsn}",
            evidence,
        )
    if target.mode == "latest" and wal and wal.last_segment:
        seg = manifest.wal_segment_size
        last_segno = walnames.parse_segment_name(wal.last_segment, seg)[1]
        if walnames.lsn_segment(lsn, seg) < last_segno:
            return CheckResult(
                "wal_replay",
                "failed",
                f"replay ended at {reached.lsn}, but the archive continues to {wal.last_segment}",
                evidence,
            )
    if target.mode == "time" and reached.stop_reason is None:
        return CheckResult(
            "wal_replay", "failed", "recovery ended without reaching the target time", evidence
        )
    skipped = ""
    if wal and wal.bad_copies:
        skipped = f"; {len(wal.bad_copies)} bad WAL copies skipped, first {wal.bad_copies[0]}"
    return CheckResult(
        "wal_replay",
        "passed",
        f"replayed to {reached.lsn} ({target.describe()}){skipped}",
        evidence,
    )


def heartbeat_proof(
    job: RestoreJob,
    dbname: str,
    win: heartbeat.Window,
    wal: Prefetched | None,
    reached: pitr.Reached,
) -> CheckResult:
    """The heartbeat proof; the archived WAL is searched only when the beat is not in the
    window (to tell a broken replay from a heartbeat that was not running)."""
    restored = heartbeat.read_restored(job.sandbox, dbname)
    evidence: dict[str, object] = {
        "database": dbname,
        "window_start": win.start.isoformat(),
        "window_end": win.end.isoformat(),
        "anchor": win.anchor,
    }
    if win.quiet:
        evidence["quiet_span"] = win.quiet
    archive = None
    in_window = (
        restored is not None
        and restored.beat_at is not None
        and win.start <= restored.beat_at <= win.end
    )
    if restored is not None and not in_window and wal is not None and reached.lsn:
        archive = heartbeat.search_archive(
            job.sandbox,
            wal.directory,
            wal.segments,
            restored.relation,
            walnames.parse_lsn(reached.lsn),
            restored.beat_at,
            job.manifest.wal_segment_size,
        )
    elif restored is not None and not in_window:
        archive = heartbeat.ArchiveBeats((), 0, True)  # WAL inside the backup: replayed whole
    return heartbeat.judge(restored, win, archive, evidence)
