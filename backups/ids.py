"""The grammar of the ids in a repository's keys: backups and restore-test results.

Both sort by time as text (a UTC timestamp first), so a listing in key order is a listing
in time order; a random suffix keeps two ids of the same second apart.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from pgproof.backups.kinds import Kind

_RESULT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-(logical|physical)-[0-9a-f]{4}$")


def new_backup_id(kind: Kind, now: dt.datetime | None = None) -> str:
    """``20261124T011502Z-logical-3fa9``."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{kind}-{secrets.token_hex(2)}"


def new_result_id(now: dt.datetime | None = None, after: str | None = None) -> str:
    """``20261124T031502Z-9c01ab``: a restore test's record under ``<target>/results/``.
    ``after``: the target's newest record id; the new id sorts after it even within the same
    second (or when the clock went back), so that key order stays chain order."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stamp = f"{moment:%Y%m%dT%H%M%S}Z"
    if after is not None and is_result_id(after) and after[:16] >= stamp:
        prev_stamp, prev_suffix = after.split("-")
        return f"{prev_stamp}-{min(int(prev_suffix, 16) + 1, 0xFFFFFF):06x}"
    return f"{stamp}-{secrets.token_hex(3)}"


def is_result_id(text: str) -> bool:
    return _RESULT_ID.match(text) is not None


def kind_of_backup_id(text: str) -> Kind | None:
    """The kind a backup id of pgproof's own names (what is known of a backup whose
    manifest cannot be read), None for any other name."""
    found = _BACKUP_ID.match(text)
    if found is None:
        return None
    return "logical" if found.group(1) == "logical" else "physical"
