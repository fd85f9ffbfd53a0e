"""Strict reading of one YAML mapping: typed getters that name the field on every error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line naming the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def parse_duration(value: object, field: str) -> float:
    """``26h``, ``90m``, ``3600`` (seconds), ``7d`` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(field, "must be a duration like 30s, 15m, 26h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(field, f"must be a duration like 30s, 15m, 26h or 7d, not {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(field, "must be positive")
    return seconds


class Fields:
    def __init__(self, raw: object, path: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"must be a mapping, not {type(raw).__name__}")
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be strings, not {key!r}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.where(key), message)

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.raw.get(key)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a non-empty string")
        return value

    def text_or(self, key: str, default: str) -> str:
        value = self.text(key, default)
        assert value is not None
        return value

    def req_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str | None) -> str | None:
        value = self.text(key, default)
        if value is not None and value not in options:
            self.fail(key, f"must be one of {', '.join(options)}, not {value!r}")
        return value

    def req_choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.choice(key, options, default)
        assert value is not None
        return value

    def integer(
        self, key: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {value!r}")
        if lo is not None and value < lo:
            self.fail(key, f"must be at least {lo}")
        if hi is not None and value > hi:
            self.fail(key, f"must be at most {hi}")
        return int(value)

    def req_integer(
        self, key: str, default: int, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self.integer(key, default, lo, hi)
        assert value is not None
        return value

    def number(self, key: str, default: float | None, lo: float | None = None) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, not {value!r}")
        if lo is not None and value < lo:
            self.fail(key, f"must be at least {lo:g}")
        return float(value)

    def req_number(self, key: str, default: float, lo: float | None = None) -> float:
        value = self.number(key, default, lo)
        assert value is not None
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return value

    def duration(self, key: str, default: float | None) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        return parse_duration(value, self.where(key))

    def req_duration(self, key: str, default: float) -> float:
        value = self.duration(key, default)  # parse_duration refuses zero and less
        assert value is not None
        return value

    def items(self, key: str) -> list[Any]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, "must be a list")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.where(key)}[{i}]", "must be a non-empty string")
        return tuple(items)

    def sub(self, key: str) -> Fields:
        return Fields(self.get(key), self.where(key))

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise ConfigError(self.where(unknown[0]), "unknown key")
