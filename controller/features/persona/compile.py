"""Personas: isolated segments routed through one persona gateway.

Pure: `compile_personas(GatewayInput)` returns, per switch, the flows that add
every persona to the base fabric (`controller.features.fabric.compile`):

    member's switch   classify (0): the attached port+MAC ─► persona_edge (6)
                        ARP request ─► answered with the gateway MAC (proxy ARP)
                        DHCP ─► controller;  IPv4 from its address ─► l2
                      l2 (50): to the member's MAC only from the gateway MAC
    every switch      route (40): the persona's hub-visible range ─► gateway MAC
                      l2 (50): gateway MAC ─► toward the gateway switch
    gateway switch    l2 (50): gateway MAC ─► persona_gateway (70)
                        echo to the persona's gateway address ─► answered
                        from a member (outbound) ─ ct(zone) ─► persona_out_fw (71)
                        to a hub-visible address (inbound, un-NAT) ─ ct(zone) ─► persona_in_fw (72)
                      71 ─► persona_out (73): to a peer ─► delivered; else SNAT, meter,
                                               DSCP ─► persona_forward (75) ─► host
                      72 ─► persona_in (74): meter, DSCP ─► delivered to the member

Which persona a packet belongs to is known from the member's MAC (outbound)
or from its hub-visible destination (inbound); it is carried in reg6 across
the conntrack recirculation.  Hub-visible addresses are the real ones, or the
persona's NAT block when its range overlaps another persona's (same offset in
the block).  Of personas whose real ranges overlap, the one that expires
first also keeps its real range (`owns_real`): the hub routes it there, and a
connection opened to a real address is marked in conntrack (`REAL_MARK`) so
its replies leave with the real source instead of the NAT block's.

Counting: the flows of `persona_out` / `persona_in` (bytes and packets each
way), the commits (connections opened) and the refusals (denied attempts)
carry distinct cookies (`usage_cookie`), read back with one flow-stats request.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Network

from controller.features.fabric.compile import icmp_echo_responder, proxy_arp_responder
from controller.features.persona.firewall import firewall_flows, isolation_flows, range_match
# The compiler's surface: what callers need of net.py is importable from here too.
from controller.features.persona.net import (CONNECTION, DENIED, GATEWAY_COOKIE,  # noqa: F401
                                             IN, IP_PROTOCOLS, MAX_INDEX, OUT, REAL_MARK,
                                             REG_PERSONA, REG_REAL, GatewayInput, Member,
                                             PersonaNet, Policy, compile_meters,
                                             dscp_for_latency, meter_ids, persona_cookie,
                                             persona_meters, protocol_numbers, usage_cookie,
                                             usage_mask)
from controller.pipeline import tables
from controller.pipeline.actions import Action, Conntrack, DecTtl, Move, Output, SetField
from controller.pipeline.flowspec import FlowSpec, flow

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
IPPROTO_ICMP = 1

# Priorities
HOOK_CLASSIFY = 220   # above a personality's 210 and the fabric's 200
HOOK_L2 = 120         # above a personality's 110 and the fabric's 100
L2_ISOLATE = 115      # to the member's MAC, not from the gateway: dropped
ROUTE_BASE = 150      # + prefix length; below the fabric's host routes (200)
EDGE_OWN_ARP = 400
EDGE_PUNT = 300
EDGE_IPV4 = 200
GW_ECHO = 500
GW_OUTBOUND = 400
GW_INBOUND = 300
OUT_PEER = 300
OUT_MEMBER = 200


# ------------------------------------------------------------------------ flows
def _toward(inp: GatewayInput, dpid: int, port: int) -> int | None:
    """The gateway's output port toward (dpid, port)."""
    if dpid == inp.gateway_dpid:
        return port
    return inp.hops.get(inp.gateway_dpid, {}).get(dpid)


