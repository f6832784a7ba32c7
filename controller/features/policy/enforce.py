"""Enforcement in flows, pure: `enforce_flows(Enforced)` gives a target member its mirrored
policy plus default deny, as a stateful firewall of its own (personality's structure:
hooks -> ct(zone) -> firewall table: +inv drop, +est/+rel pass, new: rules in order, default).

Unlike observation, enforcement is inline: the member's packets themselves go through
conntrack in its zone (`observe.zone_of(index)`, the same one both ways, so replies are
`+est`) and through the firewall, which drops what it refuses.  The forward path:

    classify (0), from the member (its port + MAC)
      254  DHCP: udp 68 -> 67 to the broadcast or a gateway ─► egress_goto (untouched)
      253  IPv4 [from each of its addresses] ─► reg2 := key(port, egress),
                                                ct(zone Z) ─► policy_egress_fw (21)
      252  ARP ─► egress_goto (untouched: arp answers it)
      251  anything else (a spoofed source, another ethertype) ─► dropped
    policy_egress_fw (21) ── what passes ─► route (40) ─► l2 (50) ─► out
    l2 (50), to the member (its MAC)
      164  DHCP: udp 67 -> 68 from a gateway ─► out its port (untouched)
      163  IPv4 [to each of its addresses] ─► reg2 := key(port, ingress),
                                              ct(zone Z) ─► policy_ingress_fw (101)
      162  ARP ─► out its port;  161  anything else ─► dropped
    policy_ingress_fw (101) ── what passes ─► out its port

Why route (40) and not the member's egress_goto: OpenFlow only goes forward, and the
firewall (21, in POLICY's tables 20-29) lies beyond arp (10).  arp has nothing for IPv4
(the fabric's arp only matches ARP; its miss goes to route), so IPv4 resuming at route is
the way it would have gone.  A member whose packets go elsewhere (a personality's tables
2-5 and 60, before the firewall) cannot be enforced here: `enforce_flows` refuses it
(ValueError) rather than skip its personality.  The hooks' priorities lie above
observation's (classify 248-250, l2 158-160): a member being enforced is not observed at
the same time (the runtime sees to that), and distinct priorities keep them apart anyway.

The firewall tables, for the member's key (reg2), after conntrack:

    65000  +inv ─► dropped
    64900  a connection marked REFUSED (and, enforcing, WOULD_DENY) ─► dropped
    64003  audit: +new of a connection committed WOULD_DENY (one-way UDP) ─► passes
    64002  +new of a connection committed ALLOWED (one-way UDP) ─► passes
    64001 / 64000  +est / +rel ─► passes
    60000  egress infrastructure, new: ICMP echo to a gateway, DNS (udp/tcp 53) to one of
           the listed servers ─► committed ALLOWED, passes
    50000 - i  rule i (in the order given: first match wins), new: allow ─► committed
           ALLOWED, passes; deny ─► dropped (a denied review is not recorded again)
    200    default, new, TCP SYN without ACK / UDP ─► refused (below)
    150    default, any other new TCP (opens nothing) ─► dropped (audit: passes)
    100    default, new, any other IP protocol ─► refused (below)
    1      anything else ─► dropped

Refused: the connection's record is learned into policy_refused (the key and layout of
observation's records, `records`; cookie: the flows' own, `review_cookie(category)`),
then, enforcing, it is committed REFUSED resuming in policy_refused, where the packet
counts on its record and is dropped; auditing, it is committed WOULD_DENY and passes on,
and a copy (clone) resumes in policy_refused to count.  Either way the mark keeps one
connection counted once (a retransmitted SYN, the next datagrams of a one-way UDP stream),
and REFUSED also keeps a refused connection's would-be "replies" out (a committed entry
would otherwise call the reverse direction established).  No packet-in, ever.

Egress rules match the peer as ipv4_dst in the rule's CIDRs, ingress rules as ipv4_src;
both match the server port (tcp_dst/udp_dst: the peer's port egress, the member's own port
ingress).  A rule with no CIDRs matches nothing.  With no rules at all the member gets the
infrastructure and default deny: it fails closed.  A connection admitted under an earlier
policy stays established (as with personality's firewall); ct marks are POLICY's bits 20-22
(23 is observation's RECORDED).
"""
from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network
from typing import Iterable, Literal, Mapping, NamedTuple

