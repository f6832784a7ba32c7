"""An interface's personality: which addresses it may use, and a stateful firewall.

Pure: `compile_personality(interface, policy)` returns the flows that enforce a
personality on the interface's own switch; `compile_transition(interface,
zone)` returns the flows of the in-between state while a personality changes
(new connections blocked both ways, established ones kept).  Both only add to
the base fabric (`controller.features.fabric.compile`) on that switch:

    classify (0) ──┬── port+MAC of the interface (priority 210, above the fabric's 200)
                   │     └► personality_egress (2)
                   │          ARP from its addresses ─────────────────────► arp (10)
                   │          IPv4 from its addresses ─ ct(zone) ─► personality_egress_fw (3)
                   │          anything else (spoofed, non-IP) dropped      │ +est/+rel, or a
                   │                                                       │ new connection an
                   └── everyone else ─────────────────────────────────────►│ egress rule allows
                                                                 arp (10) ◄┘ (committed)
                                                                    ...
    l2 (50) ──┬── eth_dst = the interface's MAC (priority 110, above the fabric's 100)
              │     └► personality_ingress (60)
              │          ARP ───────────────────────────────────────────► out its port
              │          IPv4 ─ ct(zone) ─► personality_ingress_fw (61)
              │                               +est/+rel, or a new connection an ingress
              │                               rule allows (committed) ──► out its port
              └── everyone else: out toward the host, as before

One conntrack zone per interface and epoch (`interface_zone`: a pair
allocated to the interface, unique across bridges), used both ways, so a
connection the interface opened is `+est` when its replies come back in, and
interfaces never share state.

Rules: `controller.features.personality.policy`.  Replies (`+est`) and
related packets (`+rel`, e.g. ICMP errors) of committed connections always
pass; packets conntrack calls invalid never do.

Every commit stores the COMMITTED bit in the connection's `ct_mark`, in the
field of the table that committed it (layout and why two fields:
`controller.pipeline.ctmark`), so a connection the firewall admitted
is recognized even while conntrack still calls it `+new` (no reply seen: a
one-way UDP stream): such packets pass like established ones, in the
transition state too.  The application access policy
(`controller.features.personality.applications`) adds its flows to the firewall and count
tables, after the rules have admitted a connection.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Iterable, Mapping

from controller.features.personality.applications import Counted, count_flows, firewall_flows
from controller.features.personality.connections import (CONNECTION_IDLE_SECONDS,  # noqa: F401
                                                         decode_connection, learn_connection)
from controller.features.personality.interface import (MAX_PORT, Interface,  # noqa: F401
                                                       connection_cookie, interface_zone,
                                                       meter_id, personality_meters,
                                                       probe_cookie, transition_cookie)
from controller.features.personality.policy import (IP_PROTOS, PORT_FIELDS,  # noqa: F401
                                                    FirewallRule, PersonalityPolicy, Route)
from controller.features.personality.vpn import VpnTunnel, compile_vpn, tunnel_port_name
from controller.pipeline import ctmark, tables
from controller.pipeline.actions import (Action, Conntrack, DecTtl, Nat, Output, SetField,
                                         ct_state)
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow
from controller.pipeline.ports import port_range_masks  # noqa: F401  (re-exported)

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800

# Priorities.  The hooks sit just above the fabric's per-host flows they override.
HOOK_CLASSIFY = 210   # fabric: 200 for (in_port, eth_src) of a known host
HOOK_L2 = 110         # fabric: 100 for eth_dst of a host
ADDRESS_OK = 300      # personality_egress: ARP/IPv4 from the personality's addresses
SPOOFED = 200         # personality_egress: any other ARP/IPv4 from the interface
INGRESS_TRACK = 300   # personality_ingress: IPv4 to the interface -> conntrack
INGRESS_ARP = 200     # personality_ingress: ARP to the interface -> out
CT_INVALID = 65000    # firewall tables: +inv dropped
#             64600      APP_DENIED_DROP, 64500 APP_INSPECT_PUNT (compile.applications)
CT_COMMITTED_NEW = 64002  # firewall tables: +new of a connection committed here (one-way UDP)
CT_ESTABLISHED = 64001
CT_RELATED = 64000
DNS_ALLOWED = 60001   # egress fw: DNS to one of the personality's servers
DNS_REDIRECT = 60000  # egress fw: DNS anywhere else, sent to the first server
RULE_TOP = 50000      # rule i (in list order) gets RULE_TOP - i: first match wins
COUNT_L4 = 20         # count tables: tcp/udp connections keyed with ports
COUNT_IP = 10         # count tables: other IPv4 keyed by addresses and protocol
ROUTE_BASE = 100      # personality_routes: ROUTE_BASE + prefix length
DEFAULT = 100         # a new connection no rule matched
CATCH_ALL = 1         # anything else of the interface: dropped


@dataclass(frozen=True)
class Context:
    """What a personality's flows need to know about the rest of the hub."""
    router_mac: str = "02:b5:00:00:00:01"
    macs: Mapping[str, str] = field(default_factory=dict)  # known host IPv4 -> MAC
    tunnel_ports: Mapping[str, int] = field(default_factory=dict)  # VPN port name -> ofport

    def mac_of(self, ip: str) -> str | None:
        return self.macs.get(ip)

    def tunnel_ofport(self, interface: Interface, vpn: VpnTunnel) -> int | None:
        return self.tunnel_ports.get(tunnel_port_name(interface.dpid, interface.port, vpn))


