"""How hubctl writes its results: the -o format (table, json, yaml) and plain-text tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")

Table = Callable[[Any], str]  # renders an API answer as text, for -o table


@dataclass(frozen=True)
class Output:
    """Writes command results in the format chosen with -o."""

    format: str = "table"

    def emit(self, data: Any, table: Table) -> None:
        if self.format == "json":
            print(json.dumps(data, indent=2))
        elif self.format == "yaml":
            print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
        else:
            print(table(data))


def cell(value: object) -> str:
    """Human form of one table value: None -> "-", bools -> yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) or "-"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; no trailing blanks."""
    table = [list(headers)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def format_duration(seconds: float) -> str:
    """Compact duration: 45s, 3m07s, 2h05m, 4d03h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_time(ts: float | None) -> str:
    """Local wall-clock time of a Unix timestamp."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def plural(n: int, word: str) -> str:
    """``1 flow``, ``13 flows``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
