"""Mirrored policies on a hub over fake switches: a target member gets the source's rules
(or default deny before any exist), refused connections become one pending review, an
approval becomes the source's next version and opens the connection for every target,
and an approval's time ends it again."""
from __future__ import annotations

import pytest

from controller.core.interfaces import interface_id
from controller.features.policy import versions
from controller.features.policy.enforce import review_cookie
from controller.features.policy.records import KEY
from controller.features.policy.rules import PROFILE, REVIEW, Peer, Rule, RuleKey, Rules
from controller.pipeline import tables
from controller.pipeline.flowspec import flow
from tests.unit.hubtest import A, SUBNETS, Fabric, run

WEB, NEW = interface_id(A, 2), interface_id(A, 3)
H3_MAC, H3_IP = "00:00:00:00:01:0b", "10.0.1.11"
EXT = "198.51.100.7"


@pytest.fixture
def fab() -> Fabric:
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    f.connect()
    f.settle()
    f.learn()
    f.learn(A, 3, H3_MAC, H3_IP)
    for iid, category in ((WEB, "web"), (NEW, "new-web")):
        f.store.put("interface", iid, {**f.store.get("interface", iid).body,
                                       "categories": [category]})
    f.hub.documents_changed("interface")
    f.settle()
    return f


def allowed_ports(fab) -> set[int]:
    """The tcp ports the new member's egress firewall admits (its allow rules' flows)."""
    fw = tables.POLICY_EGRESS_FW.id
    return {dict(f.match).get("tcp_dst") for f in fab.a.flows.values()
            if f.table == fw and f.cookie == review_cookie("new-web") and f.actions
            and dict(f.match).get("ipv4_dst") == f"{EXT}" and "tcp_dst" in dict(f.match)}


def profile(fab, strength: int = 100) -> None:
    fab.store.put(PROFILE, "web-to-new-web", {"source_category": "web",
                                              "target_category": "new-web",
                                              "strength": strength, "mode": "enforce"})
    fab.hub.documents_changed(PROFILE)
    run(fab.hub)


def later(fab, seconds: float) -> None:
    fab.clock.advance(seconds)
    fab.wall.advance(seconds)
    run(fab.hub)


def test_a_target_before_any_policy_gets_default_deny_then_the_sources_rules(fab):
    profile(fab)
    enforced = [f for f in fab.a.flows.values() if f.cookie == review_cookie("new-web")]
    assert enforced and allowed_ports(fab) == set(), "fail closed: nothing allowed"
    rule = Rule(RuleKey("egress", "tcp", 80, Peer("address", EXT)), members=frozenset({WEB}),
                of=1, first_seen=1.0)
    versions.save(fab.store, Rules("web", 0, {rule.id: rule}), "test", fab.wall())
    fab.hub.documents_changed(PROFILE)
    run(fab.hub)
    assert allowed_ports(fab) == {80}
    later(fab, 2.5)
    record = fab.store.get("interface", NEW).body["policy"]
    assert (record["profile_id"], record["version"]) == ("web-to-new-web", 1)


def test_refused_connections_make_one_review_and_an_approval_opens_them(fab):
    profile(fab)
    refused = flow(tables.POLICY_REFUSED.id, 100, {KEY: 3, "eth_type": 0x0800, "ip_proto": 6,
                                                   "ipv4_dst": EXT, "tcp_dst": 22},
                   cookie=review_cookie("new-web"))
    fab.a.flows[refused.key] = refused
    fab.a.counts[refused.key] = (10, 600)
    later(fab, 2.5)
    (review,) = fab.store.list(REVIEW)
    assert (review.body["port"], review.body["count"], review.body["state"],
            review.body["members"]) == (22, 10, "pending", [NEW])
    fab.store.put(REVIEW, review.id, {**review.body, "state": "approved",
                                      "decided_at": fab.wall(), "expires_at": fab.wall() + 60})
    fab.hub.documents_changed(REVIEW)
    run(fab.hub)
    policy = versions.current(fab.store, "web")
    assert policy.version == 1 and [r.origin for r in policy.rules.values()] == ["approved"]
    assert allowed_ports(fab) == {22}
    assert fab.store.get(REVIEW, review.id).body["applied_version"] == 1
    later(fab, 61)
    assert versions.current(fab.store, "web").rules == {}, "the approval's time is over"
    assert allowed_ports(fab) == set()
