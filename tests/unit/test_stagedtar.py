"""Following pg_basebackup's archives while they are written: order, completeness, clean-up."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

from pgproof.backups.stagedtar import Throttle, _HolePuncher, follow_archives


def tar_bytes(*members: tuple[str, bytes]) -> bytes:
    """A tar archive as pg_basebackup writes it: ending with the two zero blocks, without
    the padding to a 10 KiB record that tarfile adds."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        end = tar.offset + 2 * tarfile.BLOCKSIZE
    return buf.getvalue()[:end]


def slow_writer(out: Path, archives: list[tuple[str, bytes]], stop_at: int | None) -> None:
    """Writes the archives one after the other in small steps, like pg_basebackup; with
    ``stop_at`` it dies that many bytes into the last archive."""
    out.mkdir()
    for i, (name, data) in enumerate(archives):
        last = i == len(archives) - 1
        end = stop_at if (last and stop_at is not None) else len(data)
        with open(out / name, "wb") as fh:
            for pos in range(0, end, 4096):
                fh.write(data[pos : min(pos + 4096, end)])
                fh.flush()
                time.sleep(0.001)


def follow(
    tmp_path: Path, archives: list[tuple[str, bytes]], stop_at: int | None = None
) -> list[tuple[str, bytes, bool]]:
    out = tmp_path / "out"
    writer = threading.Thread(target=slow_writer, args=(out, archives, stop_at))
    writer.start()
    seen = []
    for archive in follow_archives(out, writer.is_alive, poll=0.005):
        data = b"".join(archive.chunks())
        seen.append((archive.name, data, archive.complete))
    writer.join()
    return seen


def test_archives_come_whole_in_the_order_written_and_are_removed(tmp_path: Path) -> None:
    first = tar_bytes(("PG_15/1/16385", b"x" * 100_000))
    second = tar_bytes(("PG_15/1/16390", b"y" * 30_000))
    base = tar_bytes(("backup_label", b"START"), ("base/1/1259", b"z" * 200_000))
    seen = follow(tmp_path, [("16384.tar", first), ("16389.tar", second), ("base.tar", base)])
    assert [
        (n, d == want, c) for (n, d, c), want in zip(seen, (first, second, base), strict=True)
    ] == [
        ("16384.tar", True, True),
        ("16389.tar", True, True),
        ("base.tar", True, True),
    ]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_writer_that_dies_midway_leaves_an_incomplete_archive(tmp_path: Path) -> None:
    base = tar_bytes(("base/1/1259", b"z" * 200_000))
    seen = follow(tmp_path, [("base.tar", base)], stop_at=50_000)
    assert [(n, len(d), c) for n, d, c in seen] == [("base.tar", 50_000, False)]


def test_what_was_read_gives_its_disk_back(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    path.write_bytes(os.urandom(8 << 20))
    before = path.stat().st_blocks
    fd = os.open(path, os.O_RDWR)
    try:
        puncher = _HolePuncher()
        puncher.punch(fd, 0, 6 << 20)
    finally:
        os.close(fd)
    assert puncher.works  # ext4, xfs and tmpfs can
    assert path.stat().st_blocks < before / 2
    assert path.stat().st_size == 8 << 20  # the size stays: the writer keeps appending


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_writer_too_far_ahead_is_paused_until_the_reader_catches_up() -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        throttle = Throttle(child.pid, max_lag=100)
        throttle.update(50)
        assert _state(child.pid) != "T"
        throttle.update(101)
        time.sleep(0.1)
        assert _state(child.pid) == "T" and throttle.pauses == 1
        throttle.update(60)  # not yet below half
        assert throttle.paused
        throttle.update(49)
        time.sleep(0.1)
        assert _state(child.pid) != "T" and not throttle.paused
    finally:
        child.kill()
        child.wait()
