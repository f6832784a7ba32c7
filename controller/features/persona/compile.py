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
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable

from controller.features.fabric.compile import icmp_echo_responder
from controller.features.personality.compile import port_range_masks
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (IN_PORT, Action, Conntrack, DecTtl, Move, Output,
                                         SetField, ct_state)
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow
from controller.pipeline.meters import MeterSpec
from controller.core.topology import Host

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
IPPROTO_ICMP = 1
IP_PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "sctp": 132}
PORT_FIELDS = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}
ZONE_BASE = 32768           # persona zones: ZONE_BASE + index (personalities stay below)
METER_BASE = 65536          # persona meters: METER_BASE + 2 * index (+1 inbound)
MAX_INDEX = 32767
REG_PERSONA = "reg6"
REG_REAL = "reg4"           # 1: an inbound packet addressed to a real (unmapped) address
REAL_MARK = 0x40            # ct_mark bit 6 (controller.pipeline.ctmark: bits 6.. are free)

# usage_cookie kinds
OUT, IN, CONNECTION, DENIED = "out", "in", "conn", "denied"

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
FW_INVALID = 65000
FW_REPLY = 64000
FW_CLOSED = 62000
FW_INTRA = 61000
FW_ISOLATE = 60000
FW_POLICY_TOP = 50000  # policy i gets FW_POLICY_TOP - i
FW_DEFAULT = 100
FW_REFUSE = 1
OUT_PEER = 300
OUT_MEMBER = 200


def dscp_for_latency(latency_ms: float | None) -> int | None:
    """The DiffServ class a latency objective asks for: EF, AF41, AF21 or none."""
    if latency_ms is None:
        return None
    if latency_ms <= 10:
        return 46
    if latency_ms <= 50:
        return 34
    if latency_ms <= 200:
        return 18
    return None


# ------------------------------------------------------------------------ input
@dataclass(frozen=True)
class Member:
    """An interface attached to a persona, with its address in the persona's range."""
    interface_id: str
    dpid: int
    port: int
    mac: str
    ip: IPv4Address


@dataclass(frozen=True)
class Policy:
    """A security policy: protocol number, destination ports (lo, hi), action, endpoints."""
    protocol: int
    ports: tuple[int, int] | None
    action: str                       # "allow" | "deny"
    source: IPv4Network | None = None
    destination: IPv4Network | None = None


@dataclass(frozen=True)
class PersonaNet:
    """What the data plane needs of one persona."""
    id: str
    index: int
    ip_range: IPv4Network
    gateway_ip: IPv4Address
    protocols: frozenset[int]
    policies: tuple[Policy, ...] = ()
    nat_range: IPv4Network | None = None
    bandwidth_kbps: int | None = None
    dscp: int | None = None
    members: tuple[Member, ...] = ()
    owns_real: bool = False           # NAT'd, yet reached at its real range too (expires first)
    closing: bool = False             # teardown: refuse new connections
    routed: bool = True               # teardown: routes withdrawn

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_INDEX:
            raise ValueError(f"persona index {self.index} is outside 1..{MAX_INDEX}")
        if self.nat_range is not None and self.nat_range.prefixlen != self.ip_range.prefixlen:
            raise ValueError("a NAT block has the size of the persona's range")

    @property
    def zone(self) -> int:
        return ZONE_BASE + self.index

    @property
    def hub_range(self) -> IPv4Network:
        return self.nat_range or self.ip_range

    def hub_address(self, ip: IPv4Address) -> IPv4Address:
        """A member's address as the hub sees it (its NAT twin, or itself)."""
        if self.nat_range is None:
            return ip
        return self.nat_range.network_address + (int(ip) - int(self.ip_range.network_address))


@dataclass(frozen=True)
class GatewayInput:
    gateway_dpid: int
    gateway_mac: str
    router_mac: str
    switches: frozenset[int]                 # switches to compile for (connected, settled)
    hops: dict[int, dict[int, int]]          # controller.features.fabric.compile.next_hops
    hosts: tuple[Host, ...]                  # the fabric's hosts, for persona_forward
    personas: tuple[PersonaNet, ...]


