"""The part of a personality document its flows enforce, read into typed values.

`PersonalityPolicy.from_body` reads what `controller.features.personality.compile`
needs of a stored personality (validation of the whole document is
`controller.features.personality.document`'s job; this checks again cheaply):

Rules (`FirewallRule`) match the packet that opens a connection: `source` and
`destination` are its IPv4 source and destination (an address or a CIDR; none
or "any" for any), `port` its TCP/UDP destination port (one port, a range
"A-B", or none for any), `protocol` tcp, udp, icmp or any.  An `egress` rule
applies to connections the interface opens, an `ingress` rule to connections
opened toward it, `both` to either.  The first matching rule wins; a new
connection no rule matches takes `default_action`.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Mapping

from controller.features.personality.applications import ApplicationPolicy
from controller.features.personality.vpn import VpnTunnel
from controller.pipeline import cookies
from controller.pipeline.cookies import Feature
from controller.pipeline.ports import PortRange

IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst"}
PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress", "both")
ACTIONS = ("allow", "deny")
MAX_RULES = 10000

_ANY = {None, "", "any", "*", "0.0.0.0/0"}


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


def _port(value: Any, what: str) -> PortRange | None:
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
    return PortRange(lo, hi)


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
    ports: PortRange | None = None               # inclusive destination ports; None: any

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


