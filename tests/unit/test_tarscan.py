from __future__ import annotations

import io
import random
import tarfile

import pytest

from pgproof.backups.tarscan import TarError, TarScanner


def make_tar(members: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("seed", range(5))
def test_captures_wanted_members_whatever_the_chunking(seed: int) -> None:
    rng = random.Random(seed)
    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    blob = rng.randbytes(100_000)
    data = make_tar(
        {
            "base/1/1234": blob,
            "backup_label": label,
            "global/pg_control": b"x" * 8192,
            "backup_manifest": b'{"WAL-Ranges": []}',
            "empty": b"",
        }
    )
    scanner = TarScanner({"backup_label", "backup_manifest", "empty"})
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 511, 512, 513, 4096, 65536])
        scanner.feed(data[pos : pos + step])
        pos += step
    assert scanner.finished
    assert scanner.members == 5
    assert scanner.captured == {
        "backup_label": label,
        "backup_manifest": b'{"WAL-Ranges": []}',
        "empty": b"",
    }


def test_detects_corrupt_header() -> None:
    data = bytearray(make_tar({"a": b"1"}))
    data[10] ^= 0xFF
    with pytest.raises(TarError, match="checksum"):
        TarScanner({"a"}).feed(bytes(data))


def test_truncated_stream_is_not_finished() -> None:
    data = make_tar({"backup_manifest": b"{}" * 1000})
    scanner = TarScanner({"backup_manifest"})
    scanner.feed(data[:700])
    assert not scanner.finished and "backup_manifest" not in scanner.captured