def _edge_flows(p: PersonaNet, m: Member, gw_mac: str) -> list[FlowSpec]:
    c = persona_cookie(p.id)
    T = tables
    here = {"in_port": m.port, "eth_src": m.mac}
    return [
        flow(T.CLASSIFY.id, HOOK_CLASSIFY, here, goto=T.PERSONA_EDGE.id, cookie=c),
        # An ARP probe for its own address (DHCP clients check the offer) gets no answer.
        flow(T.PERSONA_EDGE.id, EDGE_OWN_ARP, {**here, "eth_type": ETH_ARP, "arp_op": 1,
                                               "arp_tpa": str(m.ip)}, cookie=c),
        flow(T.PERSONA_EDGE.id, EDGE_PUNT, {**here, "eth_type": ETH_ARP, "arp_op": 1},
             proxy_arp_responder(gw_mac), cookie=c),
        flow(T.PERSONA_EDGE.id, EDGE_PUNT, {**here, "eth_type": ETH_IPV4, "ip_proto": 17,
                                            "udp_src": 68, "udp_dst": 67},
             [Output.controller()], cookie=c),
        flow(T.PERSONA_EDGE.id, EDGE_IPV4, {**here, "eth_type": ETH_IPV4, "ipv4_src": str(m.ip)},
             [SetField("eth_dst", gw_mac)], goto=T.L2.id, cookie=c),
        flow(T.L2.id, HOOK_L2, {"eth_dst": m.mac, "eth_src": gw_mac}, [Output(m.port)], cookie=c),
        flow(T.L2.id, L2_ISOLATE, {"eth_dst": m.mac}, cookie=c),
    ]


@dataclass(frozen=True)
class _Gateway:
    """What every gateway flow of one persona shares."""
    inp: GatewayInput
    p: PersonaNet

    @property
    def cookie(self) -> int:
        return persona_cookie(self.p.id)

    @property
    def mark(self) -> SetField:
        """Which persona a packet belongs to, carried across the conntrack recirculation."""
        return SetField(REG_PERSONA, self.p.index)

    @property
    def meters(self) -> tuple[int | None, int | None]:
        return meter_ids(self.p) if self.p.bandwidth_kbps is not None else (None, None)

    @property
    def dscp(self) -> list[Action]:
        return [SetField("ip_dscp", self.p.dscp)] if self.p.dscp is not None else []

    def track(self, table: int) -> Conntrack:
        return Conntrack(zone=self.p.zone, table=table)


def _gateway_flows(inp: GatewayInput, p: PersonaNet) -> list[FlowSpec]:
    """Every member's gateway flows (entry, delivery, exit), then the firewall's."""
    g = _Gateway(inp, p)
    flows: list[FlowSpec] = []
    for m in p.members:
        port = _toward(inp, m.dpid, m.port)
        if port is None:
            continue  # the member's switch is cut off from the gateway
        flows += _echo_flows(g, m, port)
        flows += _entry_flows(g, m)
        flows += _delivery_flows(g, m, port)
        flows += _exit_flows(g, m)
    flows += firewall_flows(inp, p)
    return flows


def _echo_flows(g: _Gateway, m: Member, port: int) -> list[FlowSpec]:
    """The member's pings to its gateway address are answered; echo replies are punted."""
    gw_mac, gw_ip = g.inp.gateway_mac, str(g.p.gateway_ip)
    echo = {"eth_type": ETH_IPV4, "eth_src": m.mac, "ipv4_dst": gw_ip,
            "ip_proto": IPPROTO_ICMP}
    return [flow(tables.PERSONA_GATEWAY.id, GW_ECHO, {**echo, "icmpv4_type": 8},
                 [*icmp_echo_responder(gw_mac, gw_ip), Output(port)], cookie=g.cookie),
            flow(tables.PERSONA_GATEWAY.id, GW_ECHO, {**echo, "icmpv4_type": 0},
                 [Output.controller()], cookie=g.cookie)]


