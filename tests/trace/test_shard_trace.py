"""Shard pools are invisible from outside: on a real bridge with the fabric and the
shard probe drop installed, a routed packet into a pool is dropped, others still route."""
from __future__ import annotations

import pytest

from controller.core.discovery import bootstrap_flows
from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.shard.document import parse_pool
from controller.features.shard.translate import ShardInput, compile_shards
from controller.pipeline.ofctl import render_flows

pytestmark = pytest.mark.trace

H1 = Host("00:00:00:00:01:0a", ("10.0.1.10",), 0, 1)
H2 = Host("00:00:00:00:02:14", ("10.0.2.20",), 0, 2)
POOL = parse_pool({"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/26"})


def shard_flows(dpid: int):
    inp = ShardInput(frozenset({dpid}), ROUTER_MAC, (("web", POOL.pool),), ())
    return compile_shards(inp)[dpid]


def routed(dst_ip: str) -> str:
    return (f"in_port=1,udp,dl_src={H1.mac},dl_dst={ROUTER_MAC},nw_src=10.0.1.10,"
            f"nw_dst={dst_ip},nw_ttl=64,udp_src=5000,udp_dst=6000")


def test_a_routed_packet_into_a_pool_is_dropped_and_others_are_not(make_bridge):
    bridge = make_bridge(ports=2)
    hosts = tuple(Host(h.mac, h.ips, bridge.dpid, h.port) for h in (H1, H2))
    subnets = tuple(Subnet.from_body(i, b) for i, b in (
        ("net1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}),
        ("net2", {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"})))
    fabric = compile_fabric(FabricInput(frozenset({bridge.dpid}), frozenset(), hosts, subnets,
                                        ROUTER_MAC))[bridge.dpid]
    bridge.add_flows(render_flows([*bootstrap_flows(), *fabric,
                                   *shard_flows(bridge.dpid)]))
    into_pool = bridge.trace(routed("10.200.3.17"))
    assert into_pool.dropped, into_pool.text
    assert "nw_dst=10.200.0.0/16, priority 310, cookie 0xb504" in into_pool.text, into_pool.text
    elsewhere = bridge.trace(routed("10.0.2.20"))
    assert elsewhere.out_ports == [2], elsewhere.text
