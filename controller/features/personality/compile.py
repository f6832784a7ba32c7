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

One conntrack zone per interface (`interface_zone`), used both ways, so a
connection the interface opened is `+est` when its replies come back in, and
interfaces never share state.

Rules (`FirewallRule`) match the packet that opens a connection: `source` and
`destination` are its IPv4 source and destination (an address or a CIDR; none
or "any" for any), `port` its TCP/UDP destination port (one port, a range
"A-B", or none for any), `protocol` tcp, udp, icmp or any.  An `egress` rule
applies to connections the interface opens, an `ingress` rule to connections
opened toward it, `both` to either.  The first matching rule wins; a new
connection no rule matches takes `default_action`.  Replies (`+est`) and
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
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Iterable, Mapping

from controller.features.personality.vpn import VpnTunnel, compile_vpn, tunnel_port_name
from controller.features.personality.applications import (ApplicationPolicy, Counted, count_flows,
                                             firewall_flows)
from controller.pipeline import cookies, ctmark, tables
from controller.pipeline.actions import (Action, Conntrack, DecTtl, Learn, LearnMatch, Nat, Output,
                                         SetField, ct_state)
from controller.pipeline.cookies import Feature
from controller.pipeline.meters import EGRESS, INGRESS, MeterSpec, meter_id_for
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow
from controller.core.topology import dpid_str

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst"}
PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress", "both")
ACTIONS = ("allow", "deny")
MAX_RULES = 10000
MAX_PORT = 16383              # zones are 2 * port + epoch, below the personas' (32768+)
CONNECTION_IDLE_SECONDS = 3  # a connection silent this long no longer counts as live

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

_ANY = {None, "", "any", "*", "0.0.0.0/0"}


# ------------------------------------------------------------------------ input
@dataclass(frozen=True)
class Interface:
    """A host-facing port and the MAC behind it: what a personality binds to."""
    dpid: int
    port: int
    mac: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", self.mac.lower())

    @property
    def id(self) -> str:
        return f"{dpid_str(self.dpid)}:{self.port}"


def _network(value: Any, what: str) -> IPv4Network | None:
    if value in _ANY:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected an IPv4 address or CIDR, got {value!r}")
    try:
        net = IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return None if net.prefixlen == 0 else net