def _rule_matches(rule: FirewallRule) -> list[dict[str, MatchValue]]:
    """The IPv4 match fields of one rule (several when a port range needs several masks)."""
    base: dict[str, MatchValue] = {}
    if rule.protocol != "any":
        base["ip_proto"] = IP_PROTOS[rule.protocol]
    if rule.source is not None:
        base["ipv4_src"] = str(rule.source)
    if rule.destination is not None:
        base["ipv4_dst"] = str(rule.destination)
    if rule.ports is None:
        return [base]
    field = PORT_FIELDS[rule.protocol]
    out = []
    for value, mask in port_range_masks(*rule.ports):
        m = dict(base)
        if mask == 0xFFFF:
            m[field] = value
        elif mask:
            m[field] = (value, mask)
        out.append(m)
    return out


# --------------------------------------------------------------------- compiler
@dataclass(frozen=True)
class _Side:
    """One way through the interface's firewall: egress (what it sends) or ingress."""
    direction: str
    firewall: int                    # its firewall table
    count: int                       # its count table
    base: Mapping[str, MatchValue]   # the hook's match: in_port + eth_src, or eth_dst

    @property
    def ip(self) -> dict[str, MatchValue]:
        return {**self.base, "eth_type": ETH_IPV4}


class _Build:
    """One interface's flows as they are compiled, and what every step reads."""

    def __init__(self, interface: Interface, zone: int, cookie: int,
                 policy: PersonalityPolicy, transition: bool, ctx: Context) -> None:
        self.interface, self.zone, self.cookie = interface, zone, cookie
        self.policy, self.transition, self.ctx = policy, transition, ctx
        self.egress = _Side("egress", tables.PERSONALITY_EGRESS_FW.id,
                            tables.PERSONALITY_EGRESS_COUNT.id,
                            {"in_port": interface.port, "eth_src": interface.mac})
        self.ingress = _Side("ingress", tables.PERSONALITY_INGRESS_FW.id,
                             tables.PERSONALITY_INGRESS_COUNT.id, {"eth_dst": interface.mac})
        self.nat = Nat() if policy.dns_servers else None  # translate DNS redirected to a server
        self.meters = {d: meter_id(interface, d)
                       for d, rate in (("egress", policy.egress_kbps),
                                       ("ingress", policy.ingress_kbps)) if rate}
        self.out: list[FlowSpec] = []

    def add(self, table: int, priority: int, match: Mapping[str, MatchValue],
            actions: Iterable[Action] = (), goto: int | None = None,
            meter: int | None = None) -> None:
        self.out.append(flow(table, priority, match, actions, goto=goto, cookie=self.cookie,
                             meter=meter))


def _hooks(b: _Build) -> None:
    """Into the fabric: what the interface sends, and what is sent to it."""
    b.add(tables.CLASSIFY.id, HOOK_CLASSIFY, b.egress.base, goto=tables.PERSONALITY_EGRESS.id)
    b.add(tables.L2.id, HOOK_L2, b.ingress.base, goto=tables.PERSONALITY_INGRESS.id)