# ---------------------------------------------------------------------- cookies
def persona_cookie(persona_id: str) -> int:
    return cookies.make(Feature.PERSONA, persona_id)


def usage_cookie(persona_id: str, kind: str) -> int:
    """Counted flows carry version 1 (the others 0): `usage_mask` reads only them."""
    return cookies.make(Feature.PERSONA, f"{persona_id}#{kind}", 1)


def usage_mask() -> tuple[int, int]:
    """(cookie, mask) selecting every persona flow whose counters are read."""
    cookie, mask = cookies.feature_mask(Feature.PERSONA)
    return cookie | 1, mask | 0xFFFF


GATEWAY_COOKIE = cookies.make(Feature.PERSONA, "#gateway")


def meter_ids(persona: PersonaNet) -> tuple[int, int]:
    """(outbound, inbound) meter ids of a persona on the gateway."""
    base = METER_BASE + 2 * persona.index
    return base, base + 1


def persona_meters(persona: PersonaNet) -> tuple[MeterSpec, ...]:
    if persona.bandwidth_kbps is None:
        return ()
    burst = max(persona.bandwidth_kbps // 5, 64)  # 200 ms worth of traffic
    return tuple(MeterSpec(m, persona.bandwidth_kbps, burst) for m in meter_ids(persona))


# ------------------------------------------------------------------------ flows
def proxy_arp_responder(mac: str) -> tuple[Action, ...]:
    """Answer any ARP request with `mac` (the asked address swapped into the sender)."""
    return (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac),
            Move("arp_tpa", "reg5", 32), Move("arp_spa", "arp_tpa", 32),
            Move("reg5", "arp_spa", 32), Output(IN_PORT))


def _toward(inp: GatewayInput, dpid: int, port: int) -> int | None:
    """The gateway's output port toward (dpid, port)."""
    if dpid == inp.gateway_dpid:
        return port
    return inp.hops.get(inp.gateway_dpid, {}).get(dpid)


def _net(match: dict, field: str, net: IPv4Network | None) -> None:
    if net is not None and net.prefixlen:
        match[field] = str(net.network_address) if net.prefixlen == 32 else \
            (str(net.network_address), str(net.netmask))


def _range(net: IPv4Network) -> MatchValue:
    return str(net.network_address) if net.prefixlen == 32 else \
        (str(net.network_address), str(net.netmask))


def _policy_matches(policy: Policy) -> list[dict[str, MatchValue]]:
    base: dict[str, MatchValue] = {"eth_type": ETH_IPV4, "ip_proto": policy.protocol}
    _net(base, "ipv4_src", policy.source)
    _net(base, "ipv4_dst", policy.destination)
    field = PORT_FIELDS.get(policy.protocol)
    if policy.ports is None or field is None:
        return [base]
    out = []
    for value, mask in port_range_masks(*policy.ports):
        m = dict(base)
        m[field] = value if mask == 0xFFFF else (value, mask)
        out.append(m)
    return out


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


