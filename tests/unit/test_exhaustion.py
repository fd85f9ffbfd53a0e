"""What a sandbox ran out of, read from what PostgreSQL, its tools and the OS say."""

from __future__ import annotations

import errno

import pytest

from pgproof.verifier import exhaustion
from pgproof.verifier.exhaustion import DISK, FILES, MEMORY, SHARED_MEMORY, Space


@pytest.mark.parametrize(
    ("text", "resource", "path", "wanted"),
    [
        (
            'ERROR:  could not extend file "base/16384/16390": wrote only 4096 of 8192 bytes'
            " at block 1183\nHINT:  Check free disk space.",
            DISK,
            "base/16384/16390",
            8192,
        ),
        (
            'COPY failed for table "wide": ERROR:  could not extend file "base/16384/16390":'
            " No space left on device",
            DISK,
            "base/16384/16390",
            None,
        ),
        (
            'PANIC:  could not write to file "pg_wal/xlogtemp.123": No space left on device',
            DISK,
            "pg_wal/xlogtemp.123",
            None,
        ),
        (
            "zstd: error 70 : Write error : cannot write block : No space left on device",
            DISK,
            None,
            None,
        ),
        (
            'FATAL:  could not resize shared memory segment "/PostgreSQL.1" to 16777216 bytes:'
            " No space left on device",
            SHARED_MEMORY,
            "/PostgreSQL.1",
            16777216,
        ),
        ("ERROR:  out of memory\nDETAIL:  Failed on request of size 1048576.", MEMORY, None, None),
        ("pg_dump: error: could not fork: Cannot allocate memory", MEMORY, None, None),
        (
            "LOG:  out of file descriptors: Too many open files; release and retry",
            FILES,
            None,
            None,
        ),
    ],
)
def test_each_kind_of_lack_is_found(
    text: str, resource: str, path: str | None, wanted: int | None
) -> None:
    found = exhaustion.find(text)
    assert found is not None
    assert (found.resource, found.path, found.wanted) == (resource, path, wanted)


@pytest.mark.parametrize(
    "text",
    [
        "ERROR:  invalid page in block 3 of relation base/16384/16390",
        'ERROR:  duplicate key value violates unique constraint "items_pkey"',
        "zstd: /tmp/x.zst: unknown header",
        "",
    ],
)
def test_damage_and_other_errors_are_not_a_lack(text: str) -> None:
    assert exhaustion.find(text) is None


def test_os_errors_of_exhaustion_only() -> None:
    full = exhaustion.from_os_error(OSError(errno.ENOSPC, "No space left on device", "/s/x"))
    assert full is not None and (full.resource, full.path) == (DISK, "/s/x")
    assert exhaustion.from_os_error(OSError(errno.EACCES, "Permission denied")) is None


def test_the_cause_names_where_how_much_and_what_to_do() -> None:
    found = exhaustion.find('could not extend file "base/1/2": wrote only 4096 of 8192 bytes')
    assert found is not None
    space = Space("/var/tmp/sb/pgproof-sandbox-1", 70 << 20, 80 << 20, 1 << 20)
    text = exhaustion.describe(found, space, 300 << 20, 256, 4096)
    assert "ran out of disk space writing base/1/2 (in its data directory)" in text
    assert "8.0 KiB requested" in text
    assert "/var/tmp/sb/pgproof-sandbox-1 is on a filesystem of 80.0 MiB with 1.0 MiB free" in text
    assert "restores to about 300.0 MiB" in text and "verifier.workdir" in text
    memory = exhaustion.find("ERROR:  out of memory")
    assert memory is not None
    assert "verifier.memory_mb = 256 MiB" in exhaustion.describe(memory, None, None, 256, 4096)


def test_sizes_read_as_a_person_would() -> None:
    assert exhaustion.size(512) == "512 bytes"
    assert exhaustion.size(8192) == "8.0 KiB"
    assert exhaustion.size(3 << 30) == "3.0 GiB"
