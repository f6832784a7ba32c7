"""Learning in flows, pure: `observe_flows(member, index, cookie)` records who opened what.

While a learning session runs, each member of its category is observed on
its own switch.  Its packets are not changed, not delayed by a round trip
and never sent to the controller: each hook replaces the flow it overrides
(the fabric's, or a personality's) with the same continuation plus a
`clone`, and only the copy goes through conntrack, in the member's own zone
(`zone_of(index)`), both ways, so a peer's replies are `+est` and only the
side that opened a connection sees `+new`.  The opening copy learns (or
refreshes) the connection's record and is committed as recorded; every other
copy is dropped.

    classify (0), from the member: its port + MAC, IPv4 [from each of its addresses]
      250  TCP with SYN     ─► clone(reg2 := key(port, egress), ct(zone Z) ─► policy_from (20))
      249  other TCP        ─► (no copy: established TCP never meets conntrack)
      248  other IPv4       ─► clone(as at 250)
           and the packet itself ─► goto egress_goto, as before (arp, or personality_egress)
    l2 (50), to the member: its MAC, IPv4 [to each of its addresses]
      160 / 159 / 158       as above, key(port, ingress), ct(zone Z) ─► policy_to (100)
           and the packet itself ─► out its port (or goto ingress_goto: personality_ingress)

    policy_from (20) / policy_to (100), the copy (reg2 = key, ct_zone = Z):
      300  +trk+new, not recorded, TCP SYN without ACK / UDP
             ─► learn(record: key, proto, server port = tcp_dst|udp_dst, peer)
                ct(commit, zone Z, ct_mark |= RECORDED) ─► policy_records (109)
      200  any other TCP ─► dropped (a SYN+ACK or mid-stream packet opens nothing)
      100  +trk+new, not recorded, any other IP protocol
             ─► learn(record: key, proto, peer), commit as at 300 ─► policy_records
      miss  replies, established and recorded packets ─► dropped
    policy_records (109): the learned records, no timeout; the opening copy hits
      its own record (count + 1) and is dropped there.

Why a clone and not the packet itself: conntrack on the packet would need a
recirculation whose table (20 or 100) lies beyond where the packet goes on
(arp 10, personality 2/60), and OpenFlow only goes forward; it would also
overwrite the ct fields a personality's firewall relies on.  The clone
leaves the packet as it was; what it costs is one conntrack lookup and one
recirculation of the copy, for IPv4 that is not TCP, and for TCP packets
with SYN only (one or two a connection), since the opener of a TCP connection
is known from its first packet and conntrack need not see the rest.

Counting.  A record's packet count is its connections.  OVS does not show a
flow learned during a translation to the rest of that translation (the
classifier's version is fixed when it starts), so a `goto` to the records
after `learn` would miss the first connection's record.  The commit's
recirculation (`ct(commit, table=policy_records)`) starts a new translation,
which sees it: the first connection counts as well (checked on a real bridge,
tests/trace/test_policy_observe_trace.py).  Later connections of the same key
go through the datapath's cached flow (no upcall); OVS credits their packets
to the record and refreshes the learn when it revalidates, about a second
later.  `RECORDED` in ct_mark keeps a connection counted once: a
retransmitted SYN, or a one-way UDP stream whose second datagram conntrack
calls `+new` again (without it, each of those counted twice on a real bridge).

A limit of the userspace datapath: it runs conntrack over a receive batch at
once, so datagrams of one new UDP (or other connectionless) flow that arrive
together all look up the connection before the first is committed, and each
counts (measured: 20 flows of 2 back-to-back datagrams counted 34, of 4
counted 65; one datagram each, or spaced ones, counted exactly).  Only the
count is inflated, never the key; TCP opens with one SYN and counts exactly.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from controller.core import budgets
from controller.features.policy.records import (ETH_IPV4, KEY, PROTOCOLS, key_of,
                                                peer_field)
from controller.features.policy.rules import PORTED, Direction
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Clone, Conntrack, Learn, LearnMatch, Output, SetField,
                                         ct_state)
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, flow

ZONES = budgets.POLICY.zones[0]
RECORDED = 1 << budgets.POLICY.ct_mark[0].last      # ct_mark bit 23, in observation zones
TCP_SYN, TCP_ACK = 0x02, 0x10
OPENING, NOT_OPENING, OTHER = 300, 200, 100          # policy_from / policy_to
RECORD = 100                                         # the learned records


class Member(NamedTuple):
    """An observed interface: where it is and where its packets go on after a hook."""
    interface_id: str
    dpid: int
    port: int
    mac: str
    ips: tuple[str, ...]          # its addresses (none known: every IPv4 packet of its MAC)
    egress_goto: int              # what classify did with its packets: arp, personality_egress
    ingress_goto: int | None      # what l2 did: None = out its port; personality_ingress


class _Side(NamedTuple):
    """One hook: the shared table it overrides, its priorities, where the copy resumes."""
    direction: Direction
    table: int
    syn: int
    tcp: int
    ip: int
    resume: int
    own: str                      # the member's address field in its packets


EGRESS = _Side("egress", tables.CLASSIFY.id, 250, 249, 248, tables.POLICY_FROM.id, "ipv4_src")
INGRESS = _Side("ingress", tables.L2.id, 160, 159, 158, tables.POLICY_TO.id, "ipv4_dst")


def zone_of(index: int) -> int:
    """The member's conntrack zone: one per member, both directions."""
    if not 0 <= index < len(ZONES):
        raise ValueError(f"member index {index} is outside 0..{len(ZONES) - 1}")
    return ZONES.first + index