def _egress_admission(b: _Build) -> None:
    """personality_egress: anti-spoofing (only the personality's addresses), then conntrack."""
    table, egress, mac = tables.PERSONALITY_EGRESS.id, b.egress.base, b.interface.mac
    track = Conntrack(zone=b.zone, table=tables.PERSONALITY_EGRESS_FW.id, nat=b.nat)
    if not b.policy.ip_addresses:  # no address list: ARP and IPv4 pass to the tracker as they are
        b.add(table, ADDRESS_OK, {**egress, "eth_type": ETH_ARP}, goto=tables.ARP.id)
        b.add(table, ADDRESS_OK, {**egress, "eth_type": ETH_IPV4}, [track])
    else:
        for ip in sorted(set(b.policy.ip_addresses), key=IPv4Address):
            b.add(table, ADDRESS_OK, {**egress, "eth_type": ETH_ARP, "arp_spa": ip,
                                      "arp_sha": mac}, goto=tables.ARP.id)
            b.add(table, ADDRESS_OK, {**egress, "eth_type": ETH_IPV4, "ipv4_src": ip}, [track])
        b.add(table, SPOOFED, {**egress, "eth_type": ETH_ARP})
        b.add(table, SPOOFED, {**egress, "eth_type": ETH_IPV4})
    b.add(table, CATCH_ALL, egress)


def _ingress_admission(b: _Build) -> None:
    """personality_ingress: ARP out to the interface, IPv4 through conntrack."""
    table, ingress = tables.PERSONALITY_INGRESS.id, b.ingress.base
    b.add(table, INGRESS_TRACK, {**ingress, "eth_type": ETH_IPV4},
          [Conntrack(zone=b.zone, table=tables.PERSONALITY_INGRESS_FW.id, nat=b.nat)])
    b.add(table, INGRESS_ARP, {**ingress, "eth_type": ETH_ARP}, [Output(b.interface.port)])
    b.add(table, CATCH_ALL, ingress)


def _firewall(b: _Build, side: _Side) -> None:
    """A firewall table: known connections pass, new ones take the rules, the rest drops.

    Commits store COMMITTED in the side's own ct_mark field (masked).  A
    connection committed here that conntrack still calls new (nothing came
    back: a one-way UDP stream) passes like an established one, in the
    transition too.
    """
    table, ip, count = side.firewall, side.ip, side.count
    mark, mark_mask = ctmark.commit(side.direction)
    commit = Conntrack(commit=True, zone=b.zone, mark=mark, mark_mask=mark_mask)
    b.add(table, CT_INVALID, {**ip, "ct_state": ct_state("+trk+inv")})
    b.add(table, CT_ESTABLISHED, {**ip, "ct_state": ct_state("+trk+est")}, goto=count)
    b.add(table, CT_RELATED, {**ip, "ct_state": ct_state("+trk+rel")}, goto=count)
    b.add(table, CT_COMMITTED_NEW, {**ip, "ct_state": ct_state("+trk+new"),
                                    "ct_mark": ctmark.committed(side.direction)}, goto=count)
    b.out.extend(firewall_flows(b.policy.applications, table, side.direction, ip, b.cookie))
    new = {**ip, "ct_state": ct_state("+trk+new")}
    if side is b.egress and b.policy.dns_servers and not b.transition:
        _dns(b, side, new)
    for i, rule in enumerate(() if b.transition else b.policy.firewall_rules):
        if not rule.applies(side.direction):
            continue
        for fields in _rule_matches(rule):
            if rule.action == "allow":
                b.add(table, RULE_TOP - i, {**new, **fields}, [commit], count)
            else:
                b.add(table, RULE_TOP - i, {**new, **fields})
    default_action = "deny" if b.transition else b.policy.default_action
    if default_action == "allow":
        b.add(table, DEFAULT, new, [commit], count)
    else:
        b.add(table, DEFAULT, new)
    b.add(table, CATCH_ALL, ip)


def _dns(b: _Build, side: _Side, new: Mapping[str, MatchValue]) -> None:
    """The interface's DNS reaches only its servers.

    To one of them as addressed, anywhere else redirected to the first
    (replies are translated back by the ct(nat) of personality_ingress).
    Both resume in the count table (ct table=): the redirected query so that
    what follows sees the translated address, and both so that the count
    table sees them tracked, outside the application policy.
    """
    mark, mark_mask = ctmark.commit(side.direction)
    servers = b.policy.dns_servers
    for proto, port_field in (("udp", "udp_dst"), ("tcp", "tcp_dst")):
        dns = {**new, "ip_proto": IP_PROTOS[proto], port_field: 53}
        for server in servers:
            b.add(side.firewall, DNS_ALLOWED, {**dns, "ipv4_dst": server},
                  [Conntrack(commit=True, zone=b.zone, table=side.count, mark=mark,
                             mark_mask=mark_mask)])
        b.add(side.firewall, DNS_REDIRECT, dns,
              [Conntrack(commit=True, zone=b.zone, table=side.count, mark=mark,
                         mark_mask=mark_mask, nat=Nat(dst=servers[0], dst_port=53))])