def _entry_flows(g: _Gateway, m: Member) -> list[FlowSpec]:
    """persona_gateway: from the member (outbound), to its hub-visible address (inbound).

    Inbound is un-NATed here; a persona that also keeps its real range
    (`owns_real`) is reached at the real address too, flagged in REG_REAL.
    """
    T, p = tables, g.p
    flows = [flow(T.PERSONA_GATEWAY.id, GW_OUTBOUND, {"eth_type": ETH_IPV4, "eth_src": m.mac,
                                                      "ipv4_src": str(m.ip)},
                  [g.mark, g.track(T.PERSONA_OUT_FW.id)], cookie=g.cookie)]
    hub_ip = p.hub_address(m.ip)
    unnat = [SetField("ipv4_dst", str(m.ip))] if hub_ip != m.ip else []
    flows.append(flow(T.PERSONA_GATEWAY.id, GW_INBOUND, {"eth_type": ETH_IPV4,
                                                         "ipv4_dst": str(hub_ip)},
                      [*unnat, g.mark, g.track(T.PERSONA_IN_FW.id)], cookie=g.cookie))
    if unnat and p.owns_real:
        flows.append(flow(T.PERSONA_GATEWAY.id, GW_INBOUND, {"eth_type": ETH_IPV4,
                                                             "ipv4_dst": str(m.ip)},
                          [g.mark, SetField(REG_REAL, 1), g.track(T.PERSONA_IN_FW.id)],
                          cookie=g.cookie))
    return flows


def _delivery_flows(g: _Gateway, m: Member, port: int) -> list[FlowSpec]:
    """To the member: from a peer (persona_out) or from outside (persona_in), metered."""
    out_meter, in_meter = g.meters
    me = {REG_PERSONA: g.p.index, "eth_type": ETH_IPV4, "ipv4_dst": str(m.ip)}
    deliver = [SetField("eth_src", g.inp.gateway_mac), SetField("eth_dst", m.mac), *g.dscp,
               DecTtl(), Output(port)]
    return [flow(tables.PERSONA_OUT.id, OUT_PEER, me, deliver, meter=out_meter,
                 cookie=usage_cookie(g.p.id, OUT)),
            flow(tables.PERSONA_IN.id, OUT_PEER, me, deliver, meter=in_meter,
                 cookie=usage_cookie(g.p.id, IN))]


def _exit_flows(g: _Gateway, m: Member) -> list[FlowSpec]:
    """From the member to the rest of the hub: source-NATed to its hub-visible address.

    Replies of a connection opened to the real address (REAL_MARK) keep the
    real source.
    """
    p, (out_meter, _) = g.p, g.meters
    me = {REG_PERSONA: p.index, "eth_type": ETH_IPV4, "ipv4_src": str(m.ip)}
    hub_ip = p.hub_address(m.ip)
    snat = [SetField("ipv4_src", str(hub_ip))] if hub_ip != m.ip else []
    flows = []
    if snat and p.owns_real:
        flows.append(flow(tables.PERSONA_OUT.id, OUT_MEMBER + 1,
                          {**me, "ct_mark": (REAL_MARK, REAL_MARK)}, g.dscp,
                          goto=tables.PERSONA_FORWARD.id, meter=out_meter,
                          cookie=usage_cookie(p.id, OUT)))
    flows.append(flow(tables.PERSONA_OUT.id, OUT_MEMBER, me, [*snat, *g.dscp],
                      goto=tables.PERSONA_FORWARD.id, meter=out_meter,
                      cookie=usage_cookie(p.id, OUT)))
    return flows


# Built once per set of arguments, like `firewall._isolation_flow` (the reason is there).
@lru_cache(maxsize=1 << 16)
def _route_flow(net: IPv4Network, router_mac: str, gateway_mac: str,
                persona_id: str) -> FlowSpec:
    return flow(tables.ROUTE.id, ROUTE_BASE + net.prefixlen,
                {"eth_dst": router_mac, "eth_type": ETH_IPV4, "ipv4_dst": range_match(net)},
                [SetField("eth_dst", gateway_mac)], goto=tables.L2.id,
                cookie=persona_cookie(persona_id))


