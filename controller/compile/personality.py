"""An interface's personality: which addresses it may use, and a stateful firewall.

Pure: `compile_personality(interface, policy)` returns the flows that enforce a
personality on the interface's own switch; `compile_transition(interface,
zone)` returns the flows of the in-between state while a personality changes
(new connections blocked both ways, established ones kept).  Both only add to
the base fabric (`controller.compile.fabric`) on that switch:

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
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Iterable, Mapping

from controller.pipeline import cookies, tables
from controller.pipeline.actions import Action, Conntrack, Output, ct_state
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow
from controller.topology import dpid_str

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst"}
PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress", "both")
ACTIONS = ("allow", "deny")
MAX_RULES = 10000

# Priorities.  The hooks sit just above the fabric's per-host flows they override.
HOOK_CLASSIFY = 210   # fabric: 200 for (in_port, eth_src) of a known host
HOOK_L2 = 110         # fabric: 100 for eth_dst of a host
ADDRESS_OK = 300      # personality_egress: ARP/IPv4 from the personality's addresses
SPOOFED = 200         # personality_egress: any other ARP/IPv4 from the interface
INGRESS_TRACK = 300   # personality_ingress: IPv4 to the interface -> conntrack
INGRESS_ARP = 200     # personality_ingress: ARP to the interface -> out
CT_INVALID = 65000    # firewall tables: +inv dropped
CT_ESTABLISHED = 64001
CT_RELATED = 64000
RULE_TOP = 50000      # rule i (in list order) gets RULE_TOP - i: first match wins
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
class PersonalityPolicy:
    """The part of a personality document this compiler enforces.

    Other fields of the document (for other features) are ignored here.
    """
    id: str
    ip_addresses: tuple[str, ...] = ()
    firewall_rules: tuple[FirewallRule, ...] = ()
    default_action: str = "deny"
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
        return cls(id=id,
                   ip_addresses=tuple(str(a) for a in sorted(ips)),
                   firewall_rules=tuple(FirewallRule.from_body(r, f"firewall_rules[{i}]")
                                        for i, r in enumerate(rules)),
                   default_action=_choice(body, "default_action", ACTIONS, "personality", "deny"),
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


def interface_zone(interface: Interface) -> int:
    """A conntrack zone for the interface: 1..65535, stable, derived from (dpid, port).

    Zone 0 is left to everything else.  Distinct interfaces can collide (16
    bits); a caller that knows all interfaces of a datapath can pass its own
    zones to `compile_personality` instead.
    """
    return 1 + zlib.crc32(interface.id.encode()) % 0xFFFF


def transition_cookie(interface: Interface) -> int:
    return cookies.make(Feature.PERSONALITY, f"transition:{interface.id}")


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
def _compile(interface: Interface, zone: int, cookie: int, ip_addresses: Iterable[str] | None,
             rules: tuple[FirewallRule, ...], default_action: str) -> tuple[FlowSpec, ...]:
    T = tables
    egress = {"in_port": interface.port, "eth_src": interface.mac}
    ingress = {"eth_dst": interface.mac}
    to_port: tuple[Action, ...] = (Output(interface.port),)
    commit = Conntrack(commit=True, zone=zone)
    out: list[FlowSpec] = []

    def add(table: int, priority: int, match: Mapping[str, MatchValue],
            actions: Iterable[Action] = (), goto: int | None = None) -> None:
        out.append(flow(table, priority, match, actions, goto=goto, cookie=cookie))

    # Hooks into the fabric.
    add(T.CLASSIFY.id, HOOK_CLASSIFY, egress, goto=T.PERSONALITY_EGRESS.id)
    add(T.L2.id, HOOK_L2, ingress, goto=T.PERSONALITY_INGRESS.id)

    # personality_egress: anti-spoofing, then conntrack.
    track_egress = Conntrack(zone=zone, table=T.PERSONALITY_EGRESS_FW.id)
    if ip_addresses is None:  # no address list: ARP and IPv4 pass to the tracker as they are
        add(T.PERSONALITY_EGRESS.id, ADDRESS_OK, {**egress, "eth_type": ETH_ARP}, goto=T.ARP.id)
        add(T.PERSONALITY_EGRESS.id, ADDRESS_OK, {**egress, "eth_type": ETH_IPV4},
            [track_egress])
    else:
        for ip in sorted(set(ip_addresses), key=IPv4Address):
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
        [Conntrack(zone=zone, table=T.PERSONALITY_INGRESS_FW.id)])
    add(T.PERSONALITY_INGRESS.id, INGRESS_ARP, {**ingress, "eth_type": ETH_ARP}, to_port)
    add(T.PERSONALITY_INGRESS.id, CATCH_ALL, ingress)

    # The two firewall tables: same shape, different way out.
    for direction, table, base, allow_actions, allow_goto in (
            ("egress", T.PERSONALITY_EGRESS_FW.id, egress, (), T.ARP.id),
            ("ingress", T.PERSONALITY_INGRESS_FW.id, ingress, to_port, None)):
        ip = {**base, "eth_type": ETH_IPV4}
        add(table, CT_INVALID, {**ip, "ct_state": ct_state("+trk+inv")})
        add(table, CT_ESTABLISHED, {**ip, "ct_state": ct_state("+trk+est")},
            allow_actions, allow_goto)
        add(table, CT_RELATED, {**ip, "ct_state": ct_state("+trk+rel")},
            allow_actions, allow_goto)
        new = {**ip, "ct_state": ct_state("+trk+new")}
        for i, rule in enumerate(rules):
            if not rule.applies(direction):
                continue
            for fields in _rule_matches(rule):
                if rule.action == "allow":
                    add(table, RULE_TOP - i, {**new, **fields}, (commit, *allow_actions),
                        allow_goto)
                else:
                    add(table, RULE_TOP - i, {**new, **fields})
        if default_action == "allow":
            add(table, DEFAULT, new, (commit, *allow_actions), allow_goto)
        else:
            add(table, DEFAULT, new)
        add(table, CATCH_ALL, ip)

    tables.check(out)
    keys = [f.key for f in out]
    if len(set(keys)) != len(keys):  # would silently replace one another on a switch
        raise ValueError(f"personality flows with the same table, priority and match "
                         f"for {interface.id}")
    return tuple(sorted(out, key=lambda f: (f.table, -f.priority, repr(f.match))))


def compile_personality(interface: Interface, policy: PersonalityPolicy,
                        zone: int | None = None) -> tuple[FlowSpec, ...]:
    """The flows enforcing `policy` on `interface`, all for `interface.dpid`.

    Cookies: Feature.PERSONALITY, document = the personality id, version = its
    revision.  `zone` defaults to `interface_zone(interface)`.
    """
    if len(policy.firewall_rules) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} firewall rules")
    return _compile(interface, interface_zone(interface) if zone is None else zone,
                    policy.cookie, policy.ip_addresses, policy.firewall_rules,
                    policy.default_action)


def compile_transition(interface: Interface, zone: int,
                       ip_addresses: Iterable[str] | None = None) -> tuple[FlowSpec, ...]:
    """The flows of an interface whose personality is changing.

    Same tables, hooks and conntrack zone as `compile_personality` (use the
    zone the live personality used, so its connections stay `+est`), but no
    rules: new connections (`+new`) are dropped in both directions while
    established and related packets pass.  With `ip_addresses`, anti-spoofing
    stays on; without, ARP and IPv4 from the interface are not checked (new
    IPv4 connections are dropped anyway).  Cookie: Feature.PERSONALITY,
    document "transition:<interface id>", version 0.
    """
    return _compile(interface, zone, transition_cookie(interface),
                    None if ip_addresses is None else tuple(ip_addresses), (), "deny")