def _count(b: _Build, side: _Side) -> None:
    """A count table: learn the connection, then go on (egress) or out (ingress)."""
    egress = side is b.egress
    then: tuple[Action, ...] = () if egress else (Output(b.interface.port),)
    goto = tables.PERSONALITY_ROUTES.id if egress else None
    dscp: tuple[Action, ...] = ((SetField("ip_dscp", b.policy.dscp),)
                                if egress and b.policy.dscp is not None else ())
    meter = b.meters.get(side.direction)
    counted = {}
    for proto in ("tcp", "udp"):
        counted[proto] = Counted(
            (learn_connection(b.interface, b.zone, side.direction, proto), *dscp, *then),
            goto, meter)
        b.add(side.count, COUNT_L4, {**side.ip, "ip_proto": IP_PROTOS[proto]},
              counted[proto].actions, goto, meter)
    b.add(side.count, COUNT_IP, side.ip,
          [learn_connection(b.interface, b.zone, side.direction, None), *dscp, *then],
          goto, meter)
    # Connections the firewall just admitted to a port of the application policy.
    b.out.extend(count_flows(b.policy.applications, side.count, side.direction, b.zone,
                             side.ip, counted, b.cookie))


def _routes(b: _Build) -> None:
    """personality_routes: the interface's own routes, longest prefix first."""
    router = b.ctx.router_mac
    for route in b.policy.routes:
        match = {**b.egress.base, "eth_type": ETH_IPV4, "eth_dst": router,
                 "ipv4_dst": str(route.destination)}
        priority = ROUTE_BASE + route.destination.prefixlen
        mac = b.ctx.mac_of(route.next_hop)
        if mac is None:   # next hop not discovered yet: the controller asks for it
            b.add(tables.PERSONALITY_ROUTES.id, priority, match, [Output.controller()])
        else:
            b.add(tables.PERSONALITY_ROUTES.id, priority, match,
                  [SetField("eth_src", router), SetField("eth_dst", mac), DecTtl()],
                  tables.L2.id)


def _vpn(b: _Build) -> None:
    """Remote prefixes through the interface's tunnel port (controller.features.personality.vpn)."""
    vpn = b.policy.vpn
    if vpn is not None:
        b.out.extend(compile_vpn(b.interface, vpn, b.policy.ip_addresses,
                                 b.ctx.tunnel_ofport(b.interface, vpn), b.ctx.router_mac,
                                 b.cookie))


def _checked(b: _Build) -> tuple[FlowSpec, ...]:
    """The flows, checked against the layout and for clashes, in a stable order."""
    tables.check(b.out)
    keys = [f.key for f in b.out]
    if len(set(keys)) != len(keys):  # would silently replace one another on a switch
        raise ValueError(f"personality flows with the same table, priority and match "
                         f"for {b.interface.id}")
    return tuple(sorted(b.out, key=lambda f: (f.table, -f.priority, repr(f.match))))


def _compile(interface: Interface, zone: int, cookie: int, policy: PersonalityPolicy,
             transition: bool, ctx: Context) -> tuple[FlowSpec, ...]:
    b = _Build(interface, zone, cookie, policy, transition, ctx)
    _hooks(b)
    _egress_admission(b)
    _ingress_admission(b)
    for side in (b.egress, b.ingress):
        _firewall(b, side)
        _count(b, side)
    _routes(b)
    _vpn(b)
    return _checked(b)


def compile_personality(interface: Interface, policy: PersonalityPolicy,
                        zone: int | None = None, ctx: Context = Context()) -> tuple[FlowSpec, ...]:
    """The flows enforcing `policy` on `interface`, all for `interface.dpid`.

    Cookies: Feature.PERSONALITY, document = the personality id, version = its
    revision.  `zone` defaults to `interface_zone(interface)`.
    """
    return _compile(interface, interface_zone(interface) if zone is None else zone,
                    policy.cookie, policy, False, ctx)


def compile_transition(interface: Interface, policy: PersonalityPolicy, zone: int,
                       ctx: Context = Context()) -> tuple[FlowSpec, ...]:
    """The flows of an interface whose personality `policy` is being replaced.

    Same tables, hooks, zone, anti-spoofing and routes as
    `compile_personality(interface, policy, zone)` (so its connections stay
    `+est` and keep their paths), but no rules and no DNS redirection: new
    connections (`+new`) are dropped in both directions while established
    and related packets pass, and so do `+new` packets of connections the
    personality committed (marked COMMITTED: one-way UDP streams).  The
    application policy's flows stay (inspection of its connections goes on).
    Cookie: Feature.PERSONALITY, document "transition:<interface id>",
    version 0.
    """
    return _compile(interface, zone, transition_cookie(interface), policy, True, ctx)
