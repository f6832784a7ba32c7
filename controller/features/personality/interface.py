"""The interface a personality binds to, and what is its alone: zones, cookies, meters.

Conntrack zones.  Every interface record holds the first zone of a pair of
its own (`zone`, allocated once by `controller.core.interfaces` from the
interface zones of `controller.core.budgets`, unique across all bridges of
the hub, so of every Open vSwitch).  `interface_zone(interface, epoch)` is
`zone + epoch`: a personality change moves the interface to the other epoch,
so the new personality starts with no connection state.  All bridges of one
Open vSwitch share one connection table: a zone number per interface that
no other interface on any bridge has is what keeps their TCP state apart.

An `Interface` built without a zone (a record from before zones were
allocated, a test) falls back to `2 * port + epoch`, unique on one bridge
only, and only for ports whose pair lies inside the interface zones.
"""
from __future__ import annotations

from dataclasses import dataclass

from controller.core import budgets
from controller.core.topology import dpid_str
from controller.features.personality.policy import PersonalityPolicy
from controller.pipeline import cookies
from controller.pipeline.cookies import Feature
from controller.pipeline.meters import EGRESS, INGRESS, MeterSpec, meter_id_for

ZONES = budgets.INTERFACE_ZONES
MAX_PORT = (ZONES.last - 1) // 2   # the last port the zone-less fallback can serve


@dataclass(frozen=True)
class Interface:
    """A host-facing port and the MAC behind it: what a personality binds to.

    `zone`: the first (even) zone of the interface's pair, from its record;
    None for the single-bridge fallback (see the module doc).
    """
    dpid: int
    port: int
    mac: str
    zone: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", self.mac.lower())
        if self.zone is not None and (self.zone % 2 or self.zone not in ZONES
                                      or self.zone + 1 not in ZONES):
            raise ValueError(f"interface {self.id}: zone {self.zone} is not the first of a "
                             f"pair in the interface zones {ZONES}")

    @property
    def id(self) -> str:
        return f"{dpid_str(self.dpid)}:{self.port}"


def interface_zone(interface: Interface, epoch: int = 0) -> int:
    """The conntrack zone of an interface in `epoch` (0 or 1): its pair's first + epoch.

    Never 0 (left to everything else).  A personality change moves the
    interface to the other epoch, so the new personality starts with no
    connection state: what the old one admitted and is still open after the
    drain is judged afresh (and mid-stream TCP is dropped).
    """
    if interface.zone is not None:
        return interface.zone + (epoch & 1)
    if not 1 <= interface.port <= MAX_PORT:
        raise ValueError(f"interface {interface.id}: without an allocated zone, personalities "
                         f"need a port in 1..{MAX_PORT}")
    return 2 * interface.port + (epoch & 1)


def transition_cookie(interface: Interface) -> int:
    return cookies.make(Feature.PERSONALITY, f"transition:{interface.id}")


def connection_cookie(interface: Interface, zone: int) -> int:
    """Cookie of the learned flows recording the interface's live connections in `zone`."""
    return cookies.make(Feature.PERSONALITY, f"connections:{interface.id}:{zone}")


def probe_cookie(name: str) -> int:
    return cookies.make(Feature.PERSONALITY, f"probe:{name}")


def meter_id(interface: Interface, direction: str) -> int:
    """The meter limiting what the interface sends ("egress") or receives ("ingress").

    What the interface sends enters the switch at its port, and the reverse.
    """
    return meter_id_for(interface.port, INGRESS if direction == "egress" else EGRESS)


def personality_meters(interface: Interface, policy: PersonalityPolicy) -> tuple[MeterSpec, ...]:
    """The drop meters limiting the interface's rates (one per limited direction)."""
    out = []
    for direction, rate, burst in (("egress", policy.egress_kbps, policy.egress_burst_kbits),
                                   ("ingress", policy.ingress_kbps, policy.ingress_burst_kbits)):
        if rate:
            out.append(MeterSpec(meter_id(interface, direction), rate, burst))
    return tuple(out)
