"""Records written by an older pgproof (without fields added since) still make a report."""

from __future__ import annotations

from pathlib import Path

from pgproof.backups.storage.filesystem import FilesystemRepository
from pgproof.verifier import report
from tests.support import synthetic


def test_records_without_newer_fields_render(tmp_path: Path) -> None:
    repo = FilesystemRepository("local", tmp_path)
    writer = synthetic.Writer(repo)
    made = synthetic.fill(writer, "main", backups=4, wal_segments=8, records_every=1)
    old = synthetic.record("main", 99, made[-1], verdict="failed")
    for newer in ("sandbox_image", "sandbox", "pitr", "bytes_restored", "prev_sha256"):
        del old[newer]  # as an older pgproof wrote it
    writer.record("main", old)
    model = report.build([report.TargetInput("main", [repo], 86400.0)], "test")
    html = report.render_html(model, links=True)
    rows = model["targets"][0]["results"]
    assert len(rows) == 5 and all(r["sandbox_image"] == "" for r in rows)
    assert str(old["id"]) in html
    assert report.render_result_html("main", rows[-1])
