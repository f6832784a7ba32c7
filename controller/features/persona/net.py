"""What the data plane needs of a persona, its cookies and its meters.

`PersonaNet` is one persona as `controller.features.persona.compile` sees
it (the runtime builds it from the stored record); `GatewayInput` is every
persona plus the fabric facts the gateway's flows depend on.

Resources (`controller.core.budgets.PERSONA`): the persona of index i has
conntrack zone `PersonaNet.zone` (the i-th of the persona zones) and, with
a bandwidth, the meters `meter_ids(p)` (outbound, inbound) on the gateway;
its flows carry the PERSONA cookie byte and its connections the REAL_MARK
bit of ct_mark.  The store (`controller.features.persona.store`) hands out
indexes 1..MAX_INDEX, one per live persona.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable, NamedTuple

from controller.core import budgets
from controller.core.topology import Host
from controller.pipeline import cookies
from controller.pipeline.cookies import Feature
from controller.pipeline.meters import MeterSpec
from controller.pipeline.ports import PortRange

IP_PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "sctp": 132}
ZONES = budgets.PERSONA.zones[0]     # persona i: ZONES.first + i - 1
METERS = budgets.PERSONA.meters[0]   # persona i: METERS.first + 2 * i (+1 inbound)
MAX_INDEX = len(ZONES)
REG_PERSONA = "reg6"        # which persona a packet belongs to, across recirculation
REG_REAL = "reg4"           # 1: an inbound packet addressed to a real (unmapped) address
REAL_MARK = budgets.PERSONA.ct_mark[0].mask  # ct_mark bit 6: opened to the real range
if METERS.first + 2 * MAX_INDEX + 1 not in METERS:
    raise budgets.BudgetError(f"persona meters {METERS} cannot hold two per index 1..{MAX_INDEX}")

# usage_cookie kinds
OUT, IN, CONNECTION, DENIED = "out", "in", "conn", "denied"


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
    ports: PortRange | None
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
        return ZONES.first + self.index - 1

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


def usage_mask() -> cookies.CookieMask:
    """(cookie, mask) selecting every persona flow whose counters are read."""
    cookie, mask = cookies.feature_mask(Feature.PERSONA)
    return cookies.CookieMask(cookie | 1, mask | 0xFFFF)


GATEWAY_COOKIE = cookies.make(Feature.PERSONA, "#gateway")


class MeterPair(NamedTuple):
    outbound: int
    inbound: int


def meter_ids(persona: PersonaNet) -> MeterPair:
    """(outbound, inbound) meter ids of a persona on the gateway."""
    base = METERS.first + 2 * persona.index
    return MeterPair(base, base + 1)


def persona_meters(persona: PersonaNet) -> tuple[MeterSpec, ...]:
    if persona.bandwidth_kbps is None:
        return ()
    burst = max(persona.bandwidth_kbps // 5, 64)  # 200 ms worth of traffic
    return tuple(MeterSpec(m, persona.bandwidth_kbps, burst) for m in meter_ids(persona))


def compile_meters(inp: GatewayInput) -> tuple[MeterSpec, ...]:
    """The gateway's meters: one each way per persona with a bandwidth limit."""
    return tuple(m for p in inp.personas for m in persona_meters(p))


def protocol_numbers(names: Iterable[str]) -> frozenset[int]:
    return frozenset(IP_PROTOCOLS[n] for n in names)
