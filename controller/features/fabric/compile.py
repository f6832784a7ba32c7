"""The base fabric: L2 inside a segment, routed between segments, ARP from flows.

Pure: `compile_fabric(FabricInput)` returns the desired flows of every switch.
Steady-state traffic between discovered hosts never reaches the controller;
only LLDP, unknown sources, ARP for unknown targets and routed packets to
undiscovered addresses are punted (see `controller.pipeline.tables`).
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Iterable

import networkx as nx

from controller.pipeline import cookies, tables
from controller.pipeline.actions import IN_PORT, DecTtl, Move, Output, SetField
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, flow
from controller.core.topology import Host, Link, Subnet, next_hops

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
IPPROTO_ICMP = 1

BASE = cookies.make(Feature.FABRIC, "base")


@dataclass(frozen=True)
class FabricInput:
    switches: frozenset[int]          # switches to compile flows for
    links: frozenset[Link]
    hosts: tuple[Host, ...]
    subnets: tuple[Subnet, ...]
    router_mac: str


def host_cookie(host: Host) -> int:
    return cookies.make(Feature.FABRIC, f"host:{host.mac}")


def subnet_cookie(subnet: Subnet) -> int:
    return cookies.make(Feature.FABRIC, f"subnet:{subnet.id}", subnet.revision)


def arp_responder(mac: str, ip: str) -> tuple:
    """Turn an ARP request for `ip` into the reply `ip is-at mac`, back out of its port."""
    return (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac),
            SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac),
            Move("arp_spa", "arp_tpa", 32), SetField("arp_spa", ip),
            Output(IN_PORT))


def proxy_arp_responder(mac: str) -> tuple[Action, ...]:
    """Answer any ARP request with `mac` (the asked address swapped into the sender)."""
    return (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac),
            Move("arp_tpa", "reg5", 32), Move("arp_spa", "arp_tpa", 32),
            Move("reg5", "arp_spa", 32), Output(IN_PORT))


def icmp_echo_responder(mac: str, ip: str) -> tuple:
    """Turn an echo request to `ip` into its reply; the caller sends it on to l2.

    Through l2 rather than straight back out of the ingress port, so a reply
    to an interface with a personality passes its ingress firewall like any
    other packet.  The ingress port is cleared (copied from reg7, which the
    hub never sets, so it reads 0; OpenFlow switches refuse set_field on
    in_port): a switch never outputs a packet to the port it came in on
    unless told IN_PORT, and l2 sends the reply exactly there.
    """
    return (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac),
            Move("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", ip),
            SetField("icmpv4_type", 0), Move("reg7", "in_port", 16))


def _switch_flows(dpid: int, inp: FabricInput, hops: dict[int, dict[int, int]],
                  link_ports: set[int]) -> list[FlowSpec]:
    T = tables
    router = inp.router_mac
    out = [
        flow(T.CLASSIFY.id, 0, cookie=BASE),
        # Unknown sources: ARP and IPv4 teach the hub a host; anything else is dropped.
        flow(T.CLASSIFY.id, 10, {"eth_type": ETH_ARP}, [Output.controller()], cookie=BASE),
        flow(T.CLASSIFY.id, 10, {"eth_type": ETH_IPV4}, [Output.controller()], cookie=BASE),
        flow(T.PERSONALITY_ROUTES.id, 0, goto=T.ARP.id, cookie=BASE),
        flow(T.ARP.id, 0, goto=T.ROUTE.id, cookie=BASE),
        flow(T.ARP.id, 100, {"eth_type": ETH_ARP, "arp_op": 1}, [Output.controller()], cookie=BASE),
        flow(T.ARP.id, 110, {"eth_type": ETH_ARP, "arp_op": 2}, goto=T.ROUTE.id, cookie=BASE),
        flow(T.ROUTE.id, 0, goto=T.L2.id, cookie=BASE),
        flow(T.ROUTE.id, 100, {"eth_dst": router, "eth_type": ETH_IPV4},
             [Output.controller()], cookie=BASE),
        flow(T.L2.id, 0, cookie=BASE),
    ]
    out += [flow(T.CLASSIFY.id, 100, {"in_port": port}, goto=T.ARP.id, cookie=BASE)
            for port in sorted(link_ports)]
    for subnet in inp.subnets:
        gw, c = str(subnet.gateway), subnet_cookie(subnet)
        out.append(flow(T.ARP.id, 300, {"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": gw},
                        arp_responder(router, gw), cookie=c))
        out.append(flow(T.ROUTE.id, 300, {"eth_dst": router, "eth_type": ETH_IPV4,
                                          "ip_proto": IPPROTO_ICMP, "icmpv4_type": 8,
                                          "ipv4_dst": gw},
                        icmp_echo_responder(router, gw), goto=T.L2.id, cookie=c))
    for host in inp.hosts:
        c = host_cookie(host)
        if host.dpid == dpid:
            out.append(flow(T.CLASSIFY.id, 200, {"in_port": host.port, "eth_src": host.mac},
                            goto=T.ARP.id, cookie=c))
            port = host.port
        else:
            port = hops.get(dpid, {}).get(host.dpid)
        if port is None:
            continue  # host unreachable from this switch (partitioned fabric)
        out.append(flow(T.L2.id, 100, {"eth_dst": host.mac}, [Output(port)], cookie=c))
        for ip in host.ips:
            out.append(flow(T.ARP.id, 200, {"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip},
                            arp_responder(host.mac, ip), cookie=c))
            out.append(flow(T.ROUTE.id, 200, {"eth_dst": router, "eth_type": ETH_IPV4,
                                              "ipv4_dst": ip},
                            [SetField("eth_src", router), SetField("eth_dst", host.mac), DecTtl()],
                            goto=T.L2.id, cookie=c))
    return out


def compile_fabric(inp: FabricInput) -> dict[int, tuple[FlowSpec, ...]]:
    hops = next_hops(inp.switches | {d for l in inp.links for d in (l.a_dpid, l.b_dpid)},
                     inp.links)
    result = {}
    for dpid in sorted(inp.switches):
        ports = {port for link in inp.links for (d, port) in link.ends() if d == dpid}
        flows = _switch_flows(dpid, inp, hops, ports)
        tables.check(flows)
        result[dpid] = tuple(sorted(flows, key=lambda f: (f.table, -f.priority, repr(f.match))))
    return result
