"""pg_waldump over one prefetched WAL segment, run where the sandbox's server runs.

The prefetched segment (zstd as stored, or plain) is written decompressed into a scratch
directory of the sandbox's work dir owned like it, dumped, and removed again.
"""

from __future__ import annotations

import os
from pathlib import Path

from pgproof.backups import compression
from pgproof.backups.errors import CommandError
from pgproof.verifier.sandbox import Sandbox


def dump_segment(
    sandbox: Sandbox, waldir: Path, name: str, args: list[str], scratch: str = "waldump"
) -> str | None:
    """pg_waldump's output for segment ``name`` (``args`` before the path), or None when the
    segment cannot be read or dumped."""
    place = sandbox.work_dir / scratch
    place.mkdir(exist_ok=True)
    owner = os.stat(sandbox.work_dir)
    os.chown(place, owner.st_uid, owner.st_gid)
    plain = place / name
    packed = waldir / f"{name}{compression.ZSTD_SUFFIX}"
    try:
        if packed.exists():
            plain.write_bytes(compression.zstd_decompress_bytes(packed.read_bytes()))
        else:
            plain.write_bytes((waldir / name).read_bytes())
        os.chown(plain, owner.st_uid, owner.st_gid)
        res = sandbox.run(
            "pg_waldump", [*args, "--path", str(place), name], timeout=300, ok_codes=(0, 1)
        )
    except (CommandError, OSError, compression.ZstdError):
        return None
    finally:
        plain.unlink(missing_ok=True)
    return res.stdout.decode(errors="replace")
