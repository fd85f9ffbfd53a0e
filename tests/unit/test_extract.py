from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pgproof.verifier.errors import RestoreFailed
from pgproof.verifier.extract import UnsafeMember, extract


def tar_of(*members: tuple[str, str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                info.mode = 0o4777
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return buf.getvalue()


def chunked(data: bytes) -> list[bytes]:
    return [data[i : i + 777] for i in range(0, len(data), 777)]


def test_extracts_files_dirs_and_inner_symlinks(tmp_path: Path) -> None:
    data = tar_of(
        ("base", "dir", b""),
        ("base/1", "file", b"x" * 5000),
        ("link", "sym", "base/1"),
        ("./PG_VERSION", "file", b"15\n"),
    )
    assert extract(chunked(data), tmp_path / "d") == 4
    assert (tmp_path / "d/base/1").read_bytes() == b"x" * 5000
    assert (tmp_path / "d/PG_VERSION").read_text() == "15\n"
    assert (tmp_path / "d/base/1").stat().st_mode & 0o7777 == 0o644  # setuid and o+w cleared


@pytest.mark.parametrize(
    "members",
    [
        [("../escape", "file", b"x")],
        [("/etc/evil", "file", b"x")],
        [("a/../../b", "file", b"x")],
        [("out", "sym", "/etc"), ("out/passwd", "file", b"x")],
        [("up", "sym", "../.."), ("up/x", "file", b"x")],
        [("fifo", "fifo", b"")],
    ],
)
def test_refuses_anything_that_leaves_the_directory(
    tmp_path: Path, members: list[tuple[str, str, bytes | str]]
) -> None:
    with pytest.raises(UnsafeMember):
        extract(chunked(tar_of(*members)), tmp_path / "d")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


def test_truncated_archive_fails(tmp_path: Path) -> None:
    data = tar_of(("big", "file", b"y" * 100_000))
    with pytest.raises(RestoreFailed, match="not a complete tar"):
        extract(chunked(data[:50_000]), tmp_path / "d")


def test_a_damaged_member_header_is_not_taken_for_the_end(tmp_path: Path) -> None:
    """tarfile stops at a header whose checksum fails as if the archive ended there: the
    members after it would be silently missing."""
    data = bytearray(tar_of(("a", "file", b"x" * 600), ("b", "file", b"y" * 600)))
    data[1536 + 10] ^= 0xFF  # the second member's header (after a's 512 + 1024 bytes)
    with pytest.raises(RestoreFailed, match="damaged member header"):
        extract(chunked(bytes(data)), tmp_path / "d")


def test_zero_padding_after_the_end_is_fine(tmp_path: Path) -> None:
    data = tar_of(("a", "file", b"x" * 600)) + b"\0" * 20480
    assert extract(chunked(data), tmp_path / "d") == 1