from controller.core import budgets
from controller.core.channel import FlowCounters
from controller.features.policy import records
from controller.features.policy.observe import Member, learn_record, zone_of
from controller.features.policy.records import ETH_IPV4, KEY, PROTOCOLS, key_of, peer_field
from controller.features.policy.rules import PORTED, Direction, Origin, RuleKey, Seen
from controller.pipeline import cookies, tables
from controller.pipeline.actions import Action, Clone, Conntrack, Output, SetField, ct_state
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, MatchValue, flow

Mode = Literal["enforce", "audit"]
ETH_ARP = 0x0806
BROADCAST = "255.255.255.255"
_BIT = budgets.POLICY.ct_mark[0].first
ALLOWED, WOULD_DENY, REFUSED = 1 << _BIT, 1 << (_BIT + 1), 1 << (_BIT + 2)   # bits 20-22
TCP_SYN, TCP_ACK = 0x02, 0x10
HOOK_DHCP, HOOK_TRACK, HOOK_ARP, HOOK_REST = 254, 253, 252, 251     # classify
L2_DHCP, L2_TRACK, L2_ARP, L2_REST = 164, 163, 162, 161             # l2
CT_INVALID, CT_DROPPED, CT_WOULD_DENY_NEW = 65000, 64900, 64003
CT_COMMITTED_NEW, CT_ESTABLISHED, CT_RELATED = 64002, 64001, 64000
INFRASTRUCTURE = 60000
# Each origin has its own band of rule priorities, in the order rules are matched (an
# override first, then a denial, an approval, a learned rule), so a new rule of one
# origin moves only the rules of its own band: an approval rewrites the approvals, not
# every learned rule of every target.
BANDS = {"override": (50000, 5000), "denied": (45000, 5000), "approved": (40000, 5000),
         "learned": (35000, 34000)}                 # origin -> (top, size)
DEFAULT_OPENING, DEFAULT_TCP, DEFAULT_OTHER, CATCH_ALL = 200, 150, 100, 1
REFUSED_TABLE = tables.POLICY_REFUSED.id


class EffectiveRule(NamedTuple):
    """A rule as enforced on one member: its peer resolved to IPv4 networks."""
    key: RuleKey
    action: Literal["allow", "deny"]
    cidrs: tuple[str, ...]        # empty: matches nothing
    origin: Origin = "learned"


class Infrastructure(NamedTuple):
    """What a member may always reach."""
    gateway_ips: tuple[str, ...]
    dns_servers: tuple[str, ...]
    dhcp: bool = True


class Enforced(NamedTuple):
    member: Member
    index: int                    # its zone index (`observe.zone_of`)
    rules: tuple[EffectiveRule, ...]
    mode: Mode
    infrastructure: Infrastructure
    cookie: int                   # these flows' and their refused records' (`review_cookie`)


class _Side(NamedTuple):
    direction: Direction
    firewall: int
    then: tuple[Action, ...]      # what passes: these actions, then goto
    goto: int | None


def review_cookie(category: str) -> int:
    """The cookie of a target category's enforcement flows and of the records of the
    connections they refused (enforce) or would have refused (audit)."""
    return cookies.make(Feature.POLICY, f"reviews:{category}")


def decode_refused(member_by_port: Mapping[int, str], flows: Iterable[FlowCounters],
                   now: float) -> list[Seen]:
    """The refused records among `flows` (one switch's), as `Seen` (`records.seen_of`)."""
    return records.seen_of(member_by_port, flows, now, table=REFUSED_TABLE)


def _sides(m: Member) -> tuple[_Side, _Side]:
    egress_fw, ingress_fw = tables.POLICY_EGRESS_FW.id, tables.POLICY_INGRESS_FW.id
    if m.egress_goto == tables.ARP.id:
        egress = _Side("egress", egress_fw, (), tables.ROUTE.id)
    elif m.egress_goto > egress_fw:
        egress = _Side("egress", egress_fw, (), m.egress_goto)
    else:
        raise ValueError(f"{m.interface_id}: its packets go on to table {m.egress_goto}, "
                         f"before the policy firewall ({egress_fw}): it cannot be enforced")
    if m.ingress_goto is None:
        ingress = _Side("ingress", ingress_fw, (Output(m.port),), None)
    elif m.ingress_goto > ingress_fw:
        ingress = _Side("ingress", ingress_fw, (), m.ingress_goto)
    else:
        raise ValueError(f"{m.interface_id}: what it receives goes on to table "
                         f"{m.ingress_goto}, before the policy firewall ({ingress_fw}): "
                         "it cannot be enforced")
    return egress, ingress


