"""Connection records as the switch keeps them, and read back as `rules.Seen`.

A record is a flow learned into policy_records (`observe.observe_flows` writes
the learn actions), one per (member, direction, protocol, server port, peer).
Its match is its key; its packet count is how many connections of that shape
were opened (each new connection's opening packet is sent through the table
and hits it, the very first one included: see `observe`).  Pure: flows in,
`Seen` out; the runtime reads them with flow stats and keeps the times.

The key, as the learned flow matches it:

    reg2        bits 0..15 the member's OpenFlow port, bit 16 set for ingress
                (the peer opened the connection), clear for egress (the member did)
    ip_proto    6 tcp, 17 udp, 1 icmp, or any other IP protocol
    tcp_dst / udp_dst   the server's port: the opening packet's destination port
                (tcp and udp only; a client's ephemeral port is never recorded)
    ipv4_dst    the peer, for egress (the member sent the opening packet to it)
    ipv4_src    the peer, for ingress (it sent the opening packet to the member)

reg2 is the feature's register (`budgets.POLICY`): only the copies of an
observed member's packets carry it, set by the hook that made the copy.  The
port names the member on its switch, so records are decoded switch by switch.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from controller.core.channel import FlowCounters
from controller.features.policy.rules import PORTED, Direction, Seen
from controller.pipeline import tables

TABLE = tables.POLICY_RECORDS.id
KEY = "reg2"
PORT_MASK = 0xFFFF
INGRESS = 1 << 16
ETH_IPV4 = 0x0800
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
_NAMES = {number: name for name, number in PROTOCOLS.items()}
_PEER = {"egress": "ipv4_dst", "ingress": "ipv4_src"}


def key_of(port: int, direction: Direction) -> int:
    """The reg2 value of a member's records of one direction."""
    if not 1 <= port <= 0xFEFF:
        raise ValueError(f"port {port} is not a switch port an observed member can have")
    return port | (INGRESS if direction == "ingress" else 0)


def peer_field(direction: Direction) -> str:
    """The match field holding the peer's address in a record of `direction`."""
    return _PEER[direction]


def protocol_name(number: int) -> str:
    return _NAMES.get(number, str(number))


def seen_of(member_by_key: Mapping[int, str], flows: Iterable[FlowCounters],
            now: float, table: int = TABLE) -> list[Seen]:
    """The records among `flows` (one switch's), as `Seen`, sorted.

    `table` is the table of learned records read: policy_records (observation), or
    policy_refused (the connections enforcement refused, `enforce.decode_refused`).

    `member_by_key` maps a member's port (on the switch read) to its
    interface id; a record of a port not in it, and any flow that is not a
    record (another table, another shape), is left out.  `connections` is the
    record's packet count, at least 1 (a record exists because a connection
    opened; the count may lag the switch's datapath by a revalidation, about
    a second).  first_seen and last_seen are `now`: `FlowCounters` carries no
    flow age, and the runtime keeps the first time it saw a record.
    """
    out = []
    for counted in flows:
        f = counted.flow
        if f.table != table:
            continue
        match = dict(f.match)
        key = match.get(KEY)
        if not isinstance(key, int) or match.get("eth_type") != ETH_IPV4 \
                or not isinstance(match.get("ip_proto"), int):
            continue
        member = member_by_key.get(key & PORT_MASK)
        direction: Direction = "ingress" if key & INGRESS else "egress"
        peer = match.get(peer_field(direction))
        if member is None or not isinstance(peer, str) or key & ~(PORT_MASK | INGRESS):
            continue
        protocol = protocol_name(match["ip_proto"])
        port = match.get(f"{protocol}_dst") if protocol in PORTED else None
        if protocol in PORTED and not isinstance(port, int):
            continue
        out.append(Seen(member, direction, protocol, port, peer,
                        connections=max(counted.packets, 1), first_seen=now, last_seen=now))
    return sorted(out)