def _route_flows(inp: GatewayInput, dpid: int) -> list[FlowSpec]:
    """Every switch routes the personas' hub-visible ranges to the gateway MAC."""
    T = tables
    flows: list[FlowSpec] = []
    seen: set[IPv4Network] = set()
    for p in sorted(inp.personas, key=lambda p: p.id):
        nets = [p.hub_range] + ([p.ip_range] if p.owns_real and p.nat_range else [])
        for net in nets:
            if not p.routed or net in seen:
                continue
            seen.add(net)
            flows.append(_route_flow(net, inp.router_mac, inp.gateway_mac, p.id))
    if not flows:
        return []
    if dpid == inp.gateway_dpid:
        flows.append(flow(T.L2.id, HOOK_L2, {"eth_dst": inp.gateway_mac},
                          [Move("reg7", "in_port", 16)], goto=T.PERSONA_GATEWAY.id,
                          cookie=GATEWAY_COOKIE))
    else:
        port = inp.hops.get(dpid, {}).get(inp.gateway_dpid)
        if port is not None:
            flows.append(flow(T.L2.id, HOOK_L2, {"eth_dst": inp.gateway_mac}, [Output(port)],
                              cookie=GATEWAY_COOKIE))
    return flows


def _forward_flows(inp: GatewayInput, members: set[str]) -> list[FlowSpec]:
    """persona_forward on the gateway: route to hub hosts like the route table does."""
    T = tables
    flows = [flow(T.PERSONA_FORWARD.id, 0, [], [Output.controller()], cookie=GATEWAY_COOKIE)]
    for host in inp.hosts:
        if host.mac in members:
            continue
        port = _toward(inp, host.dpid, host.port)
        if port is None:
            continue
        for ip in host.ips:
            flows.append(flow(T.PERSONA_FORWARD.id, 200, {"eth_type": ETH_IPV4, "ipv4_dst": ip},
                              [SetField("eth_src", inp.router_mac), SetField("eth_dst", host.mac),
                               DecTtl(), Output(port)], cookie=GATEWAY_COOKIE))
    return flows


def compile_personas(inp: GatewayInput,
                     cache: dict | None = None) -> dict[int, tuple[FlowSpec, ...]]:
    """Per switch, the flows every persona adds to the fabric (nothing without personas).

    `cache` (kept by the caller between compiles) holds each persona's gateway
    flows, keyed by everything they depend on: with a thousand personas, one
    more only compiles its own.
    """
    if cache is None:
        cache = {}
    if not inp.personas:
        return {}
    out: dict[int, list[FlowSpec]] = {d: _route_flows(inp, d) for d in inp.switches}
    gateway_up = inp.gateway_dpid in inp.switches
    used = set()
    for p in inp.personas:
        for m in p.members:
            if m.dpid in out and p.routed:
                out[m.dpid] += _edge_flows(p, m, inp.gateway_mac)
        if gateway_up:
            key = (p, inp.gateway_dpid, inp.gateway_mac,
                   tuple(_toward(inp, m.dpid, m.port) for m in p.members))
            flows = cache.get(key)
            if flows is None:
                flows = cache[key] = tuple(_gateway_flows(inp, p))
            used.add(key)
            out[inp.gateway_dpid] += flows
    for key in [k for k in cache if k not in used]:
        del cache[key]
    if gateway_up:
        members = {m.mac for p in inp.personas for m in p.members}
        out[inp.gateway_dpid] += _forward_flows(inp, members) + isolation_flows(inp)
    result = {}
    for dpid, flows in out.items():
        if flows:
            tables.check(flows)
            result[dpid] = tuple(flows)
    return result