def record_cookie(category: str) -> int:
    """The cookie of a category's observation flows and of its members' learned records."""
    return cookies.make(Feature.POLICY, f"records:{category}")


def _base(m: Member, side: _Side) -> list[dict[str, Any]]:
    own = {"in_port": m.port, "eth_src": m.mac} if side is EGRESS else {"eth_dst": m.mac}
    ips: tuple[str | None, ...] = m.ips or (None,)
    return [{**own, "eth_type": ETH_IPV4, **({side.own: ip} if ip else {})} for ip in ips]


def _hooks(m: Member, zone: int, side: _Side, cookie: int) -> list[FlowSpec]:
    """The flows overriding the member's, with the same continuation (and a copy)."""
    copy = Clone((SetField(KEY, key_of(m.port, side.direction)),
                  Conntrack(zone=zone, table=side.resume)))
    if side is EGRESS:
        then, goto = (), m.egress_goto
    elif m.ingress_goto is None:
        then, goto = (Output(m.port),), None
    else:
        then, goto = (), m.ingress_goto
    out = []
    for base in _base(m, side):
        tcp = {**base, "ip_proto": PROTOCOLS["tcp"]}
        out += [flow(side.table, side.syn, {**tcp, "tcp_flags": (TCP_SYN, TCP_SYN)},
                     [copy, *then], goto, cookie),
                flow(side.table, side.tcp, tcp, then, goto, cookie),
                flow(side.table, side.ip, base, [copy, *then], goto, cookie)]
    return out


def learn_record(key: int, direction: Direction, protocol: str | None, cookie: int,
                 table: int = tables.POLICY_RECORDS.id) -> Learn:
    """The record of the packet's connection in `table` (`records` has its layout):
    policy_records here, policy_refused for enforcement (`enforce`)."""
    peer = peer_field(direction)
    specs = [LearnMatch(KEY, 32, value=key), LearnMatch("eth_type", 16, value=ETH_IPV4),
             LearnMatch("ip_proto", 8, src="ip_proto") if protocol is None
             else LearnMatch("ip_proto", 8, value=PROTOCOLS[protocol]),
             LearnMatch(peer, 32, src=peer)]
    if protocol in PORTED:
        specs.append(LearnMatch(f"{protocol}_dst", 16, src=f"{protocol}_dst"))
    return Learn(table=table, cookie=cookie, priority=RECORD,
                 specs=tuple(specs))


def _decide(m: Member, zone: int, side: _Side, cookie: int) -> list[FlowSpec]:
    """What the copy does after conntrack: record a new connection once, drop the rest."""
    key = key_of(m.port, side.direction)
    mine = {"eth_type": ETH_IPV4, KEY: key}
    new = {**mine, "ct_state": ct_state("+trk+new"), "ct_mark": (0, RECORDED)}
    commit = Conntrack(commit=True, zone=zone, table=tables.POLICY_RECORDS.id,
                       mark=RECORDED, mark_mask=RECORDED)
    opening = {"tcp": {"tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)}, "udp": {}}
    out = [flow(side.resume, OPENING, {**new, "ip_proto": PROTOCOLS[p], **extra},
                [learn_record(key, side.direction, p, cookie), commit], cookie=cookie)
           for p, extra in opening.items()]
    out += [flow(side.resume, NOT_OPENING, {**mine, "ip_proto": PROTOCOLS["tcp"]},
                 cookie=cookie),
            flow(side.resume, OTHER, new, [learn_record(key, side.direction, None, cookie), commit],
                 cookie=cookie)]
    return out


def observe_flows(member: Member, index: int, cookie: int) -> list[FlowSpec]:
    """The member's observation flows, for its switch: hooks both ways and their copies'
    decisions.  `index` gives its zone (`zone_of`); `cookie` is carried by these flows
    and by the records they learn (`record_cookie(category)`)."""
    zone = zone_of(index)
    out = []
    for side in (EGRESS, INGRESS):
        out += _hooks(member, zone, side, cookie) + _decide(member, zone, side, cookie)
    tables.check(out)
    return out
