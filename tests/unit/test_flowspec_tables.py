"""Match canonicalization, flow identity and the table layout check."""
from __future__ import annotations

import pytest

from controller.pipeline import tables
from controller.pipeline.actions import CONTROLLER, NO_BUFFER, Conntrack, DecTtl, Output, SetField
from controller.pipeline.flowspec import FlowSpec, flow, make_match


def test_mac_fields_are_lowercased():
    for name in ("eth_src", "eth_dst", "arp_sha", "arp_tha"):
        assert make_match({name: "AA:BB:CC:DD:EE:0F"}) == ((name, "aa:bb:cc:dd:ee:0f"),)
    assert make_match({"eth_dst": ("01:00:5E:00:00:00", "FF:FF:FF:00:00:00")}) == \
        (("eth_dst", ("01:00:5e:00:00:00", "ff:ff:ff:00:00:00")),)


@pytest.mark.parametrize("name", ["ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"])
def test_ip_prefix_forms_are_one(name):
    want = ((name, ("10.0.0.0", "255.255.255.0")),)
    assert make_match({name: "10.0.0.0/24"}) == want
    assert make_match({name: ("10.0.0.0", "255.255.255.0")}) == want
    assert make_match({name: "10.0.0.0/255.255.255.0"}) == want
    # host bits are dropped, as a switch does
    assert make_match({name: ("10.0.0.7", "255.255.255.0")}) == want
    assert make_match({name: "10.0.0.7/24"}) == want


@pytest.mark.parametrize("name", ["ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"])
def test_ip_host_prefix_is_a_plain_address(name):
    want = ((name, "10.0.0.5"),)
    assert make_match({name: "10.0.0.5/32"}) == want
    assert make_match({name: ("10.0.0.5", "255.255.255.255")}) == want
    assert make_match({name: "10.0.0.5"}) == want


def test_other_fields_are_ints():
    assert make_match({"in_port": "3", "eth_type": 0x0800}) == (("eth_type", 2048), ("in_port", 3))
    assert make_match({"metadata": ("16", 0xFF)}) == (("metadata", (16, 255)),)
    with pytest.raises(ValueError):
        make_match({"in_port": "three"})


def test_match_is_sorted_and_accepts_pairs():
    a = make_match({"in_port": 1, "eth_src": "00:00:00:00:00:01", "eth_type": 0x806})
    b = make_match([("eth_type", 0x806), ("eth_src", "00:00:00:00:00:01"), ("in_port", 1)])
    assert a == b
    assert [k for k, _ in a] == ["eth_src", "eth_type", "in_port"]
    assert make_match({}) == ()


def test_flow_key_and_same_behaviour():
    a = flow(50, 100, {"eth_dst": "00:00:00:00:00:0A"}, [Output(1)], cookie=7)
    b = flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(2)], cookie=7)
    assert a.key == b.key == (50, 100, (("eth_dst", "00:00:00:00:00:0a"),))
    assert not a.same_behaviour(b)
    assert a.same_behaviour(flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(1)], cookie=7))
    # cookie and goto are behaviour too
    assert not a.same_behaviour(flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(1)], cookie=8))
    c = flow(40, 0, goto=50)
    assert not c.same_behaviour(flow(40, 0))
    # priority and table are identity, not behaviour
    assert flow(50, 101, {"eth_dst": "00:00:00:00:00:0a"}).key != flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}).key
    assert flow(10, 100).key != flow(50, 100).key


def test_meta_is_not_part_of_equality():
    a = FlowSpec(0, 1, (), (DecTtl(),), meta={"why": "x"})
    b = FlowSpec(0, 1, (), (DecTtl(),), meta={"why": "y"})
    assert a == b and hash(a) == hash(b)


def test_actions_are_hashable_values():
    assert Output.controller() == Output(CONTROLLER, NO_BUFFER)
    assert {SetField("eth_src", "a"), SetField("eth_src", "a")} == {SetField("eth_src", "a")}
    f = flow(0, 0, actions=[Output(1)])
    assert isinstance(f.actions, tuple)


