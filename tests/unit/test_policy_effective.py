"""What a target member enforces: the strength's share of the learned rules, every decision
(approvals until they expire, denials), its overrides first, peers resolved to networks."""
from __future__ import annotations

from controller.features.policy.effective import effective_rules, kept_rules, override_key
from controller.features.policy.rules import Peer, Rule, RuleKey, Rules

EXT, DB = Peer("subnet", "ext"), Peer("category", "db")


def rule(port: int, peer: Peer, members: int, first: float, **kw) -> Rule:
    return Rule(RuleKey("egress", "tcp", port, peer),
                members=frozenset(f"m{i}" for i in range(members)), of=2, first_seen=first, **kw)


SOURCE = Rules("web", 3, {r.id: r for r in (
    rule(80, EXT, 2, 10.0), rule(5432, DB, 2, 20.0), rule(8080, EXT, 1, 5.0),
    rule(22, EXT, 0, 50.0, origin="approved", expires_at=1000.0),
    rule(23, EXT, 0, 60.0, action="deny", origin="denied"))})


def ports(rules) -> list[int]:
    return [r.key.port for r in rules]


def test_the_strength_cuts_learned_rules_only_decisions_always_stay():
    assert ports(kept_rules(SOURCE, 100, now=500.0)) == [23, 22, 80, 5432, 8080]
    assert ports(kept_rules(SOURCE, 50, now=500.0)) == [23, 22, 80, 5432]
    assert ports(kept_rules(SOURCE, 0, now=500.0)) == [23, 22]
    assert ports(kept_rules(SOURCE, 100, now=2000.0)) == [23, 80, 5432, 8080], "approval over"
    assert kept_rules(None, 100, now=0.0) == [], "no policy: default deny alone"


def test_overrides_come_first_and_peers_are_resolved():
    resolve = {EXT: ("198.51.100.0/24",), DB: ("10.0.2.1/32",)}.get
    override = {"interface_id": "i1", "action": "deny", "protocol": "tcp", "port": 80,
                "peer": "subnet:ext", "created_at": 1.0}
    out = effective_rules(kept_rules(SOURCE, 50, now=500.0), [override],
                          lambda p: resolve(p) or ())
    assert [(r.key.port, r.action, r.origin) for r in out] == [
        (80, "deny", "override"), (23, "deny", "denied"), (22, "allow", "approved"),
        (80, "allow", "learned"), (5432, "allow", "learned")]
    assert out[-1].cidrs == ("10.0.2.1/32",) and out[0].cidrs == ("198.51.100.0/24",)
    assert override_key(override) == RuleKey("egress", "tcp", 80, EXT)


def test_drift_reports_idle_rules_and_support_over_todays_members():
    from controller.features.policy.drift import drift
    rules = Rules("web", 2, {r.id: r for r in (
        Rule(RuleKey("egress", "tcp", 80, EXT), members=frozenset({"a", "b"}), of=2,
             last_seen=1000.0),
        Rule(RuleKey("egress", "tcp", 8080, EXT), members=frozenset({"b"}), of=2,
             last_seen=100.0))})
    out = drift(rules, members=["a", "c"], now=1100.0, unused=500)
    assert out["unused"] == ["egress-tcp-8080-subnet-ext"]
    assert out["orphaned"] == ["egress-tcp-8080-subnet-ext"]          # b left the category
    assert [(r["port"], r["idle_seconds"], r["current_support"]) for r in out["rules"]] == \
        [(8080, 1000.0, "0/2"), (80, 100.0, "1/2")]
