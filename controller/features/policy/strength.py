"""A mirroring profile's strength: which of the source's rules a target gets.

Deterministic, never random: the source's `allow` rules are ranked by support
(the most members first), then by first seen (the oldest first), then by id (so
equal evidence still gives one order).  Strength s keeps the first
ceil(N * s / 100) of the N ranked rules: 100 is a full copy, 0 keeps none and
leaves the default deny alone, 50 of 3 keeps 2.  The ceiling is integer
arithmetic (-(-N * s // 100)): a float product such as 100 * 0.07 is
7.000000000000001, whose ceiling would keep one rule too many.

`deny` rules (a denied review, later) are not ranked and never cut: a denial
must hold on every mirrored target whatever the strength, so it is always kept.

`select` also explains itself: one `PreviewRow` per rule, in or out, with the
reason ("support 1/2, rank 3 of 3, cut at 2"), for the profile's preview.
Pure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from controller.features.policy.rules import Rule, Rules

STRENGTH_MIN, STRENGTH_MAX = 0, 100


def cut(n: int, strength: int) -> int:
    """How many of `n` ranked rules strength `strength` keeps: ceil(n * s / 100)."""
    return -(-n * strength // 100)


def rank(rules: Rules) -> list[Rule]:
    """The `allow` rules, most supported first, then first seen earliest, then id."""
    allowed = (r for r in rules.rules.values() if r.action == "allow")
    return sorted(allowed, key=lambda r: (-len(r.members), r.first_seen, r.id))


class PreviewRow(NamedTuple):
    """One rule of a preview: kept (`included`) or not, its rank (None: not ranked,
    a deny rule), and why."""
    rule_id: str
    included: bool
    rank: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(frozen=True)
class Selection:
    """What strength `strength` keeps of a policy: `kept` (the first `cut` ranked
    allow rules, then every deny rule) and `rows` (every rule, ranked ones in rank
    order, then deny rules by id)."""
    strength: int
    ranked: int                  # N: the allow rules ranked
    cut: int                     # how many of them are kept
    kept: list[Rule]
    rows: list[PreviewRow]

    def to_json(self) -> dict[str, Any]:
        return {"strength": self.strength, "ranked": self.ranked, "cut": self.cut,
                "kept": [r.id for r in self.kept], "rows": [r.to_json() for r in self.rows]}


def check_strength(strength: object) -> int:
    """`strength` if it is an integer in 0..100, else ValueError (a bool is not one)."""
    if isinstance(strength, bool) or not isinstance(strength, int) \
            or not STRENGTH_MIN <= strength <= STRENGTH_MAX:
        raise ValueError(f"strength must be an integer from {STRENGTH_MIN} to {STRENGTH_MAX}, "
                         f"not {strength!r}")
    return strength


def select(rules: Rules, strength: int) -> Selection:
    """The rules a target mirrored from `rules` at `strength` gets, and why."""
    check_strength(strength)
    ranked = rank(rules)
    n, keep = len(ranked), cut(len(ranked), strength)
    rows = [PreviewRow(rule.id, place <= keep, place,
                       f"support {rule.support}, rank {place} of {n}, cut at {keep}")
            for place, rule in enumerate(ranked, start=1)]
    denied = sorted((r for r in rules.rules.values() if r.action != "allow"),
                    key=lambda r: r.id)
    rows += [PreviewRow(rule.id, True, None,
                        f"{rule.action}: always kept, whatever the strength")
             for rule in denied]
    return Selection(strength, n, keep, ranked[:keep] + denied, rows)
