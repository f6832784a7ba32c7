"""The Address Translation Service in flows, pure: `compile_shards(ShardInput)`.

Shard addresses live only between a resource and its own switch; everyone
else sees the resource's stable external address.  Per enrolled resource:

    every switch      route (40): to its external address ─► its MAC, on to l2
                      route (40): into a pool ─► dropped, counted (a probe)
    its own switch    classify (0): its port+MAC ─► shard_edge (12)
                        ARP request ─► answered with the router MAC
                        RAP to the gateway or broadcast ─► controller (metered)
                        IPv4 from a shard address it holds ─► learn the connection,
                          ct(zone, nat) ─► shard_out (13)
                      shard_out: known connection ─► route;  new ─► ct(commit,
                          nat(src=external)) ─► shard_out_nat (14) ─► route
                      l2 (50): IPv4 to its MAC ─► shard_in (91); anything else to it dropped
                      shard_in: to its external address ─► ct(zone, nat) ─► shard_in_ct (92)
                      shard_in_ct: known ─► its port;  new ─► ct(commit,
                          nat(dst=current shard address)) ─► shard_deliver (93) ─► its port

A rotation changes one thing for inbound traffic, the `nat(dst=...)` of new
connections, and keeps the old address among the sources shard_edge
accepts until it is released: conntrack keeps every established connection
on the address it was committed with.  Connections are recorded per
(resource, address) in shard_connections (`connection_cookie`) and counted
while an address drains.

TCP cannot be told apart mid-stream here: a connection whose conntrack entry
was lost (ovs-vswitchd restarted) is new again and goes to the current
address.  That is the one case that resets a connection.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Network

from controller.features.fabric.compile import proxy_arp_responder
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Conntrack, DecTtl, Learn, LearnMatch, Nat, Output,
                                         SetField, ct_state)
from controller.pipeline.flowspec import FlowSpec, flow
from controller.pipeline.meters import MeterSpec

ETH_ARP, ETH_IPV4 = 0x0806, 0x0800
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
BROADCAST = "255.255.255.255"
CONNECTION_SECONDS = 10     # a connection silent this long no longer holds its address
PUNT_METER = 0x20000        # budget: shard meters 0x20000..; every punt of the feature
PUNT_METER_KBPS = 512       # ~500 RAP datagrams a second per switch

# Priorities (budget: classify 225..239, route 301..349, l2 135..149)
HOOK_CLASSIFY = 230
ROUTE_EXTERNAL = 320
PROBE_DROP = 310
HOOK_L2, L2_ISOLATE = 140, 135
EDGE_ARP, EDGE_RAP, EDGE_IPV4 = 400, 300, 200
KNOWN, NEW = 200, 100


@dataclass(frozen=True)
class ResourceNet:
    """One enrolled resource as the flows need it."""
    id: str
    pool_id: str
    dpid: int
    port: int
    mac: str
    zone: int
    external_ip: str
    gateway_ip: str | None          # its subnet's gateway: where RAP goes
    rap_port: int
    address: str | None             # new connections go here (None: no lease yet)
    sources: tuple[str, ...] = ()   # every address its packets may come from


@dataclass(frozen=True)
class ShardInput:
    switches: frozenset[int]
    router_mac: str
    pools: tuple[tuple[str, IPv4Network], ...]       # (pool id, range)
    resources: tuple[ResourceNet, ...]


def resource_cookie(resource_id: str) -> int:
    return cookies.make(cookies.Feature.SHARD, f"resource:{resource_id}")


def probe_cookie(pool_id: str) -> int:
    """The counted drops of packets into one pool (flow stats read them as probes)."""
    return cookies.make(cookies.Feature.SHARD, f"probe:{pool_id}")


def connection_cookie(resource_id: str, address: str) -> int:
    """The learned flows of one resource's connections on one of its addresses."""
    return cookies.make(cookies.Feature.SHARD, f"conn:{resource_id}:{address}")