def _port(value: Any, what: str) -> tuple[int, int] | None:
    """None | 443 | "443" | "1000-2000" -> None or an inclusive (lo, hi)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a port or a range 'A-B', got {value!r}")
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        text = value.strip()
        lo_s, sep, hi_s = text.partition("-")
        try:
            lo = int(lo_s.strip())
            hi = int(hi_s.strip()) if sep else lo
        except ValueError:
            raise ValueError(f"{what}: expected a port or a range 'A-B', got {value!r}") from None
    else:
        raise ValueError(f"{what}: expected a port or a range 'A-B', got {value!r}")
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"{what}: ports must be within 1..65535 with A <= B, got {value!r}")
    return lo, hi


def _choice(body: Mapping[str, Any], key: str, choices: tuple[str, ...], what: str,
            default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise ValueError(f"{what}.{key}: required, one of {', '.join(choices)}")
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{what}.{key}: expected one of {', '.join(choices)}, got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class FirewallRule:
    action: str                                  # allow | deny
    protocol: str = "any"                        # tcp | udp | icmp | any
    direction: str = "both"                      # ingress | egress | both
    source: IPv4Network | None = None            # None: any
    destination: IPv4Network | None = None
    ports: tuple[int, int] | None = None         # inclusive destination port range; None: any

    _KEYS = frozenset({"source", "destination", "port", "protocol", "direction", "action"})

    @classmethod
    def from_body(cls, body: Mapping[str, Any], what: str = "rule") -> "FirewallRule":
        if not isinstance(body, Mapping):
            raise ValueError(f"{what}: expected an object, got {body!r}")
        unknown = set(body) - cls._KEYS
        if unknown:
            raise ValueError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
        protocol = _choice(body, "protocol", PROTOCOLS, what, "any")
        ports = _port(body.get("port"), f"{what}.port")
        if ports is not None and protocol not in PORT_FIELDS:
            raise ValueError(f"{what}.port: only tcp and udp rules take a port, not {protocol}")
        return cls(action=_choice(body, "action", ACTIONS, what),
                   protocol=protocol,
                   direction=_choice(body, "direction", DIRECTIONS, what, "both"),
                   source=_network(body.get("source"), f"{what}.source"),
                   destination=_network(body.get("destination"), f"{what}.destination"),
                   ports=ports)

    def applies(self, direction: str) -> bool:
        return self.direction in (direction, "both")


@dataclass(frozen=True)
class Route:
    destination: IPv4Network
    next_hop: str


@dataclass(frozen=True)
class PersonalityPolicy:
    """The part of a personality document the flows enforce.

    Validation of the whole document is `controller.features.personality.document`'s
    job; this only reads what it needs and checks it again cheaply.
    """
    id: str
    ip_addresses: tuple[str, ...] = ()
    firewall_rules: tuple[FirewallRule, ...] = ()
    default_action: str = "deny"
    dns_servers: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    dscp: int | None = None
    egress_kbps: int | None = None       # meters: rate and burst (kbit) per direction
    egress_burst_kbits: int = 0
    ingress_kbps: int | None = None
    ingress_burst_kbits: int = 0
    applications: ApplicationPolicy = ApplicationPolicy()  # application_access_policy
    vpn: VpnTunnel | None = None         # vpn_tunnel_config (controller.features.personality.vpn)
    revision: int = 0

    @classmethod
    def from_body(cls, id: str, body: Mapping[str, Any], revision: int = 0) -> "PersonalityPolicy":
        addresses = body.get("ip_addresses") or []
        if not isinstance(addresses, (list, tuple)):
            raise ValueError(f"ip_addresses: expected a list, got {addresses!r}")
        ips = set()
        for i, a in enumerate(addresses):
            try:
                ips.add(IPv4Address(a))
            except ValueError as exc:
                raise ValueError(f"ip_addresses[{i}]: {exc}") from None
        rules = body.get("firewall_rules") or []
        if not isinstance(rules, (list, tuple)):
            raise ValueError(f"firewall_rules: expected a list, got {rules!r}")
        if len(rules) > MAX_RULES:
            raise ValueError(f"firewall_rules: at most {MAX_RULES} rules, got {len(rules)}")
        dns = tuple(str(IPv4Address(a)) for a in body.get("dns_servers") or ())
        routes = tuple(Route(IPv4Network(r["destination"]), str(IPv4Address(r["next_hop"])))
                       for r in body.get("routing_table") or ())
        qos = body.get("qos_settings") or {}
        priority = qos.get("priority")
        return cls(id=id,
                   ip_addresses=tuple(str(a) for a in sorted(ips)),
                   firewall_rules=tuple(FirewallRule.from_body(r, f"firewall_rules[{i}]")
                                        for i, r in enumerate(rules)),
                   default_action=_choice(body, "default_action", ACTIONS, "personality", "deny"),
                   dns_servers=dns, routes=routes,
                   dscp=None if priority is None else int(priority) << 3,
                   egress_kbps=qos.get("egress_rate_kbps"),
                   egress_burst_kbits=8 * (qos.get("egress_burst_kb") or 0),
                   ingress_kbps=qos.get("ingress_rate_kbps"),
                   ingress_burst_kbits=8 * (qos.get("ingress_burst_kb") or 0),
                   applications=ApplicationPolicy.from_body(
                       body.get("application_access_policy")),
                   vpn=VpnTunnel.from_body(body.get("vpn_tunnel_config")),
                   revision=revision)

    @property
    def cookie(self) -> int:
        return cookies.make(Feature.PERSONALITY, self.id, self.revision)


# ---------------------------------------------------------------------- helpers
def port_range_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """The fewest (value, mask) matches on a 16-bit port covering exactly lo..hi.

    Greedy: from `lo`, take the largest aligned power-of-two block that still
    fits.  (0, 0xFFFF) is one exact port; (0, 0) is every port.
    """
    if not (isinstance(lo, int) and isinstance(hi, int)) or not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo!r}-{hi!r} (need 0 <= lo <= hi <= 65535)")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 0x10000          # alignment of lo
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def interface_zone(interface: Interface, epoch: int = 0) -> int:
    """The conntrack zone of an interface: 2 * port + epoch (epoch 0 or 1).

    Unique per datapath, never 0 (left to everything else).  A personality
    switch moves the interface to the other epoch, so the new personality
    starts with no connection state: what the old one admitted and is still
    open after the drain is judged afresh (and mid-stream TCP is dropped).
    """
    if not 1 <= interface.port <= MAX_PORT:
        raise ValueError(f"interface {interface.id}: personalities need a port in 1..{MAX_PORT}")
    return 2 * interface.port + (epoch & 1)


def transition_cookie(interface: Interface) -> int:
    return cookies.make(Feature.PERSONALITY, f"transition:{interface.id}")


def connection_cookie(interface: Interface, zone: int) -> int:
    """Cookie of the learned flows recording the interface's live connections in `zone`."""
    return cookies.make(Feature.PERSONALITY, f"connections:{interface.id}:{zone}")


