"""Reading a few small members out of a tar stream while it passes through.

pg_basebackup streams ``base.tar`` to pgproof; the backup's start/stop points live in two of
its members (``backup_label`` and ``backup_manifest``). The scanner follows the 512-byte
header structure and keeps only the wanted members, so the stream is read once.
"""

from __future__ import annotations

BLOCK = 512


def _tar_number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for sizes over 8 GiB
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


class TarError(ValueError):
    pass


class TarScanner:
    def __init__(self, wanted: set[str], max_member: int = 256 * 1024 * 1024):
        self.wanted = wanted
        self.max_member = max_member
        self.captured: dict[str, bytes] = {}
        self.members = 0
        self.finished = False
        self._header = bytearray()
        self._remaining = 0  # data bytes left in the current member
        self._padding = 0
        self._capture: bytearray | None = None
        self._capture_name = ""
        self._zero_blocks = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._remaining:
                take = min(self._remaining, len(view))
                if self._capture is not None:
                    self._capture += view[:take]
                self._remaining -= take
                view = view[take:]
                if not self._remaining and self._capture is not None:
                    self.captured[self._capture_name] = bytes(self._capture)
                    self._capture = None
                continue
            if self._padding:
                take = min(self._padding, len(view))
                self._padding -= take
                view = view[take:]
                continue
            if self.finished:
                return  # trailing zero blocks / record padding
            need = BLOCK - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == BLOCK:
                self._on_header(bytes(self._header))
                self._header.clear()

    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self.finished = True
            return
        self._zero_blocks = 0
        checksum = _tar_number(header[148:156])
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if checksum != computed:
            raise TarError(f"bad tar header checksum after {self.members} members")
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix and header[257:262] == b"ustar":
            name = f"{prefix}/{name}"
        size = _tar_number(header[124:136])
        typeflag = header[156:157]
        self.members += 1
        self._remaining = size
        self._padding = (-size) % BLOCK
        if typeflag in (b"0", b"\0") and name in self.wanted:
            if size > self.max_member:
                raise TarError(f"tar member {name} is too large to capture ({size} bytes)")
            self._capture = bytearray()
            self._capture_name = name
            if size == 0:
                self.captured[name] = b""
                self._capture = None
