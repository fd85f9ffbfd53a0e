"""The bootstrap superuser read from a stopped data directory's pg_authid heap, on every
PostgreSQL major this machine has: what a restored backup of another tool is connected as."""

from __future__ import annotations

import psycopg
import pytest

from pgproof.verifier import authid
from tests.support.pgcluster import available_majors, make_cluster
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("major", available_majors())
def test_the_renamed_bootstrap_superuser_is_read_from_the_heap(major: int) -> None:
    cluster = make_cluster(major, free_port())
    try:
        cluster.initdb(checksums=False)
        cluster.start()
        cluster.sql("create role helper superuser login")
        with psycopg.connect(cluster.conninfo(user="helper"), autocommit=True) as conn:
            conn.execute("alter role postgres rename to dba")
        with psycopg.connect(cluster.conninfo(user="helper"), autocommit=True) as conn:
            conn.execute("checkpoint")
        cluster.stop()
        heap = (cluster.datadir / "global" / "1260").read_bytes()
        # the live version first; the version before the rename stays until vacuumed
        assert authid.bootstrap_superusers(heap)[0] == "dba"
        assert set(authid.bootstrap_superusers(heap)) <= {"dba", "postgres"}
    finally:
        cluster.destroy()
