"""Which local clusters a sandbox user could write (pure decision; facts read from files)."""

from __future__ import annotations

from pathlib import Path

from pgproof.verifier.isolation import LocalCluster, registered_clusters, sharing


def test_only_clusters_the_user_owns_outside_sandboxes_are_shared() -> None:
    clusters = [
        LocalCluster("/var/lib/postgresql/15/main", 105, "registered"),
        LocalCluster("/srv/other", 1000, "running, PID 5"),
        LocalCluster("/tmp/pgproof-sandboxes/pgproof-sandbox-ab12/data", 105, "running, PID 9"),
    ]
    assert [c.data_dir for c in sharing(105, clusters)] == ["/var/lib/postgresql/15/main"]
    assert sharing(999, clusters) == []


def test_debian_registry_with_a_moved_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    (data / "global").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    conf = tmp_path / "etc" / "15" / "main" / "postgresql.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"port = 5433\ndata_directory = '{data}'   # moved\n")
    empty = tmp_path / "etc" / "16" / "test" / "postgresql.conf"  # no cluster files there
    empty.parent.mkdir(parents=True)
    empty.write_text(f"data_directory = '{tmp_path / 'nothing'}'\n")
    found = registered_clusters(tmp_path / "etc")
    assert [(c.data_dir, c.owner_uid) for c in found] == [(str(data), data.stat().st_uid)]
    assert "registered in" in found[0].how