def test_layout_is_ordered_and_indexed():
    ids = [t.id for t in tables.LAYOUT]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {0, 2, 3, 4, 5, 6, 10, 12, 13, 14, 40, 50, 60, 61, 62, 63, 70, 71, 72, 73, 74, 75,
            91, 92, 93, 95} <= set(ids)
    assert len(set(t.name for t in tables.LAYOUT)) == len(tables.LAYOUT)
    assert tables.BY_NAME["l2"] is tables.L2 and tables.BY_ID[40] is tables.ROUTE
    assert tables.BY_NAME["personality_egress"] is tables.PERSONALITY_EGRESS
    assert tables.BY_ID[61] is tables.PERSONALITY_INGRESS_FW
    for id_, name in ((4, "personality_egress_count"), (5, "personality_routes"),
                      (62, "personality_ingress_count"), (63, "personality_connections")):
        assert tables.BY_ID[id_] is tables.BY_NAME[name]
    assert tables.BY_ID[4] is tables.PERSONALITY_EGRESS_COUNT
    assert tables.BY_ID[5] is tables.PERSONALITY_ROUTES
    assert tables.BY_ID[62] is tables.PERSONALITY_INGRESS_COUNT
    assert tables.BY_ID[63] is tables.PERSONALITY_CONNECTIONS


def test_each_direction_runs_firewall_then_count_in_table_order():
    """Egress: personality_egress < _fw < _count < personality_routes < arp; ingress likewise."""
    T = tables
    assert (T.CLASSIFY.id < T.PERSONALITY_EGRESS.id < T.PERSONALITY_EGRESS_FW.id
            < T.PERSONALITY_EGRESS_COUNT.id < T.PERSONALITY_ROUTES.id < T.ARP.id < T.L2.id)
    assert (T.L2.id < T.PERSONALITY_INGRESS.id < T.PERSONALITY_INGRESS_FW.id
            < T.PERSONALITY_INGRESS_COUNT.id < T.PERSONALITY_CONNECTIONS.id)


def test_table_misses_name_declared_tables():
    for t in tables.LAYOUT:
        assert t.miss in ("controller", "drop") or t.miss.startswith("goto:"), t
        if t.miss.startswith("goto:"):
            target = tables.BY_NAME[t.miss[len("goto:"):]]
            assert target.id > t.id, t
    # an interface's packets no route of its own matches continue to the fabric's ARP/routing
    assert tables.PERSONALITY_ROUTES.miss == "goto:arp"
    assert tables.PERSONALITY_EGRESS_COUNT.miss == tables.PERSONALITY_INGRESS_COUNT.miss == "drop"


def test_only_the_connection_tables_are_learned():
    connections = (tables.PERSONALITY_CONNECTIONS, tables.SHARD_CONNECTIONS,
                   tables.POLICY_REFUSED, tables.POLICY_RECORDS)
    assert tables.LEARNED == frozenset({63, 95, 108, 109}) == frozenset(t.id for t in connections)
    assert isinstance(tables.LEARNED, frozenset)
    assert not any(t.learned for t in tables.LAYOUT if t not in connections)
    assert tables.Table(99, "x", "y", "drop").learned is False   # the default


def test_check_holds_conntrack_resume_tables_to_the_goto_rule():
    tables.check([flow(2, 1, actions=[Conntrack(zone=5, table=3)]),
                  flow(3, 1, actions=[Conntrack(commit=True, zone=5)], goto=4),
                  flow(60, 1, actions=[Conntrack(zone=5, table=61)]),
                  flow(61, 1, actions=[Conntrack(commit=True, zone=5)], goto=62)])
    for bad in (flow(2, 1, actions=[Conntrack(zone=5, table=2)]),    # to itself
                flow(3, 1, actions=[Conntrack(zone=5, table=2)]),    # backward
                flow(2, 1, actions=[Conntrack(zone=5, table=11)])):  # undeclared
        with pytest.raises(tables.LayoutError):
            tables.check([bad])


def test_check_accepts_declared_tables_and_forward_gotos():
    tables.check([flow(0, 0, goto=10), flow(10, 0, goto=40), flow(0, 1, goto=50),
                  flow(40, 0, goto=50), flow(50, 0)])
    # the personality path: fw -> count -> routes -> arp / l2, ingress fw -> count
    tables.check([flow(3, 1, goto=4), flow(4, 1, goto=5), flow(5, 0, goto=10),
                  flow(5, 1, goto=50), flow(61, 1, goto=62), flow(62, 1, actions=[Output(1)])])
    tables.check([])


@pytest.mark.parametrize("bad", [
    flow(11, 0),                # undeclared table
    flow(120, 0),
    flow(0, 0, goto=11),        # goto undeclared
    flow(0, 0, goto=120),
    flow(40, 0, goto=10),       # backward
    flow(10, 0, goto=10),       # to itself
    flow(50, 0, goto=0),
    flow(5, 0, goto=4),         # routes back into the count table
    flow(63, 0, goto=62),
])
def test_check_refuses(bad):
    with pytest.raises(tables.LayoutError):
        tables.check([flow(0, 0), bad])
    assert issubclass(tables.LayoutError, ValueError)
