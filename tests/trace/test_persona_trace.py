"""Persona flows on a real bridge that is both the member's switch and the gateway.

The bridge gets the base fabric for one outside host X (subnet 198.51.100.0/24)
plus `compile_personas` for a member M of the seed persona (10.100.0.0/24,
tcp/udp, tcp 80 allowed, tcp 22 denied) and a second persona with the same
range (so both are NATed).  `ofproto/trace` walks them, conntrack's answers
given with `--ct-next`.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.persona.compile import (DENIED, GatewayInput, Member, PersonaNet, Policy,
                                        compile_personas, usage_cookie)
from controller.core.hub import ROUTER_MAC
from controller.pipeline.ofctl import render_flows
from controller.core.topology import Host, Subnet
from tests.trace.test_personality_trace import CtTrace, ct_trace

pytestmark = pytest.mark.trace

GW_MAC = "02:b5:00:00:00:02"
X = ("02:00:c6:33:64:01", "198.51.100.1", 2)
M = ("02:00:0a:00:01:01", "10.100.0.5", 1)      # member of A
N = ("02:00:0a:00:01:02", "10.100.0.5", 3)      # member of B, same address
NEW, EST = "new,trk", "est,trk"


def personas(dpid: int) -> tuple[PersonaNet, ...]:
    common = dict(ip_range=IPv4Network("10.100.0.0/24"), gateway_ip=IPv4Address("10.100.0.1"),
                  protocols=frozenset({6, 17}),
                  policies=(Policy(6, (80, 80), "allow"), Policy(6, (22, 22), "deny")))
    a = PersonaNet(id="a", index=1, nat_range=IPv4Network("100.64.0.0/24"), owns_real=True,
                   members=(Member("m", dpid, M[2], M[0], IPv4Address(M[1])),), **common)
    b = PersonaNet(id="b", index=2, nat_range=IPv4Network("100.64.1.0/24"),
                   members=(Member("n", dpid, N[2], N[0], IPv4Address(N[1])),), **common)
    return a, b


class Loaded:
    def __init__(self, bridge):
        self.bridge = bridge

    def trace(self, packet: str, *ct_next: str) -> CtTrace:
        return ct_trace(self.bridge, packet, *ct_next)


@pytest.fixture(scope="module")
def gw(make_bridge) -> Loaded:
    bridge = make_bridge(ports=3)
    dpid = bridge.dpid
    subnet = Subnet.from_body("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"})
    hosts = (Host(X[0], (X[1],), dpid, X[2], 1.0), Host(M[0], (), dpid, M[2], 1.0),
             Host(N[0], (), dpid, N[2], 1.0))
    fabric = compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, (subnet,),
                                        ROUTER_MAC))[dpid]
    inp = GatewayInput(gateway_dpid=dpid, gateway_mac=GW_MAC, router_mac=ROUTER_MAC,
                       switches=frozenset({dpid}), hops={}, hosts=hosts,
                       personas=personas(dpid))
    flows = fabric + compile_personas(inp)[dpid]
    bridge.add_flows(render_flows(flows))
    assert len(bridge.dump_flows()) == len(flows)
    return Loaded(bridge)


def from_m(proto: str, dst: str, dport: int | None = None, src=M) -> str:
    mac, ip, port = src
    l4 = f",{proto}_src=40000,{proto}_dst={dport}" if dport else ""
    return (f"in_port={port},{proto},dl_src={mac},dl_dst={GW_MAC},nw_src={ip},nw_dst={dst},"
            f"nw_ttl=64{l4}")


def test_proxy_arp_answers_with_the_gateway_mac(gw):
    t = gw.trace(f"in_port={M[2]},arp,dl_src={M[0]},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,"
                 f"arp_spa={M[1]},arp_tpa=10.100.0.77,arp_sha={M[0]}")
    assert t.out_ports == [M[2]], t
    assert f"sip=10.100.0.77,tip={M[1]},op=2,sha={GW_MAC},tha={M[0]}" in t.passes[-1], t


def test_own_address_probe_gets_no_answer(gw):
    t = gw.trace(f"in_port={M[2]},arp,dl_src={M[0]},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,"
                 f"arp_spa=0.0.0.0,arp_tpa={M[1]},arp_sha={M[0]}")
    assert t.dropped, t


def test_dhcp_is_punted(gw):
    t = gw.trace(f"in_port={M[2]},udp,dl_src={M[0]},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
                 f"nw_dst=255.255.255.255,udp_src=68,udp_dst=67")
    assert "userspace(" in t.passes[-1] or "controller" in t.text, t


def test_allowed_connection_leaves_snated_to_the_outside_host(gw):
    t = gw.trace(from_m("tcp", X[1], 80), NEW)
    assert t.committed and t.out_ports == [X[2]], t
    assert "nw_src=100.64.0.5" in t.final_flow and f"dl_dst={X[0]}" in t.final_flow, t


def test_denied_policy_and_unlisted_protocol_are_dropped(gw):
    assert gw.trace(from_m("tcp", X[1], 22), NEW).dropped
    assert gw.trace(from_m("icmp", X[1]), NEW).dropped


def test_udp_passes_by_default(gw):
    t = gw.trace(from_m("udp", X[1], 5000), NEW)
    assert t.committed and t.out_ports == [X[2]], t


def test_personas_cannot_reach_each_other(gw):
    t = gw.trace(from_m("tcp", "100.64.1.5", 80), NEW)
    assert t.dropped, t
    assert f"cookie 0x{usage_cookie('b', DENIED):x}" in t.text, t   # counted against b


def test_outside_reaches_member_only_by_policy_and_replies(gw):
    routed = (f"in_port={X[2]},tcp,dl_src={X[0]},dl_dst={ROUTER_MAC},nw_src={X[1]},"
              f"nw_dst=100.64.0.5,nw_ttl=64,tp_src=80,tp_dst=40000")
    reply = gw.trace(routed, EST)
    assert reply.out_ports == [M[2]], reply
    assert f"nw_dst={M[1]}" in reply.final_flow and f"dl_dst={M[0]}" in reply.final_flow, reply
    new = (f"in_port={X[2]},tcp,dl_src={X[0]},dl_dst={ROUTER_MAC},nw_src={X[1]},"
           f"nw_dst=100.64.0.5,nw_ttl=64,tp_src=40000,tp_dst=80")
    assert gw.trace(new, NEW).out_ports == [M[2]]          # tcp 80 allowed both ways
    ssh = new.replace("tp_dst=80", "tp_dst=2222")
    assert gw.trace(ssh, NEW).dropped                       # default deny inbound


def test_the_persona_that_expires_first_keeps_its_real_range(gw):
    """a (owns_real) is reached at 10.100.0.5 too, and answers from it; b only at its block."""
    routed = (f"in_port={X[2]},tcp,dl_src={X[0]},dl_dst={ROUTER_MAC},nw_src={X[1]},"
              f"nw_dst=10.100.0.5,nw_ttl=64,tp_src=40000,tp_dst=80")
    t = gw.trace(routed, NEW)
    zone = personas(0)[0].zone
    assert t.out_ports == [M[2]] and f"ct(commit,zone={zone},mark=0x40/0x40)" in t.passes[-1], t
    # (the trace cannot set a mark with --ct-next; given in the packet, it stays after ct)
    reply = gw.trace(from_m("tcp", X[1], 40000).replace("tcp_src=40000", "tcp_src=80")
                     + ",ct_mark=0x40", "est,rpl,trk")
    assert reply.out_ports == [X[2]] and "nw_src=100.64" not in reply.final_flow, reply
    b = gw.trace(routed.replace("10.100.0.5", "100.64.1.5"), NEW)
    assert b.out_ports == [N[2]], b