def learn_connection(r: ResourceNet, address: str, proto: str | None = None,
                     inbound: bool = False) -> Learn:
    """Record the packet's connection, keyed from the resource's side whichever way the
    packet goes (local address and port in reg0/reg2[0..15], the peer's in
    reg1/reg2[16..31], the protocol in reg3): one learned flow per connection."""
    local, peer = ("dst", "src") if inbound else ("src", "dst")
    specs = [LearnMatch("reg0", 32, src=f"ipv4_{local}"), LearnMatch("reg1", 32, src=f"ipv4_{peer}"),
             LearnMatch("reg3", 8, src="ip_proto")]
    if proto is not None:
        specs += [LearnMatch("reg2", 16, 0, src=f"{proto}_{local}"),
                  LearnMatch("reg2", 16, 16, src=f"{proto}_{peer}")]
    return Learn(table=tables.SHARD_CONNECTIONS.id, cookie=connection_cookie(r.id, address),
                 hard_timeout=CONNECTION_SECONDS, priority=1, specs=tuple(specs))


def _route_flows(inp: ShardInput) -> list[FlowSpec]:
    out = [flow(tables.ROUTE.id, PROBE_DROP,
                {"eth_dst": inp.router_mac, "eth_type": ETH_IPV4, "ipv4_dst": str(net)},
                cookie=probe_cookie(pid)) for pid, net in inp.pools]
    for r in inp.resources:
        out.append(flow(tables.ROUTE.id, ROUTE_EXTERNAL,
                        {"eth_dst": inp.router_mac, "eth_type": ETH_IPV4,
                         "ipv4_dst": r.external_ip},
                        [SetField("eth_src", inp.router_mac), SetField("eth_dst", r.mac),
                         DecTtl()], goto=tables.L2.id, cookie=resource_cookie(r.id)))
    return out


@lru_cache(maxsize=1 << 14)
def resource_flows(router_mac: str, r: ResourceNet) -> tuple[FlowSpec, ...]:
    """One resource's flows on its own switch, made once per (router MAC, resource as it
    is now): a lease or a move recompiles its own resource only."""
    flows = _edge_flows(router_mac, r) + _inbound_flows(r)
    tables.check(flows)
    return tuple(flows)


def _edge_flows(router_mac: str, r: ResourceNet) -> list[FlowSpec]:
    T, c = tables, resource_cookie(r.id)
    here = {"in_port": r.port, "eth_src": r.mac}
    out = [flow(T.CLASSIFY.id, HOOK_CLASSIFY, here, goto=T.SHARD_EDGE.id, cookie=c),
           flow(T.SHARD_EDGE.id, EDGE_ARP, {**here, "eth_type": ETH_ARP, "arp_op": 1},
                proxy_arp_responder(router_mac), cookie=c)]
    for server in filter(None, (r.gateway_ip, BROADCAST)):
        out.append(flow(T.SHARD_EDGE.id, EDGE_RAP,
                        {**here, "eth_type": ETH_IPV4, "ipv4_dst": server, "ip_proto": 17,
                         "udp_dst": r.rap_port},
                        [Output.controller()], meter=PUNT_METER, cookie=c))
    track = Conntrack(zone=r.zone, nat=Nat(), table=T.SHARD_OUT.id)
    for address in r.sources:
        src = {**here, "eth_type": ETH_IPV4, "ipv4_src": address}
        for proto in ("tcp", "udp"):
            out.append(flow(T.SHARD_EDGE.id, EDGE_IPV4 + 1, {**src, "ip_proto": PROTOCOLS[proto]},
                            [learn_connection(r, address, proto), track], cookie=c))
        out.append(flow(T.SHARD_EDGE.id, EDGE_IPV4, src, [learn_connection(r, address), track],
                        cookie=c))
        for proto, number in PROTOCOLS.items():
            out.append(flow(T.SHARD_OUT.id, NEW, {**here, **ct_match("+new+trk"),
                                                  "eth_type": ETH_IPV4, "ipv4_src": address,
                                                  "ip_proto": number},
                            [Conntrack(commit=True, zone=r.zone, nat=Nat(src=r.external_ip),
                                       table=T.SHARD_OUT_NAT.id)], cookie=c))
    return out


def ct_match(flags: str) -> dict:
    return {"ct_state": ct_state(flags)}


