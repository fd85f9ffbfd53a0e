"""The key registry of a target in an encrypted repository (``<target>/jobs/keys.json``):
which master keys encrypt its objects, how many at the last full ``check``, and one object
each for the operator to recognise. Key ids only: stored in the clear."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

FORMAT = 1


@dataclass(frozen=True)
class RegisteredKey:
    objects: int | None  # counted by the last full check; None: not counted yet
    example: str  # an object it encrypts


@dataclass(frozen=True)
class KeyRegistry:
    keys: Mapping[str, RegisteredKey]

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "key_ids": {
                kid: {"objects": k.objects, "example": k.example}
                for kid, k in sorted(self.keys.items())
            },
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeyRegistry:
        """ValueError for anything that is not a registry of this format."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a key registry of format 1")
        ids = doc.get("key_ids")
        if not isinstance(ids, dict):
            raise ValueError("key_ids must be an object")
        keys = {}
        for kid, entry in ids.items():
            if not isinstance(entry, dict):
                raise ValueError(f"key {kid}: must be an object")
            objects = entry.get("objects")
            keys[str(kid)] = RegisteredKey(
                objects if isinstance(objects, int) else None, str(entry.get("example", ""))
            )
        return cls(keys)

    def with_key(self, kid: str, example: str) -> KeyRegistry:
        if kid in self.keys:
            return self
        return KeyRegistry({**self.keys, kid: RegisteredKey(None, example)})