def _hooks(e: Enforced, zone: int, egress: _Side, ingress: _Side) -> list[FlowSpec]:
    m, infra, c = e.member, e.infrastructure, e.cookie
    mine = {"in_port": m.port, "eth_src": m.mac}
    to = {"eth_dst": m.mac}
    ips: tuple[str | None, ...] = m.ips or (None,)
    out = []
    for side, table, own, field, prio in ((egress, tables.CLASSIFY.id, mine, "ipv4_src",
                                           HOOK_TRACK),
                                          (ingress, tables.L2.id, to, "ipv4_dst", L2_TRACK)):
        track = [SetField(KEY, key_of(m.port, side.direction)),
                 Conntrack(zone=zone, table=side.firewall)]
        out += [flow(table, prio, {**own, "eth_type": ETH_IPV4, **({field: ip} if ip else {})},
                     track, cookie=c) for ip in ips]
    deliver = ingress.then if m.ingress_goto is None else ()
    out += [flow(tables.CLASSIFY.id, HOOK_ARP, {**mine, "eth_type": ETH_ARP},
                 goto=m.egress_goto, cookie=c),
            flow(tables.CLASSIFY.id, HOOK_REST, mine, cookie=c),
            flow(tables.L2.id, L2_ARP, {**to, "eth_type": ETH_ARP}, deliver, m.ingress_goto,
                 cookie=c),
            flow(tables.L2.id, L2_REST, to, cookie=c)]
    if infra.dhcp:
        udp = {"eth_type": ETH_IPV4, "ip_proto": PROTOCOLS["udp"]}
        out += [flow(tables.CLASSIFY.id, HOOK_DHCP, {**mine, **udp, "udp_src": 68,
                                                     "udp_dst": 67, "ipv4_dst": dst},
                     goto=m.egress_goto, cookie=c)
                for dst in dict.fromkeys((BROADCAST, *infra.gateway_ips))]
        out += [flow(tables.L2.id, L2_DHCP, {**to, **udp, "udp_src": 67, "udp_dst": 68,
                                             "ipv4_src": gw}, deliver, m.ingress_goto, cookie=c)
                for gw in dict.fromkeys(infra.gateway_ips)]
    return out


@lru_cache(maxsize=65536)
def _address(cidr: str) -> str:
    """A CIDR as a match value: a /32 as its address, else network/length."""
    net = IPv4Network(cidr, strict=False)
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _rule_matches(rule: EffectiveRule) -> list[dict[str, MatchValue]]:
    key = rule.key
    proto = PROTOCOLS.get(key.protocol)
    base: dict[str, MatchValue] = {"ip_proto": proto if proto is not None else int(key.protocol)}
    if key.protocol in PORTED and key.port is not None:
        base[f"{key.protocol}_dst"] = key.port
    peer = peer_field(key.direction)
    return [{**base, peer: a} for a in dict.fromkeys(_address(c) for c in rule.cidrs)]


def _firewall(e: Enforced, zone: int, side: _Side) -> list[FlowSpec]:
    t, c, m = side.firewall, e.cookie, e.member
    key = key_of(m.port, side.direction)
    ip = {"eth_type": ETH_IPV4, KEY: key}
    new = {**ip, "ct_state": ct_state("+trk+new")}
    passes = dict(actions=side.then, goto=side.goto, cookie=c)
    allow = [Conntrack(commit=True, zone=zone, mark=ALLOWED, mark_mask=ALLOWED), *side.then]
    admitted = dict(actions=allow, goto=side.goto, cookie=c)
    audit = e.mode == "audit"
    out = [flow(t, CT_INVALID, {**ip, "ct_state": ct_state("+trk+inv")}, cookie=c),
           flow(t, CT_COMMITTED_NEW, {**new, "ct_mark": (ALLOWED, ALLOWED)}, **passes),
           flow(t, CT_ESTABLISHED, {**ip, "ct_state": ct_state("+trk+est")}, **passes),
           flow(t, CT_RELATED, {**ip, "ct_state": ct_state("+trk+rel")}, **passes)]
    for bit in (REFUSED,) if audit else (REFUSED, WOULD_DENY):
        out.append(flow(t, CT_DROPPED, {**ip, "ct_state": ct_state("+trk"),
                                        "ct_mark": (bit, bit)}, cookie=c))
    if audit:
        out.append(flow(t, CT_WOULD_DENY_NEW, {**new, "ct_mark": (WOULD_DENY, WOULD_DENY)},
                        **passes))
    if side.direction == "egress":
        out += _infrastructure(e.infrastructure, t, new, admitted)
    for rule, priority in _priorities(e.rules):
        if rule.key.direction != side.direction:
            continue
        for fields in _rule_matches(rule):
            if rule.action == "allow":
                out.append(flow(t, priority, {**new, **fields}, **admitted))
            else:
                out.append(flow(t, priority, {**new, **fields}, cookie=c))
    out += _default(e, zone, side, key, new)
    out.append(flow(t, CATCH_ALL, ip, cookie=c))
    return out


