"""The part of a personality its flows enforce, converted from the parsed document.

A personality is parsed once, by its model (`controller.features.personality.document`,
`Personality`); `PersonalityPolicy.of` converts the model's typed fields into
what `controller.features.personality.compile` reads, and checks nothing again.
`PersonalityPolicy.from_body` is the two in one call, for a stored body.

Rules (`FirewallRule`) match the packet that opens a connection: `source` and
`destination` are its IPv4 source and destination (a CIDR; 0.0.0.0/0, the
default, is any), `port` its TCP/UDP destination port (one port, a range
"A-B", or none for any), `protocol` tcp, udp, icmp or any.  An `egress` rule
applies to connections the interface opens, an `ingress` rule to connections
opened toward it, `both` to either.  The first matching rule wins; a new
connection no rule matches takes `default_action`.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from controller.core.documents import ANY_NETWORK
from controller.features.personality import document
from controller.features.personality.applications import ApplicationPolicy
from controller.features.personality.vpn import VpnTunnel
from controller.pipeline import cookies
from controller.pipeline.cookies import Feature
from controller.pipeline.ports import PortRange, port_range

IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_FIELDS = {"tcp": "tcp_dst", "udp": "udp_dst"}


def _network(net: IPv4Network) -> IPv4Network | None:
    return None if net == ANY_NETWORK else net


@dataclass(frozen=True)
class FirewallRule:
    action: str                                  # allow | deny
    protocol: str = "any"                        # tcp | udp | icmp | any
    direction: str = "both"                      # ingress | egress | both
    source: IPv4Network | None = None            # None: any
    destination: IPv4Network | None = None
    ports: PortRange | None = None               # inclusive destination ports; None: any

    @classmethod
    def of(cls, rule: document.FirewallRule) -> "FirewallRule":
        return cls(action=rule.action, protocol=rule.protocol, direction=rule.direction,
                   source=_network(rule.source), destination=_network(rule.destination),
                   ports=port_range(rule.port))

    def applies(self, direction: str) -> bool:
        return self.direction in (direction, "both")


@dataclass(frozen=True)
class Route:
    destination: IPv4Network
    next_hop: str


@dataclass(frozen=True)
class PersonalityPolicy:
    """The part of a personality document the flows enforce (see the module doc)."""
    id: str
    ip_addresses: tuple[str, ...] = ()   # sorted
    firewall_rules: tuple[FirewallRule, ...] = ()
    default_action: str = "deny"
    dns_servers: tuple[str, ...] = ()    # in the document's order: the first takes redirects
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
    def of(cls, id: str, personality: document.Personality, revision: int = 0) -> "PersonalityPolicy":
        """The policy of a parsed personality: its typed fields, converted."""
        qos = personality.qos_settings or document.QosSettings()
        return cls(id=id,
                   ip_addresses=tuple(str(a) for a in sorted(personality.ip_addresses)),
                   firewall_rules=tuple(map(FirewallRule.of, personality.firewall_rules)),
                   default_action=personality.default_action,
                   dns_servers=tuple(map(str, personality.dns_servers)),
                   routes=tuple(Route(r.destination, str(r.next_hop))
                                for r in personality.routing_table),
                   dscp=None if qos.priority is None else qos.priority << 3,
                   egress_kbps=qos.egress_rate_kbps,
                   egress_burst_kbits=8 * (qos.egress_burst_kb or 0),
                   ingress_kbps=qos.ingress_rate_kbps,
                   ingress_burst_kbits=8 * (qos.ingress_burst_kb or 0),
                   applications=ApplicationPolicy.of(personality.application_access_policy),
                   vpn=VpnTunnel.of(personality.vpn_tunnel_config),
                   revision=revision)

    @classmethod
    def from_body(cls, id: str, body: Any, revision: int = 0) -> "PersonalityPolicy":
        """The policy of a personality body; `DocumentInvalid` (a ValueError) if it is not one."""
        return cls.of(id, document.parse_personality(body), revision)

    @property
    def cookie(self) -> int:
        return cookies.make(Feature.PERSONALITY, self.id, self.revision)
