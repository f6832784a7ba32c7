"""A profile's settings (the manifest's `profiles.<name>`), read and checked one by one.

Python standard library only.  `Settings` hands out each setting with its default and
range and raises ValueError naming the setting and the reason; `done()` refuses any
setting left unread (a misspelt name), so a profile's `start` fails loudly, the agent
logs it and READY lists the profile `unavailable`.  A setting given as null is the
same as one not given (the hub's documents dump unset optional fields as null).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from controller.agents.shadow.protocol import SEVERITIES


class Settings:
    def __init__(self, given: Mapping[str, Any]) -> None:
        if not isinstance(given, Mapping):
            raise ValueError(f"the settings are not an object: {given!r}")
        self._left = {k: v for k, v in given.items() if v is not None}
        self._known: list[str] = []

    def _take(self, name: str, default: Any) -> Any:
        self._known.append(name)
        return self._left.pop(name, default)

    def number(self, name: str, default: float | None, *, low: float = 0.0,
               high: float = math.inf, low_ok: bool = False) -> float | None:
        """A number above `low` (or equal to it, with `low_ok`) and at most `high`."""
        value = self._take(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value > high \
                or (value < low if low_ok else value <= low):
            way = "at least" if low_ok else "above"
            upto = "" if high == math.inf else f" and at most {high:g}"
            raise ValueError(f"{name}: {value!r} is not a number {way} {low:g}{upto}")
        return float(value)

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self._take(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name}: {value!r} is not a whole number from {low} to {high}")
        return value

    def severity(self, name: str, default: str) -> str:
        value = self._take(name, default)
        if value not in SEVERITIES:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(SEVERITIES)}")
        return value

    def done(self) -> None:
        """ValueError if a setting was given that no one read."""
        if self._left:
            raise ValueError(f"unknown setting {', '.join(sorted(map(str, self._left)))} "
                             f"(known: {', '.join(sorted(self._known))})")
