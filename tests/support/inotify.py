"""Watching directory trees for any change (Linux inotify, through ctypes).

``Watch`` records every event that means "written or changed": a file opened for writing and
closed, modified, its attributes changed (chmod, chown, utimes), created, deleted or moved,
anywhere under the watched trees. Reads are not recorded (IN_ACCESS and IN_OPEN are left
out: a reader opening a file is not a change).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path
from types import TracebackType

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_NONBLOCK = 0o4000
CHANGES = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
)
NAMES = {
    IN_MODIFY: "modified",
    IN_ATTRIB: "attributes changed",
    IN_CLOSE_WRITE: "closed after writing",
    IN_MOVED_FROM: "moved away",
    IN_MOVED_TO: "moved in",
    IN_CREATE: "created",
    IN_DELETE: "deleted",
    IN_DELETE_SELF: "removed",
}
_EVENT = struct.Struct("iIII")


class Watch:
    def __init__(self, *roots: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._libc = libc
        self._fd = libc.inotify_init1(IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._dirs: dict[int, str] = {}
        for root in roots:
            for dirpath, _dirs, _files in os.walk(root, followlinks=False):
                wd = libc.inotify_add_watch(self._fd, dirpath.encode(), CHANGES)
                if wd < 0:
                    raise OSError(ctypes.get_errno(), f"inotify_add_watch {dirpath}")
                self._dirs[wd] = dirpath
        self.events: list[str] = []

    def collect(self) -> list[str]:
        """Events so far, as "<path>: <what>"."""
        while select.select([self._fd], [], [], 0)[0]:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + size]
                name = raw.rstrip(b"\0").decode(errors="replace")
                offset += _EVENT.size + size
                what = ", ".join(v for k, v in NAMES.items() if mask & k) or hex(mask)
                self.events.append(f"{os.path.join(self._dirs.get(wd, '?'), name)}: {what}")
        return list(self.events)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.collect()
        self.close()
