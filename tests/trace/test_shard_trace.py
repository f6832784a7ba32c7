"""Shard translation on a real bridge: the compiled flows load (conntrack NAT, learn,
the RAP meter), and ofproto/trace follows each path through them.

A resource (port 1, enrolled, leased 10.200.0.5, external 203.0.113.7) and a
client `ext` (port 2, another subnet) on one bridge.  `--ct-next` tells the
trace what conntrack answers at each recirculation.
"""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from controller.core.discovery import bootstrap_flows
from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.shard.translate import (PUNT_METER, PUNT_METER_KBPS, ResourceNet,
                                                 ShardInput, compile_shards)
from controller.pipeline.ofctl import render_flows

pytestmark = pytest.mark.trace

RES = Host("02:00:0a:00:01:0a", ("10.0.1.10",), 0, 1)
EXT = Host("02:00:c6:33:64:01", ("198.51.100.1",), 0, 2)
ADDRESS, OLD, EXTERNAL = "10.200.0.5", "10.200.3.9", "203.0.113.7"
POOL = IPv4Network("10.200.0.0/16")
NEW = ("--ct-next", "trk,new", "--ct-next", "trk,new")


def load(bridge) -> None:
    hosts = tuple(Host(h.mac, h.ips, bridge.dpid, h.port) for h in (RES, EXT))
    subnets = tuple(Subnet.from_body(i, b) for i, b in (
        ("seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}),
        ("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"})))
    fabric = compile_fabric(FabricInput(frozenset({bridge.dpid}), frozenset(), hosts, subnets,
                                        ROUTER_MAC))[bridge.dpid]
    resource = ResourceNet("web-1", "web", bridge.dpid, 1, RES.mac, 0xA003, EXTERNAL,
                           "10.0.1.254", 6699, ADDRESS, (ADDRESS, OLD))
    shard = compile_shards(ShardInput(frozenset({bridge.dpid}), ROUTER_MAC, (("web", POOL),),
                                      (resource,)))[bridge.dpid]
    bridge.ofctl("add-meter", bridge.name,
                 f"meter={PUNT_METER},kbps,band=type=drop,rate={PUNT_METER_KBPS}")
    bridge.add_flows(render_flows([*bootstrap_flows(), *fabric, *shard]))


def from_ext(dst: str, proto: str = "tcp", extra: str = "tcp_flags=0x002") -> str:
    return (f"in_port=2,{proto},dl_src={EXT.mac},dl_dst={ROUTER_MAC},nw_src=198.51.100.1,"
            f"nw_dst={dst},nw_ttl=64,tp_src=40000,tp_dst=80" + (f",{extra}" if extra else ""))


def from_resource(src: str, dst: str = "198.51.100.1") -> str:
    return (f"in_port=1,tcp,dl_src={RES.mac},dl_dst={ROUTER_MAC},nw_src={src},nw_dst={dst},"
            "nw_ttl=64,tp_src=80,tp_dst=40000")


def out_ports(t) -> list[int]:
    """The ports the packet finally leaves by: the last recirculation's datapath actions."""
    last = [l.split(":", 1)[1] for l in t.text.splitlines() if l.startswith("Datapath actions:")][-1]
    return [t.dp_to_ofport.get(int(a), -int(a)) for a in last.strip().split(",") if a.isdigit()]


@pytest.fixture(scope="module")
def bridge(make_bridge):
    b = make_bridge(ports=2)
    load(b)
    return b


def test_a_new_connection_to_the_external_address_is_translated_to_the_current_address(bridge):
    t = bridge.trace(from_ext(EXTERNAL), *NEW)
    assert f"nat(dst={ADDRESS})" in t.text and "commit" in t.text, t.text
    assert out_ports(t) == [1], t.text


def test_an_established_connection_goes_to_its_port_and_replies_leave_for_ext(bridge):
    t = bridge.trace(from_ext(EXTERNAL, extra=""), "--ct-next", "trk,est")
    assert out_ports(t) == [1], t.text
    # (The trace's ct does not NAT an established packet, so it does not reach the
    # per-address flow that records the connection on its way in; the lab shows that.)
    for src in (ADDRESS, OLD):                  # the current and a deprecated address
        t = bridge.trace(from_resource(src), "--ct-next", "trk,est,rpl")
        assert "learn(table=95" in t.text and out_ports(t) == [2], t.text


def test_a_resource_opens_connections_with_its_external_address(bridge):
    t = bridge.trace(from_resource(ADDRESS), *NEW)
    assert f"nat(src={EXTERNAL})" in t.text and out_ports(t) == [2], t.text


def test_shard_addresses_are_unreachable_from_outside_and_other_sources_are_dropped(bridge):
    probe = bridge.trace(from_ext(ADDRESS))
    assert probe.dropped and "priority 310" in probe.text, probe.text
    spoofed = bridge.trace(from_resource("10.200.9.9"))
    assert spoofed.dropped, spoofed.text


def test_the_resource_gets_arp_answers_and_its_rap_goes_to_the_controller(bridge):
    arp = bridge.trace(f"in_port=1,arp,dl_src={RES.mac},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,"
                       f"arp_spa={ADDRESS},arp_tpa=198.51.100.1,arp_sha={RES.mac}")
    assert arp.out_ports == [1] and ROUTER_MAC in arp.final_flow.get("dl_src", ""), arp.text
    for server in ("10.0.1.254", "255.255.255.255"):
        rap = bridge.trace(f"in_port=1,udp,dl_src={RES.mac},dl_dst={ROUTER_MAC},"
                           f"nw_src=10.0.1.10,nw_dst={server},nw_ttl=64,udp_src=40000,udp_dst=6699")
        assert rap.to_controller and f"meter:{PUNT_METER}" in rap.text, rap.text
