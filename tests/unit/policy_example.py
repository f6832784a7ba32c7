"""The issue's learning example, as the policy's pure core sees it.

h1_1 and h1_2 are "web", h2_1 is "db", "ext" is a declared address set.  Both web
hosts open tcp/80 to ext and tcp/5432 to h2_1; only h1_1 opens tcp/8080 to ext.
Consolidated, that is three rules with supports 2/2, 2/2 and 1/2.
"""
from __future__ import annotations

from ipaddress import IPv4Network

from controller.features.policy.generalize import Generalizer
from controller.features.policy.graph import consolidate
from controller.features.policy.rules import Rules, Seen

WEB = ("h1_1", "h1_2")
ADDRESSES = {"h1_1": "10.0.1.1", "h1_2": "10.0.1.2", "h2_1": "10.0.2.1"}
CATEGORIES = {"h1_1": ("web",), "h1_2": ("web",), "h2_1": ("db",)}
EXT_HOST = "198.51.100.80"
SETS = {"ext": [IPv4Network("198.51.100.0/24")]}
SUBNETS = {"seg1": IPv4Network("10.0.1.0/24"), "seg2": IPv4Network("10.0.2.0/24")}


def generalizer() -> Generalizer:
    return Generalizer({ADDRESSES[m]: cats for m, cats in CATEGORIES.items()}, SETS, SUBNETS)


def records() -> list[Seen]:
    """What the switch recorded, oldest first (times are seconds)."""
    db = ADDRESSES["h2_1"]
    return [Seen("h1_1", "egress", "tcp", 80, EXT_HOST, 3, 100.0, 160.0),
            Seen("h1_1", "egress", "tcp", 5432, db, 1, 105.0, 105.0),
            Seen("h1_2", "egress", "tcp", 80, EXT_HOST, 2, 110.0, 150.0),
            Seen("h1_2", "egress", "tcp", 5432, db, 4, 120.0, 170.0),
            Seen("h1_1", "egress", "tcp", 8080, EXT_HOST, 1, 130.0, 130.0)]


def web_rules(version: int = 1) -> Rules:
    """The web category's consolidated policy of the example."""
    rules = consolidate("web", WEB, records(), generalizer())
    return Rules(rules.category, version, rules.rules)