def personality_meters(interface: Interface, policy: PersonalityPolicy) -> tuple[MeterSpec, ...]:
    """The drop meters limiting the interface's rates (one per limited direction)."""
    out = []
    for direction, rate, burst in (("egress", policy.egress_kbps, policy.egress_burst_kbits),
                                   ("ingress", policy.ingress_kbps, policy.ingress_burst_kbits)):
        if rate:
            out.append(MeterSpec(_meter_id(interface, direction), rate, burst))
    return tuple(out)


def _meter_id(interface: Interface, direction: str) -> int:
    """What the interface sends enters the switch at its port, and the reverse."""
    return meter_id_for(interface.port, INGRESS if direction == "egress" else EGRESS)


def probe_cookie(name: str) -> int:
    return cookies.make(Feature.PERSONALITY, f"probe:{name}")


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


def _learn_connection(interface: Interface, zone: int, direction: str,
                      protocol: str | None) -> Learn:
    """Record the packet's connection as a flow in personality_connections.

    The learned flow is keyed the same way from both directions (local
    address and port in reg0/reg2[0..15], the peer's in reg1/reg2[16..31],
    the IP protocol in reg3, the interface's port in reg4), so a connection
    is one flow however many packets it carries either way.
    """
    local, peer = ("ipv4_src", "ipv4_dst") if direction == "egress" else ("ipv4_dst", "ipv4_src")
    specs = [LearnMatch("reg0", 32, src=local), LearnMatch("reg1", 32, src=peer),
             LearnMatch("reg3", 8, src="ip_proto"), LearnMatch("reg4", 32, value=interface.port)]
    if protocol is not None:
        ends = ("src", "dst") if direction == "egress" else ("dst", "src")
        specs += [LearnMatch("reg2", 16, 0, src=f"{protocol}_{ends[0]}"),
                  LearnMatch("reg2", 16, 16, src=f"{protocol}_{ends[1]}")]
    return Learn(table=tables.PERSONALITY_CONNECTIONS.id,
                 cookie=connection_cookie(interface, zone),
                 hard_timeout=CONNECTION_IDLE_SECONDS, priority=1, specs=tuple(specs))


def decode_connection(match: Mapping[str, Any]) -> dict[str, Any]:
    """A learned flow's match (reg0..reg4) as {"protocol", "local", "peer"} for people."""
    def ip(v: Any) -> str:
        return str(IPv4Address(v if isinstance(v, int) else v[0]))
    proto = int(match.get("reg3", 0) if not isinstance(match.get("reg3"), tuple) else match["reg3"][0])
    name = {v: k for k, v in IP_PROTOS.items()}.get(proto, str(proto))
    ports = match.get("reg2")
    ports = ports[0] if isinstance(ports, tuple) else ports
    local, peer = ip(match.get("reg0", 0)), ip(match.get("reg1", 0))
    if ports is not None and name in PORT_FIELDS:
        local, peer = f"{local}:{ports & 0xFFFF}", f"{peer}:{ports >> 16}"
    return {"protocol": name, "local": local, "peer": peer}


# --------------------------------------------------------------------- compiler
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


