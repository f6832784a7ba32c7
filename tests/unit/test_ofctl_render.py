"""FlowSpec -> ovs-ofctl text."""
from __future__ import annotations

import pytest

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.pipeline.actions import (CONTROLLER, IN_PORT, LOCAL, TABLE, DecTtl, Move,
                                         Opaque, Output, SetField)
from controller.pipeline.flowspec import flow
from controller.pipeline.ofctl import render_action, render_flow, render_flows
from controller.core.topology import Host, Link, Subnet

ROUTER = "02:b5:00:00:00:01"


def fabric_flows():
    subnets = (Subnet.from_body("net1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}, 1),
               Subnet.from_body("net2", {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"}, 3))
    hosts = (Host("00:00:00:00:01:0a", ("10.0.1.10",), 1, 1),
             Host("00:00:00:00:02:1e", ("10.0.2.30", "10.0.2.31"), 2, 3))
    out = compile_fabric(FabricInput(frozenset({1, 2}), frozenset({Link.of(1, 5, 2, 6)}),
                                     hosts, subnets, ROUTER))
    return [f for flows in out.values() for f in flows]


def test_header_fields_and_cookie():
    f = flow(50, 100, {"eth_dst": "00:00:00:00:01:0A"}, [Output(3)], cookie=0xB501000000000007)
    assert render_flow(f) == ("table=50,priority=100,cookie=0xb501000000000007,"
                              "eth_dst=00:00:00:00:01:0a,actions=output:3")


def test_no_actions_is_drop_and_goto_comes_last():
    assert render_flow(flow(50, 0)).endswith(",actions=drop")
    f = flow(40, 200, {"eth_type": 0x0800, "ipv4_dst": "10.0.2.30"},
             [SetField("eth_src", ROUTER), SetField("eth_dst", "00:00:00:00:02:1e"), DecTtl()],
             goto=50)
    assert render_flow(f) == (
        "table=40,priority=200,cookie=0x0,eth_type=0x0800,ip_dst=10.0.2.30,"
        "actions=set_field:02:b5:00:00:00:01->eth_src,"
        "set_field:00:00:00:00:02:1e->eth_dst,dec_ttl,goto_table:50")
    assert render_flow(flow(0, 100, {"in_port": 5}, goto=10)).endswith(
        "in_port=5,actions=goto_table:10")


def test_match_fields():
    f = flow(40, 300, {"eth_dst": ROUTER, "eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 8,
                       "ipv4_dst": "10.0.1.1", "ipv4_src": ("10.9.0.0", "255.255.0.0")})
    line = render_flow(f)
    assert ",eth_type=0x0800,ip_proto=1," in line  # prerequisites first
    for part in ("eth_dst=02:b5:00:00:00:01", "icmp_type=8", "ip_dst=10.0.1.1",
                 "ip_src=10.9.0.0/255.255.0.0"):
        assert part in line.split(","), line
    arp = render_flow(flow(10, 300, {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": "10.0.1.1",
                                     "arp_spa": "10.0.1.0/24"}))
    assert "eth_type=0x0806,arp_op=1,arp_spa=10.0.1.0/255.255.255.0,arp_tpa=10.0.1.1" in arp
    masked = render_flow(flow(0, 1, {"eth_src": ("00:00:00:00:01:00", "ff:ff:ff:ff:ff:00")}))
    assert "eth_src=00:00:00:00:01:00/ff:ff:ff:ff:ff:00" in masked
    assert "in_port=LOCAL" in render_flow(flow(0, 1, {"in_port": LOCAL}))


@pytest.mark.parametrize("action, text", [
    (Output(7), "output:7"),
    (Output(IN_PORT), "IN_PORT"),
    (Output(TABLE), "TABLE"),
    (Output(LOCAL), "LOCAL"),
    (Output.controller(), "CONTROLLER:65535"),
    (Output(CONTROLLER, 128), "CONTROLLER:128"),
    (SetField("arp_op", 2), "set_field:2->arp_op"),
    (SetField("ipv4_src", "10.0.1.1"), "set_field:10.0.1.1->ip_src"),
    (SetField("icmpv4_type", 0), "set_field:0->icmp_type"),
    (Move("eth_src", "eth_dst", 48), "move:eth_src[0..47]->eth_dst[0..47]"),
    (Move("ipv4_src", "ipv4_dst", 32), "move:ip_src[0..31]->ip_dst[0..31]"),
    (DecTtl(), "dec_ttl"),
])
def test_actions(action, text):
    assert render_action(action) == text


def test_opaque_actions_are_refused():
    with pytest.raises(TypeError):
        render_action(Opaque("something"))


def test_render_flows_is_one_line_per_flow():
    flows = fabric_flows()
    text = render_flows(flows)
    assert text.endswith("\n")
    assert text.splitlines() == [render_flow(f) for f in flows]
