"""What one target member enforces: its profile's share of the source's policy, its overrides,
each rule's peer resolved to addresses.  Pure.

A mirroring profile (``source_category`` -> ``target_category`` at ``strength``)
gives every member of the target the source's current policy cut by
`strength.select` (the learned allow rules ranked, the first ceil(N*s/100)
kept).  Rules an operator decided are never cut: an approved review (origin
``approved``, until its ``expires_at``) and a denied one (action ``deny``).
The member's own overrides come first (first match wins), then the denials,
then the allowances.  A peer is resolved to networks by `resolve` (a category
-> its members' addresses, a set -> its CIDRs, a subnet -> its CIDR, an
address -> itself); a rule whose peer resolves to nothing matches nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller.features.policy.enforce import EffectiveRule
from controller.features.policy.rules import Peer, Rule, RuleKey, Rules
from controller.features.policy.strength import select

Resolve = Callable[[Peer], tuple[str, ...]]


def override_key(body: Mapping[str, Any]) -> RuleKey:
    """An override document's rule key."""
    return RuleKey(body.get("direction") or "egress", body["protocol"], body.get("port"),
                   Peer.parse(body["peer"]))


def decided(rule: Rule, now: float) -> bool:
    """An operator's decision still in force (an approval not yet expired, or a denial)."""
    if rule.action == "deny":
        return True
    return rule.origin == "approved" and (rule.expires_at is None or rule.expires_at > now)


def kept_rules(source: Rules | None, strength: int, now: float) -> list[Rule]:
    """The source's rules a target keeps: its decisions, and the strength's share of the rest."""
    if source is None:
        return []
    decisions = [r for r in source.rules.values() if decided(r, now)]
    learned = Rules(source.category, source.version,
                    {i: r for i, r in source.rules.items()
                     if r.action == "allow" and r.origin != "approved"})
    kept = select(learned, strength).kept
    denials = sorted((r for r in decisions if r.action == "deny"), key=lambda r: r.id)
    approvals = sorted((r for r in decisions if r.action == "allow"), key=lambda r: r.id)
    return denials + approvals + kept


def effective_rules(kept: Iterable[Rule], overrides: Iterable[Mapping[str, Any]],
                    resolve: Resolve) -> tuple[EffectiveRule, ...]:
    """The member's rules in the order they are matched: overrides, then the kept rules."""
    out = []
    for body in sorted(overrides, key=lambda b: str(b.get("created_at", ""))):
        key = override_key(body)
        out.append(EffectiveRule(key, body["action"], resolve(key.peer), "override"))
    for rule in kept:
        out.append(EffectiveRule(rule.key, rule.action, resolve(rule.key.peer), rule.origin))
    return tuple(out)
