"""Drift of a consolidated policy: rules nobody used for a while, and support re-evaluated
against the category's members as they are now.  Pure.

A rule's ``last_seen`` is the last time a learning session saw it used (or a review
counted it).  `drift` reports the rules unused for `unused` seconds, most idle first,
and every rule's support counted again over the current members: a member that left
the category (or changed to another) no longer supports anything, and a rule whose
members have all gone is ``orphaned``.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

from controller.features.policy.rules import Rules

DEFAULT_UNUSED = 7 * 24 * 3600          # seconds: a week


def drift(rules: Rules, members: Collection[str], now: float,
          unused: float = DEFAULT_UNUSED) -> dict[str, Any]:
    current = set(members)
    rows = []
    for rule in rules.rules.values():
        still = sorted(rule.members & current)
        idle = max(0.0, now - rule.last_seen) if rule.last_seen else None
        rows.append({**rule.to_json(), "idle_seconds": idle,
                     "unused": idle is None or idle >= unused,
                     "current_support": f"{len(still)}/{len(current)}",
                     "orphaned": rule.origin == "learned" and not still})
    rows.sort(key=lambda r: (-(r["idle_seconds"] if r["idle_seconds"] is not None
                               else float("inf")), r["id"]))
    return {"category": rules.category, "version": rules.version, "unused_seconds": unused,
            "members": len(current), "rules": rows,
            "unused": [r["id"] for r in rows if r["unused"]],
            "orphaned": [r["id"] for r in rows if r["orphaned"]]}