def _inbound_flows(r: ResourceNet) -> list[FlowSpec]:
    T, c = tables, resource_cookie(r.id)
    mine = {"eth_dst": r.mac, "eth_type": ETH_IPV4}
    out = [flow(T.L2.id, HOOK_L2, mine, goto=T.SHARD_IN.id, cookie=c),
           flow(T.L2.id, L2_ISOLATE, {"eth_dst": r.mac}, cookie=c)]
    if not r.sources:
        return out
    out += [flow(T.SHARD_IN.id, KNOWN, {**mine, "ipv4_dst": r.external_ip},
                 [Conntrack(zone=r.zone, nat=Nat(), table=T.SHARD_IN_CT.id)], cookie=c),
            flow(T.SHARD_DELIVER.id, KNOWN, {"eth_dst": r.mac}, [Output(r.port)], cookie=c)]
    for state in ("+est+trk", "+rel+trk"):
        out.append(flow(T.SHARD_IN_CT.id, KNOWN, {**mine, **ct_match(state)}, [Output(r.port)],
                        cookie=c))
    for address in r.sources:
        to = {**mine, "ipv4_dst": address}
        # A one-way UDP flow stays +new after its commit, already translated by ct(nat).
        out.append(flow(T.SHARD_IN_CT.id, KNOWN, {**to, **ct_match("+new+trk")},
                        [Output(r.port)], cookie=c))
        # What comes in records its connection too: a flow that only ever comes in
        # (one-way UDP) keeps its address from draining.
        for proto in ("tcp", "udp"):
            for state in ("+est+trk", "+new+trk") if proto == "udp" else ("+est+trk",):
                out.append(flow(T.SHARD_IN_CT.id, KNOWN + 1,
                                {**to, **ct_match(state), "ip_proto": PROTOCOLS[proto]},
                                [learn_connection(r, address, proto, inbound=True),
                                 Output(r.port)], cookie=c))
    if r.address is not None:
        for number in PROTOCOLS.values():
            out.append(flow(T.SHARD_IN_CT.id, NEW, {**mine, **ct_match("+new+trk"),
                                                    "ipv4_dst": r.external_ip, "ip_proto": number},
                            [Conntrack(commit=True, zone=r.zone, nat=Nat(dst=r.address),
                                       table=T.SHARD_DELIVER.id)], cookie=c))
    return out


def _switch_flows(inp: ShardInput) -> list[FlowSpec]:
    """Per switch with a resource: known connections leave shard_out for route; a packet
    into a pool that reached a resource's MAC directly is a probe too."""
    base = cookies.make(cookies.Feature.SHARD, "base")
    out = [flow(tables.SHARD_OUT.id, KNOWN, ct_match(state), goto=tables.ROUTE.id, cookie=base)
           for state in ("+est+trk", "+rel+trk")]
    out.append(flow(tables.SHARD_OUT_NAT.id, 0, goto=tables.ROUTE.id, cookie=base))
    out += [flow(tables.SHARD_IN.id, KNOWN - 1, {"eth_type": ETH_IPV4, "ipv4_dst": str(net)},
                 cookie=probe_cookie(pid)) for pid, net in inp.pools]
    return out


def punt_meter() -> MeterSpec:
    """The meter the feature's punts go through (RAP, a patterned service's first
    datagrams), on every switch with a flow that punts."""
    return MeterSpec(PUNT_METER, PUNT_METER_KBPS)


def compile_shards(inp: ShardInput) -> dict[int, tuple[FlowSpec, ...]]:
    """Per ready switch, the flows of every pool and resource (nothing without pools)."""
    if not inp.pools:
        return {}
    everywhere = _route_flows(inp)
    out: dict[int, list[FlowSpec]] = {d: list(everywhere) for d in inp.switches}
    tables.check(everywhere)
    for r in inp.resources:
        if r.dpid in out:
            out[r.dpid] += resource_flows(inp.router_mac, r)
    for dpid in {r.dpid for r in inp.resources} & set(out):
        shared = _switch_flows(inp)
        tables.check(shared)
        out[dpid] += shared
    return {dpid: tuple(flows) for dpid, flows in out.items()}