def _gateway_flows(inp: GatewayInput, p: PersonaNet) -> list[FlowSpec]:
    T = tables
    c = persona_cookie(p.id)
    gw_mac, zone = inp.gateway_mac, p.zone
    mark = SetField(REG_PERSONA, p.index)
    me = {REG_PERSONA: p.index}
    out_meter, in_meter = meter_ids(p) if p.bandwidth_kbps is not None else (None, None)
    dscp = [SetField("ip_dscp", p.dscp)] if p.dscp is not None else []
    gw_ip = str(p.gateway_ip)
    flows: list[FlowSpec] = []

    for m in p.members:
        port = _toward(inp, m.dpid, m.port)
        if port is None:
            continue  # the member's switch is cut off from the gateway
        src = {"eth_type": ETH_IPV4, "eth_src": m.mac}
        flows += [
            flow(T.PERSONA_GATEWAY.id, GW_ECHO, {**src, "ipv4_dst": gw_ip, "ip_proto": IPPROTO_ICMP,
                                                 "icmpv4_type": 8},
                 [*icmp_echo_responder(gw_mac, gw_ip), Output(port)], cookie=c),
            flow(T.PERSONA_GATEWAY.id, GW_ECHO, {**src, "ipv4_dst": gw_ip, "ip_proto": IPPROTO_ICMP,
                                                 "icmpv4_type": 0},
                 [Output.controller()], cookie=c),
            flow(T.PERSONA_GATEWAY.id, GW_OUTBOUND, {**src, "ipv4_src": str(m.ip)},
                 [mark, Conntrack(zone=zone, table=T.PERSONA_OUT_FW.id)], cookie=c),
        ]
        hub_ip = p.hub_address(m.ip)
        unnat = [SetField("ipv4_dst", str(m.ip))] if hub_ip != m.ip else []
        flows.append(flow(T.PERSONA_GATEWAY.id, GW_INBOUND, {"eth_type": ETH_IPV4,
                                                             "ipv4_dst": str(hub_ip)},
                          [*unnat, mark, Conntrack(zone=zone, table=T.PERSONA_IN_FW.id)],
                          cookie=c))
        if unnat and p.owns_real:
            flows.append(flow(T.PERSONA_GATEWAY.id, GW_INBOUND, {"eth_type": ETH_IPV4,
                                                                 "ipv4_dst": str(m.ip)},
                              [mark, SetField(REG_REAL, 1),
                               Conntrack(zone=zone, table=T.PERSONA_IN_FW.id)], cookie=c))
        # Delivery: to a peer (outbound table), from outside (inbound table).
        deliver = [SetField("eth_src", gw_mac), SetField("eth_dst", m.mac), *dscp, DecTtl(),
                   Output(port)]
        flows.append(flow(T.PERSONA_OUT.id, OUT_PEER, {**me, "eth_type": ETH_IPV4,
                                                       "ipv4_dst": str(m.ip)},
                          deliver, meter=out_meter, cookie=usage_cookie(p.id, OUT)))
        flows.append(flow(T.PERSONA_IN.id, OUT_PEER, {**me, "eth_type": ETH_IPV4,
                                                      "ipv4_dst": str(m.ip)},
                          deliver, meter=in_meter, cookie=usage_cookie(p.id, IN)))
        snat = [SetField("ipv4_src", str(hub_ip))] if hub_ip != m.ip else []
        if snat and p.owns_real:  # replies of a connection opened to the real address
            flows.append(flow(T.PERSONA_OUT.id, OUT_MEMBER + 1,
                              {**me, "eth_type": ETH_IPV4, "ipv4_src": str(m.ip),
                               "ct_mark": (REAL_MARK, REAL_MARK)},
                              dscp, goto=T.PERSONA_FORWARD.id, meter=out_meter,
                              cookie=usage_cookie(p.id, OUT)))
        flows.append(flow(T.PERSONA_OUT.id, OUT_MEMBER, {**me, "eth_type": ETH_IPV4,
                                                         "ipv4_src": str(m.ip)},
                          [*snat, *dscp], goto=T.PERSONA_FORWARD.id, meter=out_meter,
                          cookie=usage_cookie(p.id, OUT)))

    flows += _firewall(inp, p)
    return flows


