"""JSON fields of the shadow agent's messages, checked as they are read.

Python standard library only.  Every reader raises ValueError (or KeyError,
TypeError) for a field that is missing or of the wrong kind; the protocol turns it
into Rejected("malformed").
"""
from __future__ import annotations

import json
from typing import Any

from controller.agents.channel import MAX_ID


def dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def load(data: bytes) -> dict:
    obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(obj, dict):
        raise ValueError("the body is not a JSON object")
    return obj


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number here")


def ident(value: object) -> str:
    """An instance id: ASCII, 1..64 characters."""
    if not isinstance(value, str) or not value.isascii() or not 1 <= len(value) <= MAX_ID:
        raise ValueError(f"instance id {value!r} (ASCII, 1..{MAX_ID})")
    return value


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    return value


def number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{value!r} is not a number >= 0")
    return value


def count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{value!r} is not a count")
    return value


def names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list")
    return tuple(text(v) for v in value)
