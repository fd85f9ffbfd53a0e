"""Streaming zstd compression and decompression (multi-threaded, bounded memory)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import zstandard

OUT_CHUNK = 1024 * 1024
ZSTD_SUFFIX = ".zst"


def parse_method(spec: str) -> tuple[str, int | None]:
    """``zstd:3`` -> ("zstd", 3); ``none`` -> ("none", None). ValueError when malformed."""
    method, _, level = spec.partition(":")
    method = method.strip().lower()
    if method not in ("zstd", "gzip", "lz4", "none"):
        raise ValueError(f"unknown compression method {method!r} (zstd, lz4, gzip, none)")
    if method == "none":
        if level:
            raise ValueError("compression 'none' takes no level")
        return method, None
    if not level:
        return method, None
    if not level.strip().lstrip("-").isdigit():
        raise ValueError(f"compression level must be an integer: {level!r}")
    value = int(level)
    limits = {"zstd": (-7, 22), "gzip": (1, 9), "lz4": (1, 12)}[method]
    if not limits[0] <= value <= limits[1]:
        raise ValueError(f"{method} level must be between {limits[0]} and {limits[1]}")
    return method, value


def zstd_compress(chunks: Iterable[bytes], level: int = 3, threads: int = 0) -> Iterator[bytes]:
    """Compress a stream; ``threads`` 0 means single-threaded, -1 one worker per core."""
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, write_checksum=True
    )
    chunker = zstandard.ZstdCompressor(compression_params=params).chunker(chunk_size=OUT_CHUNK)
    for chunk in chunks:
        yield from chunker.compress(chunk)
    yield from chunker.finish()  # type: ignore[no-untyped-call]


def zstd_compress_bytes(data: bytes, level: int = 1) -> bytes:
    return bytes(zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data))


def zstd_decompress(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a stream of one or more zstd frames; ZstdError on corrupt or cut input."""
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    in_frame = False
    for chunk in chunks:
        while chunk:
            in_frame = True
            out = obj.decompress(chunk)
            if out:
                yield out
            if obj.eof:  # a frame ended; what follows belongs to the next one
                chunk = obj.unused_data
                obj = dctx.decompressobj()
                in_frame = False
            else:
                chunk = b""
    if in_frame:
        raise zstandard.ZstdError("truncated zstd stream")


def zstd_head(data: bytes, size: int) -> bytes:
    """The first ``size`` decompressed bytes of a zstd stream (without inflating the rest)."""
    reader = zstandard.ZstdDecompressor().stream_reader(data)
    try:
        return bytes(reader.read(size))
    finally:
        reader.close()  # type: ignore[no-untyped-call]


def zstd_decompress_bytes(data: bytes) -> bytes:
    return b"".join(zstd_decompress([data]))


ZstdError = zstandard.ZstdError