def _firewall(inp: GatewayInput, p: PersonaNet) -> list[FlowSpec]:
    T = tables
    c = persona_cookie(p.id)
    me = {REG_PERSONA: p.index, "eth_type": ETH_IPV4}
    commit = Conntrack(commit=True, zone=p.zone)
    real_commit = Conntrack(commit=True, zone=p.zone, mark=REAL_MARK, mark_mask=REAL_MARK)
    conn, denied = usage_cookie(p.id, CONNECTION), usage_cookie(p.id, DENIED)
    new = ct_state("+trk+new")
    flows: list[FlowSpec] = []
    for fw, onward in ((T.PERSONA_OUT_FW, T.PERSONA_OUT), (T.PERSONA_IN_FW, T.PERSONA_IN)):
        flows += [
            flow(fw.id, FW_INVALID, {**me, "ct_state": ct_state("+trk+inv")}, cookie=c),
            flow(fw.id, FW_REPLY, {**me, "ct_state": ct_state("+trk+est")}, goto=onward.id,
                 cookie=c),
            flow(fw.id, FW_REPLY, {**me, "ct_state": ct_state("+trk+rel")}, goto=onward.id,
                 cookie=c),
            flow(fw.id, FW_REFUSE, {**me, "ct_state": new}, cookie=denied),
        ]
        if p.closing:
            flows.append(flow(fw.id, FW_CLOSED, {**me, "ct_state": new}, cookie=c))
            continue
        for i, policy in enumerate(p.policies):
            if policy.protocol not in p.protocols:
                continue
            top = FW_POLICY_TOP - 2 * i
            for match in _policy_matches(policy):
                if policy.action == "allow":
                    flows.append(flow(fw.id, top, {**me, **match, "ct_state": new},
                                      [commit], goto=onward.id, cookie=conn))
                    if fw is T.PERSONA_IN_FW and p.owns_real and p.nat_range is not None:
                        flows.append(flow(fw.id, top + 1, {**me, **match, "ct_state": new,
                                                           REG_REAL: 1},
                                          [real_commit], goto=onward.id, cookie=conn))
                else:
                    flows.append(flow(fw.id, top, {**me, **match, "ct_state": new},
                                      cookie=denied))
    # From the persona: within its own range, or by default, any listed protocol.
    for proto in sorted(p.protocols):
        base = {**me, "ip_proto": proto, "ct_state": new}
        if not p.closing:
            flows.append(flow(T.PERSONA_OUT_FW.id, FW_INTRA, {**base,
                                                              "ipv4_dst": _range(p.ip_range)},
                              [commit], goto=T.PERSONA_OUT.id, cookie=conn))
            flows.append(flow(T.PERSONA_OUT_FW.id, FW_DEFAULT, base, [commit],
                              goto=T.PERSONA_OUT.id, cookie=conn))
    return flows


def _isolation_flows(inp: GatewayInput) -> list[FlowSpec]:
    """New connections between personas are refused, whichever persona sends.

    One flow per persona range (real and hub-visible) in each firewall table,
    shared by all personas (no reg6 match): a persona's own range is let
    through above it (FW_INTRA).  A refusal counts as a denied attempt of the
    persona the range belongs to (the first by id, for a range two share).
    """
    T = tables
    flows = []
    seen: set[IPv4Network] = set()
    for p in sorted(inp.personas, key=lambda p: p.id):
        for net in (p.ip_range, p.hub_range):
            if net in seen:
                continue
            seen.add(net)
            for fw, field in ((T.PERSONA_OUT_FW, "ipv4_dst"), (T.PERSONA_IN_FW, "ipv4_src")):
                flows.append(_isolation_flow(fw.id, field, net, p.id))
    return flows


# Every compile rebuilds the isolation and route flows of every persona (they
# depend on which persona comes first for a range), and building a FlowSpec
# normalizes its addresses through `ipaddress`: with a thousand personas that
# was most of a compile.  Each flow only depends on these arguments, so it is
# built once.
@lru_cache(maxsize=1 << 16)
def _isolation_flow(table_id: int, field: str, net: IPv4Network, persona_id: str) -> FlowSpec:
    return flow(table_id, FW_ISOLATE, {"eth_type": ETH_IPV4, "ct_state": ct_state("+trk+new"),
                                       field: _range(net)},
                cookie=usage_cookie(persona_id, DENIED))


@lru_cache(maxsize=1 << 16)
def _route_flow(net: IPv4Network, router_mac: str, gateway_mac: str,
                persona_id: str) -> FlowSpec:
    return flow(tables.ROUTE.id, ROUTE_BASE + net.prefixlen,
                {"eth_dst": router_mac, "eth_type": ETH_IPV4, "ipv4_dst": _range(net)},
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
        out[inp.gateway_dpid] += _forward_flows(inp, members) + _isolation_flows(inp)
    result = {}
    for dpid, flows in out.items():
        if flows:
            tables.check(flows)
            result[dpid] = tuple(flows)
    return result


def compile_meters(inp: GatewayInput) -> tuple[MeterSpec, ...]:
    """The gateway's meters: one each way per persona with a bandwidth limit."""
    return tuple(m for p in inp.personas for m in persona_meters(p))


def protocol_numbers(names: Iterable[str]) -> frozenset[int]:
    return frozenset(IP_PROTOCOLS[n] for n in names)
