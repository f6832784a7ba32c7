"""The learning runtime on a hub over fake switches: a session observes its category's
members, reads their records back (the switch's learned flows, counted), writes its
progress, and on stop makes the category's next policy version, deletes the records and
stops observing."""
from __future__ import annotations

import pytest

from controller.core.interfaces import interface_id
from controller.features.policy import versions
from controller.features.policy.observe import record_cookie
from controller.features.policy.records import KEY, TABLE
from controller.features.policy.rules import SESSION
from controller.pipeline import tables
from controller.pipeline.flowspec import flow
from tests.unit.hubtest import A, SUBNETS, Fabric, run

H1 = interface_id(A, 2)
H3_MAC, H3_IP = "00:00:00:00:01:0b", "10.0.1.11"          # the second web member, A port 3
EXT = "198.51.100.7"


@pytest.fixture
def fab() -> Fabric:
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    f.connect()
    f.settle()
    f.learn()                                           # H1 on A port 2
    f.learn(A, 3, H3_MAC, H3_IP)
    for port in (2, 3):
        iid = interface_id(A, port)
        f.store.put("interface", iid, {**f.store.get("interface", iid).body,
                                       "categories": ["web"]})
    f.hub.documents_changed("interface")
    f.settle()
    return f


def start(fab) -> None:
    fab.store.put(SESSION, "web-1", {"category": "web", "state": "learning",
                                     "started_at": fab.wall()})
    fab.hub.documents_changed(SESSION)
    run(fab.hub)


def record(fab, port: int, dport: int, connections: int) -> None:
    """What the switch would have learned: a member's egress tcp record, counted."""
    f = flow(TABLE, 100, {KEY: port, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": EXT,
                          "tcp_dst": dport}, cookie=record_cookie("web"))
    fab.a.flows[f.key] = f
    fab.a.counts[f.key] = (connections, 60 * connections)


def later(fab, seconds: float) -> None:
    fab.clock.advance(seconds)
    fab.wall.advance(seconds)
    run(fab.hub)


def hooks(fab) -> list:
    return [f for f in fab.a.flows.values()
            if f.table in (tables.CLASSIFY.id, tables.L2.id) and f.cookie == record_cookie("web")]


def test_a_session_observes_reads_back_and_makes_a_version(fab):
    assert hooks(fab) == []
    start(fab)
    assert len(hooks(fab)) >= 4                          # both members, both ways
    record(fab, 2, 80, 3)
    record(fab, 3, 80, 2)
    record(fab, 2, 8080, 1)
    later(fab, 2.5)
    session = fab.store.get(SESSION, "web-1").body
    assert session["progress"] == {"members": 2, "connections": 6, "rules": 2}
    record(fab, 2, 80, 5)                                # two more connections
    later(fab, 2.5)
    assert fab.store.get(SESSION, "web-1").body["progress"]["connections"] == 8

    fab.store.put(SESSION, "web-1", {**fab.store.get(SESSION, "web-1").body, "state": "stopped"})
    fab.hub.documents_changed(SESSION)
    run(fab.hub)
    policy = versions.current(fab.store, "web")
    assert policy is not None and policy.version == 1
    supports = {(r.key.port, str(r.key.peer)): r.support for r in policy.rules.values()}
    assert supports == {(80, f"address:{EXT}"): "2/2", (8080, f"address:{EXT}"): "1/2"}
    assert fab.store.get(SESSION, "web-1").body["policy_version"] == 1
    assert not [f for f in fab.a.flows.values() if f.table == TABLE], "records deleted"
    assert hooks(fab) == [], "no longer observed"
    assert any("version 1" in m for _, _, m in fab.events(SESSION))


def test_a_duration_ends_the_session_by_itself(fab):
    fab.store.put(SESSION, "web-2", {"category": "web", "state": "learning",
                                     "started_at": fab.wall(), "duration": 10})
    fab.hub.documents_changed(SESSION)
    run(fab.hub)
    record(fab, 2, 443, 1)
    later(fab, 11)
    run(fab.hub)
    body = fab.store.get(SESSION, "web-2").body
    assert (body["state"], body["stopped_by"], body["policy_version"]) == \
        ("stopped", "its duration", 1)