def _priorities(rules: Iterable[EffectiveRule]) -> list[tuple[EffectiveRule, int]]:
    """Each rule's priority: its origin's band (overrides above denials above approvals
    above learned rules, whatever the order given), in the order given within a band."""
    out, used = [], {}
    order = list(BANDS)

    def band(rule: EffectiveRule) -> str:
        return rule.origin if rule.origin in BANDS else "learned"
    for rule in sorted(rules, key=lambda r: order.index(band(r))):
        origin = band(rule)
        top, size = BANDS[origin]
        n = used.get(origin, 0)
        if n >= size:
            raise ValueError(f"more than {size} {origin} rules")
        used[origin] = n + 1
        out.append((rule, top - n))
    return out


def _infrastructure(infra: Infrastructure, table: int, new: Mapping[str, MatchValue],
                    admitted: dict) -> list[FlowSpec]:
    """What a member may always open: ping a gateway, DNS to the listed servers."""
    out = [flow(table, INFRASTRUCTURE, {**new, "ip_proto": PROTOCOLS["icmp"],
                                        "icmpv4_type": 8, "ipv4_dst": gw}, **admitted)
           for gw in dict.fromkeys(infra.gateway_ips)]
    for server in dict.fromkeys(infra.dns_servers):
        for proto in ("udp", "tcp"):
            out.append(flow(table, INFRASTRUCTURE, {**new, "ip_proto": PROTOCOLS[proto],
                                                    f"{proto}_dst": 53, "ipv4_dst": server},
                            **admitted))
    return out


def _default(e: Enforced, zone: int, side: _Side, key: int,
             new: Mapping[str, MatchValue]) -> list[FlowSpec]:
    """A new connection no rule matched: recorded, then refused or (audit) passed on."""
    t, c = side.firewall, e.cookie

    def refuse(protocol: str | None) -> list[Action]:
        record = learn_record(key, side.direction, protocol, c, table=REFUSED_TABLE)
        if e.mode == "enforce":
            return [record, Conntrack(commit=True, zone=zone, table=REFUSED_TABLE,
                                      mark=REFUSED, mark_mask=REFUSED)]
        return [record, Conntrack(commit=True, zone=zone, mark=WOULD_DENY,
                                  mark_mask=WOULD_DENY),
                Clone((Conntrack(zone=zone, table=REFUSED_TABLE),)), *side.then]

    then = side.goto if e.mode == "audit" else None
    tcp = {**new, "ip_proto": PROTOCOLS["tcp"]}
    out = [flow(t, DEFAULT_OPENING, {**tcp, "tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)},
                refuse("tcp"), then, c),
           flow(t, DEFAULT_OPENING, {**new, "ip_proto": PROTOCOLS["udp"]}, refuse("udp"),
                then, c),
           flow(t, DEFAULT_OTHER, new, refuse(None), then, c)]
    if e.mode == "audit":
        out.append(flow(t, DEFAULT_TCP, tcp, side.then, side.goto, c))
    else:
        out.append(flow(t, DEFAULT_TCP, tcp, cookie=c))
    return out


def enforce_flows(e: Enforced) -> list[FlowSpec]:
    """The member's enforcement flows, for its switch: hooks both ways and its firewall
    (see the module's docstring).  ValueError for a member whose packets go on to a
    table before the firewall (a personality's)."""
    if e.mode not in ("enforce", "audit"):
        raise ValueError(f"mode {e.mode!r} is not enforce or audit")
    zone = zone_of(e.index)
    egress, ingress = _sides(e.member)
    out = _hooks(e, zone, egress, ingress)
    for side in (egress, ingress):
        out += _firewall(e, zone, side)
    tables.check(out)
    keys = [f.key for f in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"enforcement flows of {e.member.interface_id} clash")
    return sorted(out, key=lambda f: (f.table, -f.priority, repr(f.match)))
