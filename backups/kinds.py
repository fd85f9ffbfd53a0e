"""The kinds of backup pgproof makes and restore-tests: one spelling for every package."""

from __future__ import annotations

from typing import Literal, TypeGuard

Kind = Literal["logical", "physical"]
KINDS: tuple[Kind, ...] = ("logical", "physical")


def is_kind(value: object) -> TypeGuard[Kind]:
    return value in KINDS