def _compile(interface: Interface, zone: int, cookie: int, policy: PersonalityPolicy,
             transition: bool, ctx: Context) -> tuple[FlowSpec, ...]:
    T = tables
    egress = {"in_port": interface.port, "eth_src": interface.mac}
    ingress = {"eth_dst": interface.mac}
    nat = Nat() if policy.dns_servers else None   # translate DNS redirected to a server
    rules = () if transition else policy.firewall_rules
    default_action = "deny" if transition else policy.default_action
    out: list[FlowSpec] = []

    def add(table: int, priority: int, match: Mapping[str, MatchValue],
            actions: Iterable[Action] = (), goto: int | None = None,
            meter: int | None = None) -> None:
        out.append(flow(table, priority, match, actions, goto=goto, cookie=cookie, meter=meter))

    meters = {d: _meter_id(interface, d)
              for d, rate in (("egress", policy.egress_kbps), ("ingress", policy.ingress_kbps)) if rate}

    # Hooks into the fabric.
    add(T.CLASSIFY.id, HOOK_CLASSIFY, egress, goto=T.PERSONALITY_EGRESS.id)
    add(T.L2.id, HOOK_L2, ingress, goto=T.PERSONALITY_INGRESS.id)

    # personality_egress: anti-spoofing, then conntrack.
    track_egress = Conntrack(zone=zone, table=T.PERSONALITY_EGRESS_FW.id, nat=nat)
    if not policy.ip_addresses:  # no address list: ARP and IPv4 pass to the tracker as they are
        add(T.PERSONALITY_EGRESS.id, ADDRESS_OK, {**egress, "eth_type": ETH_ARP}, goto=T.ARP.id)
        add(T.PERSONALITY_EGRESS.id, ADDRESS_OK, {**egress, "eth_type": ETH_IPV4},
            [track_egress])
    else:
        for ip in sorted(set(policy.ip_addresses), key=IPv4Address):
            add(T.PERSONALITY_EGRESS.id, ADDRESS_OK,
                {**egress, "eth_type": ETH_ARP, "arp_spa": ip, "arp_sha": interface.mac},
                goto=T.ARP.id)
            add(T.PERSONALITY_EGRESS.id, ADDRESS_OK,
                {**egress, "eth_type": ETH_IPV4, "ipv4_src": ip}, [track_egress])
        add(T.PERSONALITY_EGRESS.id, SPOOFED, {**egress, "eth_type": ETH_ARP})
        add(T.PERSONALITY_EGRESS.id, SPOOFED, {**egress, "eth_type": ETH_IPV4})
    add(T.PERSONALITY_EGRESS.id, CATCH_ALL, egress)

    # personality_ingress: ARP out, IPv4 through conntrack.
    add(T.PERSONALITY_INGRESS.id, INGRESS_TRACK, {**ingress, "eth_type": ETH_IPV4},
        [Conntrack(zone=zone, table=T.PERSONALITY_INGRESS_FW.id, nat=nat)])
    add(T.PERSONALITY_INGRESS.id, INGRESS_ARP, {**ingress, "eth_type": ETH_ARP},
        [Output(interface.port)])
    add(T.PERSONALITY_INGRESS.id, CATCH_ALL, ingress)

    # The two firewall tables: same shape; what they let through is counted next.
    for direction, table, base, count in (
            ("egress", T.PERSONALITY_EGRESS_FW.id, egress, T.PERSONALITY_EGRESS_COUNT.id),
            ("ingress", T.PERSONALITY_INGRESS_FW.id, ingress, T.PERSONALITY_INGRESS_COUNT.id)):
        ip = {**base, "eth_type": ETH_IPV4}
        # Commits store COMMITTED in the direction's own ct_mark field (masked).
        mark, mark_mask = ctmark.commit(direction)
        commit = Conntrack(commit=True, zone=zone, mark=mark, mark_mask=mark_mask)
        add(table, CT_INVALID, {**ip, "ct_state": ct_state("+trk+inv")})
        add(table, CT_ESTABLISHED, {**ip, "ct_state": ct_state("+trk+est")}, goto=count)
        add(table, CT_RELATED, {**ip, "ct_state": ct_state("+trk+rel")}, goto=count)
        # A connection committed here that conntrack still calls new (nothing came
        # back: a one-way UDP stream) passes like an established one, in the
        # transition too.
        add(table, CT_COMMITTED_NEW, {**ip, "ct_state": ct_state("+trk+new"),
                                      "ct_mark": ctmark.committed(direction)}, goto=count)
        out.extend(firewall_flows(policy.applications, table, direction, ip, cookie))
        new = {**ip, "ct_state": ct_state("+trk+new")}
        if direction == "egress" and policy.dns_servers and not transition:
            # The interface's DNS reaches only its servers: to one of them as
            # addressed, anywhere else redirected to the first (replies are
            # translated back by the ct(nat) of personality_ingress).  Both
            # resume in the count table (ct table=): the redirected query so that
            # what follows sees the translated address, and both so that the
            # count table sees them tracked, outside the application policy.
            first = policy.dns_servers[0]
            for proto, port_field in (("udp", "udp_dst"), ("tcp", "tcp_dst")):
                dns = {**new, "ip_proto": IP_PROTOS[proto], port_field: 53}
                for server in policy.dns_servers:
                    add(table, DNS_ALLOWED, {**dns, "ipv4_dst": server},
                        [Conntrack(commit=True, zone=zone, table=count, mark=mark,
                                   mark_mask=mark_mask)])
                add(table, DNS_REDIRECT, dns,
                    [Conntrack(commit=True, zone=zone, table=count, mark=mark,
                               mark_mask=mark_mask, nat=Nat(dst=first, dst_port=53))])
        for i, rule in enumerate(rules):
            if not rule.applies(direction):
                continue
            for fields in _rule_matches(rule):
                if rule.action == "allow":
                    add(table, RULE_TOP - i, {**new, **fields}, [commit], count)
                else:
                    add(table, RULE_TOP - i, {**new, **fields})
        if default_action == "allow":
            add(table, DEFAULT, new, [commit], count)
        else:
            add(table, DEFAULT, new)
        add(table, CATCH_ALL, ip)

        # Counting: learn the connection, then go on (egress) or out (ingress).
        then: tuple[Action, ...] = () if direction == "egress" else (Output(interface.port),)
        goto = T.PERSONALITY_ROUTES.id if direction == "egress" else None
        dscp: tuple[Action, ...] = ((SetField("ip_dscp", policy.dscp),)
                                    if direction == "egress" and policy.dscp is not None else ())
        meter = meters.get(direction)
        counted = {}
        for proto in ("tcp", "udp"):
            counted[proto] = Counted(
                (_learn_connection(interface, zone, direction, proto), *dscp, *then), goto, meter)
            add(count, COUNT_L4, {**ip, "ip_proto": IP_PROTOS[proto]},
                counted[proto].actions, goto, meter)
        add(count, COUNT_IP, ip, [_learn_connection(interface, zone, direction, None),
                                  *dscp, *then], goto, meter)
        # Connections the firewall just admitted to a port of the application policy.
        out.extend(count_flows(policy.applications, count, direction, zone, ip, counted,
                               cookie))

    # personality_routes: the interface's own routes, longest prefix first.
    for route in policy.routes:
        match = {**egress, "eth_type": ETH_IPV4, "eth_dst": ctx.router_mac,
                 "ipv4_dst": str(route.destination)}
        mac = ctx.mac_of(route.next_hop)
        if mac is None:   # next hop not discovered yet: the controller asks for it
            add(T.PERSONALITY_ROUTES.id, ROUTE_BASE + route.destination.prefixlen, match,
                [Output.controller()])
        else:
            add(T.PERSONALITY_ROUTES.id, ROUTE_BASE + route.destination.prefixlen, match,
                [SetField("eth_src", ctx.router_mac), SetField("eth_dst", mac), DecTtl()],
                T.L2.id)

    if policy.vpn is not None:   # remote prefixes through the interface's tunnel port
        out.extend(compile_vpn(interface, policy.vpn, policy.ip_addresses,
                               ctx.tunnel_ofport(interface, policy.vpn), ctx.router_mac, cookie))

    tables.check(out)
    keys = [f.key for f in out]
    if len(set(keys)) != len(keys):  # would silently replace one another on a switch
        raise ValueError(f"personality flows with the same table, priority and match "
                         f"for {interface.id}")
    return tuple(sorted(out, key=lambda f: (f.table, -f.priority, repr(f.match))))


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
