from __future__ import annotations

import os

import pytest

from pgproof.backups import compression as c


def test_stream_round_trip_and_multiple_frames() -> None:
    data = os.urandom(300_000) + b"\0" * 2_000_000
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    packed = b"".join(c.zstd_compress(chunks, level=3, threads=2))
    assert (
        b"".join(c.zstd_decompress([packed[i : i + 1000] for i in range(0, len(packed), 1000)]))
        == data
    )
    two = c.zstd_compress_bytes(b"one") + c.zstd_compress_bytes(b"two")
    assert c.zstd_decompress_bytes(two) == b"onetwo"


def test_truncated_and_corrupt_input_raise() -> None:
    packed = c.zstd_compress_bytes(os.urandom(100_000))
    with pytest.raises(c.ZstdError):
        c.zstd_decompress_bytes(packed[:-7])
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(c.ZstdError):
        c.zstd_decompress_bytes(bytes(broken))


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("zstd:3", ("zstd", 3)), ("none", ("none", None)), ("gzip", ("gzip", None))],
)
def test_parse_method(spec: str, parsed: tuple[str, int | None]) -> None:
    assert c.parse_method(spec) == parsed


@pytest.mark.parametrize("bad", ["bzip2", "zstd:x", "zstd:30", "none:1", "gzip:0"])
def test_parse_method_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        c.parse_method(bad)
