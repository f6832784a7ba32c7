"""A flow as plain data: what a compiler wants installed on one switch."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from controller.pipeline.actions import Action

MatchValue = Any  # int | str | tuple[str, str] (value, mask)
Match = tuple[tuple[str, MatchValue], ...]
FlowKey = tuple[int, int, Match]

_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha"}
_IP_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
# Masked integer fields whose full mask a switch reports as an exact match: width in bits.
_MASKED_INT_FIELDS = {"ct_mark": 32}


def _norm_masked_int(name: str, value: MatchValue, bits: int) -> MatchValue:
    """`ct_mark` as (value, mask): the value within its mask, a full mask as the plain value."""
    full = (1 << bits) - 1
    v, m = (int(value[0]), int(value[1])) if isinstance(value, tuple) else (int(value), full)
    if not (0 <= v <= full and 0 < m <= full):
        raise ValueError(f"{name} {value!r}: value and a non-zero mask must fit {bits} bits")
    return v & m if m == full else (v & m, m)


def _norm_value(name: str, value: MatchValue) -> MatchValue:
    """Canonical form, equal for what a compiler writes and what a switch returns."""
    if name in _MASKED_INT_FIELDS:
        return _norm_masked_int(name, value, _MASKED_INT_FIELDS[name])
    if name in _MAC_FIELDS:
        if isinstance(value, tuple):
            return (value[0].lower(), value[1].lower())
        return value.lower()
    if name in _IP_FIELDS:
        if isinstance(value, tuple):
            net = ipaddress.IPv4Network(f"{value[0]}/{value[1]}", strict=False)
        else:
            net = ipaddress.IPv4Network(value, strict=False)
        if net.prefixlen == 32:
            return str(net.network_address)
        return (str(net.network_address), str(net.netmask))
    if isinstance(value, tuple):
        return (int(value[0]), int(value[1]))
    return int(value)


def make_match(fields: Mapping[str, MatchValue] | Iterable[tuple[str, MatchValue]]) -> Match:
    items = fields.items() if isinstance(fields, Mapping) else fields
    return tuple(sorted((name, _norm_value(name, value)) for name, value in items))


@dataclass(frozen=True)
class FlowSpec:
    """One flow entry.  Identity on a switch is (table, priority, match).

    Behaviour is the rest but `meta`: `meter` (a meter id, applied before the
    actions: `controller.pipeline.meters`), `actions`, `goto` and `cookie`.
    `meter` comes after `cookie` so that positional constructions keep their
    meaning.
    """
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = 0
    meter: int | None = None
    meta: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> FlowKey:
        return (self.table, self.priority, self.match)

    def same_behaviour(self, other: "FlowSpec") -> bool:
        return ((self.actions, self.goto, self.cookie, self.meter)
                == (other.actions, other.goto, other.cookie, other.meter))


def flow(table: int, priority: int, match: Mapping[str, MatchValue] | None = None,
         actions: Iterable[Action] = (), goto: int | None = None, cookie: int = 0,
         meter: int | None = None) -> FlowSpec:
    return FlowSpec(table=table, priority=priority, match=make_match(match or {}),
                    actions=tuple(actions), goto=goto, cookie=cookie, meter=meter)
