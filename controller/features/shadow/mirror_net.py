"""What the mirror compiler (`controller.features.shadow.mirror`) is given, and the
numbers its flows share with whoever reads them back: the conntrack zone of an
appliance, the ct_mark layout of a decided connection, the hash register, the
cookies (which flow stats count what), the sampled ranges.

ct_mark bits 8..15 (the shadow's budget):

    bit  8      SAMPLED   the connection is copied to an instance
    bits 9..12  ordinal   which instance (`InstanceNet.ordinal`)
    bit  13     DECIDED   the connection's first packet was decided (sampled or not)

reg0: bits 0..9 the sampling hash (0..999), bits 16..19 the instance bucket.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Mapping, NamedTuple

from controller.core import budgets
from controller.pipeline import cookies, tables

ETH_ARP, ETH_IPV4 = 0x0806, 0x0800
PROTOCOLS = {"tcp": 6, "udp": 17}
TCP_SYN, TCP_ACK = 0x002, 0x010

ZONES = budgets.SHADOW.zones[0]                  # zone of appliance index i: first + i
MARK = budgets.SHADOW.ct_mark[0]                 # ct_mark bits 8..15:
SAMPLED = 1 << MARK.first                        #   bit 8      sampled
ORDINAL_SHIFT, MAX_INSTANCES = MARK.first + 1, 16
ORDINAL_MASK = (MAX_INSTANCES - 1) << ORDINAL_SHIFT   # bits 9..12 the instance's ordinal
DECIDED = 1 << (ORDINAL_SHIFT + 4)               #   bit 13     the decision is made
HASH_REGISTER = f"reg{budgets.SHADOW.registers[0].reg}"
SAMPLE_LINKS, SAMPLE_BITS = 1000, 10             # reg0[0..9]: 0..999, 0.1% per value
BUCKET_OFS, BUCKET_BITS = 16, 4                  # reg0[16..19]: the instance bucket
BUCKET_MASK = ((1 << BUCKET_BITS) - 1) << BUCKET_OFS
SAMPLE_BASIS, BUCKET_BASIS = 0, 1


class ServicePort(NamedTuple):
    protocol: str                                # "tcp" | "udp"
    port: int


@dataclass(frozen=True)
class Endpoint:
    """A production interface, and where its packets go when no appliance is mirrored:
    `egress_goto` is the table classify sends what it sends to (the fabric's arp, or
    personality_egress), `ingress_goto` the one l2 sends what it receives to (None: out
    its port, as the fabric; personality_ingress with a personality)."""
    dpid: int
    port: int
    mac: str
    egress_goto: int = tables.ARP.id
    ingress_goto: int | None = None


@dataclass(frozen=True)
class InstanceNet:
    """A shadow instance: a slot's interface.  Every instance listed is guarded (nothing it
    sends leaves); only a `ready` one receives copies.  `ordinal` (0..15) is what the mark
    of its connections holds: stable for the instance's life, unique in its appliance."""
    slot_id: str
    dpid: int
    port: int
    mac: str
    ordinal: int
    gateway_ip: str | None = None    # where its agent's datagrams go
    ready: bool = True


@dataclass(frozen=True)
class Block:
    """Remediation: everything from `source_ip` toward the production interfaces dropped."""
    source_ip: str
    cookie: int


@dataclass(frozen=True)
class ApplianceNet:
    id: str
    index: int                                   # its zone: ZONES.first + index
    production: tuple[Endpoint, ...]
    service: tuple[ServicePort, ...] = ()        # () : all of its IPv4
    permille: int = 0                            # 0..1000
    instances: tuple[InstanceNet, ...] = ()
    snaplen: int | None = None                   # copies cut to this many bytes
    held_sources: tuple[str, ...] = ()           # their new connections: sampled, all
    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(ZONES):
            raise ValueError(f"appliance index {self.index} is outside 0..{len(ZONES) - 1}")
        if not 0 <= self.permille <= SAMPLE_LINKS:
            raise ValueError(f"permille {self.permille} is outside 0..{SAMPLE_LINKS}")
        ordinals = [i.ordinal for i in self.instances]
        if len(set(ordinals)) != len(ordinals) or not all(0 <= o < MAX_INSTANCES
                                                          for o in ordinals):
            raise ValueError(f"instance ordinals {ordinals} must be unique, in "
                             f"0..{MAX_INSTANCES - 1}")
        for s in self.service:
            if s.protocol not in PROTOCOLS or not 1 <= s.port <= 0xFFFF:
                raise ValueError(f"service {s} is not (tcp|udp, 1..65535)")
        for ip in (*self.held_sources, *(b.source_ip for b in self.blocks)):
            IPv4Address(ip)   # a host address (a network would need a masked match)

    @property
    def zone(self) -> int:
        return ZONES.first + self.index

    @property
    def receivers(self) -> tuple[InstanceNet, ...]:
        """The ready instances by ordinal: hash bucket k goes to the k-th."""
        return tuple(sorted((i for i in self.instances if i.ready), key=lambda i: i.ordinal))


@dataclass(frozen=True)
class MirrorInput:
    switches: frozenset[int]
    router_mac: str
    hops: Mapping[int, Mapping[int, int]]        # FabricView.hops: [from dpid][to dpid] -> port
    appliances: tuple[ApplianceNet, ...]
    agent_port: int                              # the agents' UDP port at the gateway


# -- cookies, marks, ranges ------------------------------------------------------------

def appliance_cookie(appliance_id: str) -> int:
    """Hooks, hashing and the decisions not to sample."""
    return cookies.make(cookies.Feature.SHADOW, f"appliance:{appliance_id}")


def instance_cookie(appliance_id: str, slot_id: str) -> int:
    """What is copied to one instance: its sampling decisions (in the decide tables: one
    packet per connection) and its copies (aggregate stats give packets and bytes)."""
    return cookies.make(cookies.Feature.SHADOW, f"instance:{appliance_id}:{slot_id}")


def guard_cookie(slot_id: str) -> int:
    """The guard of a slot's port: its drop counts what the shadow tried to send."""
    return cookies.make(cookies.Feature.SHADOW, f"guard:{slot_id}")


def sampled_mark(ordinal: int) -> int:
    """The ct_mark (within MARK) of a connection sampled for the instance `ordinal`."""
    return DECIDED | SAMPLED | ordinal << ORDINAL_SHIFT


def below(limit: int, bits: int = SAMPLE_BITS) -> tuple[tuple[int, int], ...]:
    """[0, limit) as prefix-masked (value, mask) pairs over `bits` bits, largest first: one
    per set bit of `limit`, so [0, a) is covered by a subset of the values of [0, b) for
    any a <= b (the sets are nested, not the pairs)."""
    if not 0 <= limit <= 1 << bits:
        raise ValueError(f"{limit} is outside 0..{1 << bits}")
    out, start, full = [], 0, (1 << bits) - 1
    for b in reversed(range(bits + 1)):
        if limit & (1 << b):
            out.append((start, full & ~((1 << b) - 1)))
            start += 1 << b
    return tuple(out)
