"""From a stored persona record to what the compiler needs (`PersonaNet`).

The record is read by its one parser (`PersonaRecord`, whose document is the
`Persona` model); this module only converts: policies to protocol numbers and
port ranges, attachments to members, the teardown stage to flags.
"""
from __future__ import annotations

from ipaddress import IPv4Network

from controller.core.documents import ANY_NETWORK
from controller.features.persona.net import (IP_PROTOCOLS, Member, PersonaNet, Policy,
                                             dscp_for_latency, protocol_numbers)
from controller.features.persona.record import Attachment, PersonaRecord
from controller.pipeline.ports import port_range


def persona_net(id: str, body: dict, stage: str = "active", owns_real: bool = False) -> PersonaNet:
    """The compiler's view of a stored persona body (see docs/personas.md).

    `stage` is the teardown stage ("active" when live): closing refuses new
    connections, unrouted also withdraws routes and edge hooks.
    """
    record = PersonaRecord.from_body(id, body)
    persona = record.persona
    qos = persona.qos
    return PersonaNet(
        id=id, index=record.index, ip_range=persona.ip_range, gateway_ip=record.gateway,
        protocols=protocol_numbers(persona.protocols),
        policies=tuple(Policy(IP_PROTOCOLS[p.protocol], port_range(p.port), p.action,
                              _network(p.source), _network(p.destination))
                       for p in persona.security_policies),
        nat_range=record.nat_range,
        bandwidth_kbps=qos.bandwidth_kbps if qos else None,
        dscp=dscp_for_latency(qos.latency_ms if qos else None),
        members=tuple(m for m in map(_member, record.attachments) if m is not None),
        owns_real=owns_real and record.nat_range is not None, closing=stage != "active",
        routed=stage in ("active", "closing"))


def _network(net: IPv4Network) -> IPv4Network | None:
    return None if net == ANY_NETWORK else net


def _member(attachment: Attachment) -> Member | None:
    dpid, _, port = attachment.interface_id.rpartition(":")
    if attachment.mac is None:
        return None
    return Member(attachment.interface_id, int(dpid, 16), int(port), attachment.mac.lower(),
                  attachment.ip)


def real_range_owners(bodies: dict[str, dict]) -> set[str]:
    """Of live personas whose real ranges overlap, the one that expires first (then by id)."""
    if not any(b.get("nat") for b in bodies.values()):
        return set()  # no overlap at all (the common case): nothing to parse
    nets = {id: IPv4Network(b["document"]["ip_range"]) for id, b in bodies.items()}
    owners = set()
    for id, net in nets.items():
        if not bodies[id].get("nat"):
            continue  # not in an overlap: its real range is its hub range anyway
        rivals = [(bodies[o]["expires_at"], o) for o, other in nets.items() if other.overlaps(net)]
        if min(rivals)[1] == id:
            owners.add(id)
    return owners
