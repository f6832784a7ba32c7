"""Strength: a deterministic ranking and cut, and a preview that explains it."""
from __future__ import annotations

import math
import random
from dataclasses import replace
from fractions import Fraction

import pytest

from controller.features.policy.rules import Action, Peer, Rule, RuleKey, Rules
from controller.features.policy.strength import cut, rank, select
from tests.unit.policy_example import web_rules

EXT80, DB5432, EXT8080 = ("egress-tcp-80-set-ext", "egress-tcp-5432-category-db",
                          "egress-tcp-8080-set-ext")


def rule(port: int, members: str, first_seen: float, action: Action = "allow",
         name: str = "ext") -> Rule:
    return Rule(RuleKey("egress", "tcp", port, Peer("set", name)), action=action,
                members=frozenset(members.split()), of=3, first_seen=first_seen)


def policy(*rules: Rule) -> Rules:
    return Rules("web", 1, {r.id: r for r in rules})


def test_the_ceiling_is_exact_where_floats_are_not():
    assert math.ceil(100 * (7 / 100)) == 8          # the trap: 7.000000000000001
    assert cut(100, 7) == 7
    for n in range(0, 61):
        for s in range(0, 101):
            assert cut(n, s) == math.ceil(Fraction(n * s, 100)), (n, s)


def test_the_example_ranks_by_support_then_first_seen():
    assert [r.id for r in rank(web_rules())] == [EXT80, DB5432, EXT8080]


@pytest.mark.parametrize("strength, kept", [(100, [EXT80, DB5432, EXT8080]),
                                            (50, [EXT80, DB5432]), (34, [EXT80, DB5432]),
                                            (33, [EXT80]), (1, [EXT80]), (0, [])])
def test_strength_keeps_the_first_of_the_ranked_rules(strength, kept):
    assert [r.id for r in select(web_rules(), strength).kept] == kept


def test_the_preview_at_half_strength():
    chosen = select(web_rules(), 50)
    assert (chosen.strength, chosen.ranked, chosen.cut) == (50, 3, 2)
    assert [tuple(row) for row in chosen.rows] == [
        (EXT80, True, 1, "support 2/2, rank 1 of 3, cut at 2"),
        (DB5432, True, 2, "support 2/2, rank 2 of 3, cut at 2"),
        (EXT8080, False, 3, "support 1/2, rank 3 of 3, cut at 2")]
    assert [r.rule_id for r in chosen.rows if not r.included] == [EXT8080]
    assert chosen.to_json()["kept"] == [EXT80, DB5432]
    assert chosen.to_json()["rows"][2] == {"rule_id": EXT8080, "included": False, "rank": 3,
                                           "reason": "support 1/2, rank 3 of 3, cut at 2"}


def test_at_zero_only_the_default_deny_is_left():
    chosen = select(web_rules(), 0)
    assert chosen.kept == [] and not any(row.included for row in chosen.rows)
    assert chosen.rows[0].reason == "support 2/2, rank 1 of 3, cut at 0"


def test_ties_are_broken_by_first_seen_then_by_id():
    a, b = rule(81, "m1 m2", 50.0), rule(82, "m1 m2", 40.0)
    c, d = rule(83, "m3", 10.0, name="zz"), rule(83, "m3", 10.0, name="aa")
    assert [r.id for r in rank(policy(a, b, c, d))] == [b.id, a.id, d.id, c.id]


def test_support_counts_before_age():
    old, common = rule(81, "m1", 1.0), rule(82, "m1 m2 m3", 900.0)
    assert [r.id for r in rank(policy(old, common))] == [common.id, old.id]


def test_the_order_of_the_rules_given_does_not_matter():
    rules = list(web_rules().rules.values()) + [rule(22, "m1", 1.0), rule(23, "m2", 1.0)]
    first = [r.id for r in select(policy(*rules), 60).kept]
    for seed in range(5):
        random.Random(seed).shuffle(rules)
        assert [r.id for r in select(policy(*rules), 60).kept] == first


def test_deny_rules_are_always_kept_and_not_ranked():
    denied = rule(22, "", 500.0, action="deny")
    rules = replace(web_rules(), rules={**web_rules().rules, denied.id: denied})
    assert denied.id not in [r.id for r in rank(rules)]
    for strength in (0, 50, 100):
        chosen = select(rules, strength)
        assert chosen.ranked == 3 and chosen.kept[-1] == denied
        assert chosen.rows[-1] == (denied.id, True, None, "deny: always kept, whatever "
                                                          "the strength")
    assert [r.id for r in select(rules, 50).kept] == [EXT80, DB5432, denied.id]


def test_an_empty_policy_keeps_nothing():
    chosen = select(policy(), 100)
    assert (chosen.kept, chosen.rows, chosen.cut) == ([], [], 0)


@pytest.mark.parametrize("strength", [101, -1, True, 50.0, "50", None])
def test_a_strength_outside_0_to_100_is_refused(strength):
    with pytest.raises(ValueError, match="strength"):
        select(web_rules(), strength)
