"""A sandbox that ran out of something: disk, memory, shared memory, file descriptors.

What PostgreSQL, its tools and the OS say when a resource runs out ("could not extend file
...: wrote only 4096 of 8192 bytes", "No space left on device", "out of memory", "could
not resize shared memory segment", "Too many open files") says nothing about the backup: a
restore test that meets one is an ``error`` naming where and how much, never ``failed``
(its restore errors and row-count differences follow from the lack, not from damage).

Pure functions: :func:`find` reads any text (a restore error, a server log, an exception),
:func:`describe` turns what was found and the sandbox's measured space into the cause.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

_EXTEND = re.compile(r'could not extend file "([^"]+)"(?:[^:]*): wrote only (\d+) of (\d+) bytes')
_NAMED_NO_SPACE = re.compile(
    r"(?:could not (?:extend|write to|create|write|open|fsync) (?:file )?|Cannot (?:write|open): )"
    r'"?([^"\n:]+)"?[^\n]*?: No space left on device'
)
_SHM = re.compile(
    r'could not resize shared memory segment "([^"]+)" to (\d+) bytes: No space left on device'
)
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|Check free disk space")
_MEMORY = re.compile(
    r"out of memory|Failed on request of size (\d+)|Cannot allocate memory|could not fork"
)
_FILES = re.compile(r"Too many open files|out of file descriptors")

DISK, MEMORY, SHARED_MEMORY, FILES = "disk", "memory", "shared memory", "file descriptors"
EXHAUSTED_ERRNOS = {
    errno.ENOSPC: DISK,
    errno.EDQUOT: DISK,
    errno.ENOMEM: MEMORY,
    errno.EMFILE: FILES,
    errno.ENFILE: FILES,
}


@dataclass(frozen=True)
class Exhaustion:
    """What ran out, the file it was writing (as the message names it) and the bytes the
    failed request wanted, when the message says."""

    resource: str  # DISK | MEMORY | SHARED_MEMORY | FILES
    path: str | None
    wanted: int | None
    said: str  # the line that said so


@dataclass(frozen=True)
class Space:
    """The sandbox's directory and its filesystem, measured when the test stopped."""

    directory: str
    used: int  # bytes the sandbox's files took
    total: int  # the filesystem's size
    free: int  # bytes available to the sandbox's user


def find(text: str) -> Exhaustion | None:
    """The first resource that ran out, as ``text`` says; None when it says none did."""
    for line in text.splitlines() or [text]:
        shm = _SHM.search(line)
        if shm:
            return Exhaustion(SHARED_MEMORY, shm.group(1), int(shm.group(2)), line.strip())
        extend = _EXTEND.search(line)
        if extend:
            return Exhaustion(DISK, extend.group(1), int(extend.group(3)), line.strip())
        named = _NAMED_NO_SPACE.search(line)
        if named:
            return Exhaustion(DISK, named.group(1).strip(), None, line.strip())
        if _NO_SPACE.search(line):
            return Exhaustion(DISK, None, None, line.strip())
        memory = _MEMORY.search(line)
        if memory:
            wanted = int(memory.group(1)) if memory.group(1) else None
            return Exhaustion(MEMORY, None, wanted, line.strip())
        if _FILES.search(line):
            return Exhaustion(FILES, None, None, line.strip())
    return None


def from_os_error(exc: OSError) -> Exhaustion | None:
    resource = EXHAUSTED_ERRNOS.get(exc.errno or 0)
    if resource is None:
        return None
    return Exhaustion(resource, exc.filename, None, f"{exc.strerror or exc}")


def size(n: int) -> str:
    """Bytes for a person: 8192 -> "8.0 KiB"."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe(
    found: Exhaustion,
    space: Space | None,
    data_bytes: int | None,
    memory_mb: int,
    address_space_mb: int,
) -> str:
    """The cause of the restore test's ``error``: what ran out, where, how much was asked
    for and what was there, and what would let the test run."""
    wanted = f" ({size(found.wanted)} requested)" if found.wanted else ""
    where = f" writing {found.path}" if found.path else ""
    if found.path and not found.path.startswith("/"):
        where += " (in its data directory)"  # PostgreSQL names relation files relatively
    if found.resource == DISK:
        text = f"the sandbox ran out of disk space{where}{wanted}"
        if space is not None:
            text += (
                f": {space.directory} is on a filesystem of {size(space.total)} with "
                f"{size(space.free)} free, the sandbox's files took {size(space.used)}"
            )
        if data_bytes:
            text += (
                f"; this backup restores to about {size(data_bytes)} of data (as the source "
                f"measured it at the backup), WAL and the downloaded backup files besides"
            )
        return text + (
            "; give verifier.workdir a filesystem with room for it (not evidence of damage)"
        )
    if found.resource == SHARED_MEMORY:
        free = f" ({size(space.free)} free where the sandbox lives)" if space else ""
        return (
            f"the sandbox's server could not get shared memory{where}{wanted}: /dev/shm is "
            f"too small{free}; lower verifier.memory_mb ({memory_mb} MiB) or enlarge /dev/shm "
            "(a container's --shm-size); not evidence of damage"
        )
    if found.resource == MEMORY:
        return (
            f"the sandbox ran out of memory{wanted} ({found.said[:200]}): its server has "
            f"verifier.memory_mb = {memory_mb} MiB and an address space of "
            f"verifier.address_space_mb = {address_space_mb} MiB per process; raise them or "
            "give the verifying host more memory (not evidence of damage)"
        )
    return (
        f"the sandbox ran out of file descriptors ({found.said[:200]}): raise the open files "
        "limit (ulimit -n, LimitNOFILE=) of the verifying host (not evidence of damage)"
    )
