"""Enforcement in flows (controller.features.policy.enforce): a target member's own packets
go through conntrack in its zone and its firewall, which admits the infrastructure and the
mirrored rules, refuses (or, auditing, passes) the rest and records it once, fails closed
without rules, and stays inside the policy budget.

`walk` follows the compiled flows the way a switch does (the highest priority whose match
fits; set_field, conntrack answering with a given state and the connection's mark, commit,
learn, clone, output, goto), so every decision is checked against the flows themselves.
A goto out of the flows (arp, route) ends the walk as where the packet continues.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any, NamedTuple

import pytest

from controller.core import budgets
from controller.core.channel import FlowCounters
from controller.features.policy import observe, records
from controller.features.policy.enforce import (ALLOWED, REFUSED, WOULD_DENY, EffectiveRule,
                                                Enforced, Infrastructure, decode_refused,
                                                enforce_flows, review_cookie)
from controller.features.policy.observe import Member, zone_of
from controller.features.policy.rules import Peer, RuleKey, Seen
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Clone, Conntrack, Learn, Output, SetField, ct_state,
                                         flat)
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, flow

MAC, IP, PEER, OTHER = "02:00:0a:00:01:0a", "10.0.1.10", "198.51.100.1", "203.0.113.9"
GW, DNS, ROUTER = "10.0.1.254", "10.0.0.53", "02:b5:00:00:00:01"
WEB = Member("if-new-web-1", 1, 3, MAC, (IP,), tables.ARP.id, None)
INFRA = Infrastructure((GW,), (DNS,))
COOKIE = review_cookie("new-web")
INDEX = 5
NEW, EST = ct_state("+trk+new")[0], ct_state("+trk+est")[0]
INV = ct_state("+trk+inv")[0]
SYN, SYNACK, ACK = 0x02, 0x12, 0x10


def rule(direction, protocol, port, cidrs, action="allow", origin="learned"):
    return EffectiveRule(RuleKey(direction, protocol, port, Peer("address", PEER)), action,
                         tuple(cidrs), origin)


HTTP = rule("egress", "tcp", 80, [f"{PEER}/32"])
SSH_IN = rule("ingress", "tcp", 22, ["198.51.100.0/24"])


def compiled(rules=(HTTP, SSH_IN), mode="enforce", member=WEB, infra=INFRA) -> list[FlowSpec]:
    return enforce_flows(Enforced(member, INDEX, tuple(rules), mode, infra, COOKIE))


class Walk(NamedTuple):
    continues: int | None         # a table outside the flows the packet went on to
    out: tuple[int, ...]          # ports it was output to
    commits: tuple[int, ...]      # the marks it was committed with
    learned: tuple[int, ...]      # the tables it learned into
    copies: tuple[int, ...]       # tables a clone of it resumed in
    tables: tuple[int, ...]       # the tables it went through

    @property
    def passed(self) -> bool:
        return self.continues is not None or bool(self.out)


def fits(match, packet: dict[str, Any]) -> bool:
    for name, want in match:
        if name not in packet:
            return False
        if isinstance(want, tuple) and isinstance(want[0], str):      # address, netmask
            if IPv4Address(packet[name]) not in IPv4Network("/".join(want), strict=False):
                return False
        elif isinstance(want, tuple):
            if packet[name] & want[1] != want[0]:
                return False
        elif packet[name] != want:
            return False
    return True


def first(flows, table, packet) -> FlowSpec | None:
    hits = [f for f in flows if f.table == table and fits(f.match, packet)]
    best = max((f.priority for f in hits), default=None)
    top = [f for f in hits if f.priority == best]
    assert len(top) <= 1, top                     # never two flows of one priority
    return top[0] if top else None


def walk(flows, packet: dict[str, Any], state: int = NEW, mark: int = 0) -> Walk:
    """The packet through the flows, conntrack answering `state` with the connection's
    `mark` (the connection's own, before any commit of this packet)."""
    pkt, table = dict(packet), tables.CLASSIFY.id if "in_port" in packet and \
        packet["in_port"] == WEB.port else tables.L2.id
    out, commits, learned, copies, seen = [], [], [], [], []
    owned = {f.table for f in flows}
    while True:
        if table in tables.LEARNED:              # counted on its record, and dropped there
            seen.append(table)
            break
        if table not in owned:
            return Walk(table, tuple(out), tuple(commits), tuple(learned), tuple(copies),
                        tuple(seen))
        seen.append(table)
        f = first(flows, table, pkt)
        if f is None:
            break
        nxt = None
        for a in f.actions:
            if isinstance(a, SetField):
                pkt[a.field] = a.value
            elif isinstance(a, Learn):
                learned.append(a.table)
            elif isinstance(a, Clone):
                copies += [c.table for c in a.actions if isinstance(c, Conntrack)]
            elif isinstance(a, Output):
                out.append(a.port)
            elif isinstance(a, Conntrack):
                assert a.zone == zone_of(INDEX)
                if a.commit:
                    commits.append(a.mark or 0)
                if a.table is not None:
                    pkt.update(ct_state=state, ct_mark=mark, ct_zone=a.zone)
                    nxt = a.table
        if nxt is None:
            nxt = f.goto
        if nxt is None:
            break
        table = nxt
    return Walk(None, tuple(out), tuple(commits), tuple(learned), tuple(copies), tuple(seen))


def sent(proto: str, dport: int | None = None, dst: str = PEER, src: str = IP,
         flags: int = SYN, **extra) -> dict[str, Any]:
    p = {"in_port": WEB.port, "eth_src": MAC, "eth_dst": ROUTER, "eth_type": 0x0800,
         "ipv4_src": src, "ipv4_dst": dst, "ip_proto": records.PROTOCOLS[proto], **extra}
    if proto in ("tcp", "udp"):
        p.update({f"{proto}_src": 41000, f"{proto}_dst": dport})
    if proto == "tcp":
        p["tcp_flags"] = flags
    return p


def received(proto: str, dport: int | None = None, src: str = PEER, flags: int = SYN,
             **extra) -> dict[str, Any]:
    p = {"in_port": 7, "eth_src": ROUTER, "eth_dst": MAC, "eth_type": 0x0800,
         "ipv4_src": src, "ipv4_dst": IP, "ip_proto": records.PROTOCOLS[proto], **extra}
    if proto in ("tcp", "udp"):
        p.update({f"{proto}_src": 41000, f"{proto}_dst": dport})
    if proto == "tcp":
        p["tcp_flags"] = flags
    return p


REFUSED_TABLE = tables.POLICY_REFUSED.id


# ------------------------------------------------------------------ rules
def test_an_allowed_connection_is_committed_and_continues_at_route():
    w = walk(compiled(), sent("tcp", 80))
    assert w.tables == (tables.CLASSIFY.id, tables.POLICY_EGRESS_FW.id)
    assert w.continues == tables.ROUTE.id and w.commits == (ALLOWED,) and not w.learned


def test_its_replies_and_later_packets_pass_without_the_rules():
    flows = compiled()
    reply = walk(flows, received("tcp", 41000, flags=SYNACK), EST, ALLOWED)
    assert reply.out == (WEB.port,) and not reply.commits and not reply.learned
    assert walk(flows, sent("tcp", 80, flags=ACK), EST, ALLOWED).continues == tables.ROUTE.id
    # a one-way UDP stream admitted by a rule: its next datagram is +new again, and passes
    udp = compiled((rule("egress", "udp", 514, [PEER]),))
    assert walk(udp, sent("udp", 514), NEW, ALLOWED).commits == ()
    assert walk(udp, sent("udp", 514), NEW, ALLOWED).continues == tables.ROUTE.id


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_invalid_packets_are_dropped(mode):
    assert not walk(compiled(mode=mode), sent("tcp", 80), INV).passed


def test_enforcing_a_new_connection_no_rule_allows_is_recorded_and_dropped():
    w = walk(compiled(), sent("tcp", 22))
    assert not w.passed and w.learned == (REFUSED_TABLE,) and w.commits == (REFUSED,)
    assert w.tables[-1] == REFUSED_TABLE          # resumed there to count on its record
    for packet in (sent("tcp", 80, dst=OTHER), sent("udp", 80), sent("icmp")):
        assert walk(compiled(), packet).learned == (REFUSED_TABLE,), packet


def test_a_refused_connection_is_counted_once_and_its_would_be_replies_stay_out():
    flows = compiled()
    retransmitted = walk(flows, sent("tcp", 22), NEW, REFUSED)
    assert not retransmitted.passed and not retransmitted.learned
    # the peer answering the refused connection's 5-tuple: "established" to conntrack
    answer = walk(flows, received("udp", 41000), EST, REFUSED)
    assert not answer.passed and not answer.learned


def test_an_ingress_rule_matches_the_peer_as_source_and_the_members_own_port():
    flows = compiled()
    w = walk(flows, received("tcp", 22, src="198.51.100.77"))
    assert w.out == (WEB.port,) and w.commits == (ALLOWED,)
    assert w.tables == (tables.L2.id, tables.POLICY_INGRESS_FW.id)
    assert not walk(flows, received("tcp", 22, src=OTHER)).passed
    assert not walk(flows, received("tcp", 80)).passed       # egress rule, not ingress
    assert walk(flows, received("tcp", 80)).learned == (REFUSED_TABLE,)
    assert not walk(flows, sent("tcp", 22, dst="198.51.100.77")).passed   # ingress only


def test_an_egress_rule_matches_protocol_port_and_peer():
    flows = compiled()
    assert not walk(flows, sent("udp", 80)).passed
    assert not walk(flows, sent("tcp", 81)).passed
    assert not walk(flows, sent("tcp", 80, dst="198.51.100.2")).passed
    wide = compiled((rule("egress", "tcp", 5432, ["10.0.2.0/24"]),))
    assert walk(wide, sent("tcp", 5432, dst="10.0.2.200")).passed
    assert not walk(wide, sent("tcp", 5432, dst="10.0.3.1")).passed


def test_a_rule_without_cidrs_matches_nothing_and_adds_no_flow():
    empty = rule("egress", "tcp", 22, [])
    assert set(f.key for f in compiled((HTTP, empty))) == set(f.key for f in compiled((HTTP,)))
    assert not walk(compiled((HTTP, empty)), sent("tcp", 22)).passed


def test_rules_apply_in_order_and_a_denied_one_is_dropped_and_not_recorded():
    deny = rule("egress", "tcp", 80, [PEER], "deny", "denied")
    w = walk(compiled((deny, HTTP)), sent("tcp", 80))
    assert not w.passed and not w.learned and not w.commits
    assert not walk(compiled((HTTP, deny)), sent("tcp", 80)).passed, \
        "a denial's band is above the learned rules', whatever the order"
    override = rule("egress", "tcp", 80, [PEER], "allow", "override")
    assert walk(compiled((deny, override)), sent("tcp", 80)).passed, "an override above all"
    assert walk(compiled((deny,), mode="audit"), sent("tcp", 80)).passed is False


def test_a_protocol_without_ports_matches_by_its_number():
    gre = compiled((rule("egress", "47", None, [PEER]),))
    assert walk(gre, {**sent("icmp"), "ip_proto": 47}).passed
    assert not walk(gre, sent("icmp")).passed


# ------------------------------------------------------------------ audit
def test_auditing_a_would_deny_connection_is_committed_marked_counted_and_passes():
    flows = compiled(mode="audit")
    w = walk(flows, sent("tcp", 22))
    assert w.continues == tables.ROUTE.id and w.commits == (WOULD_DENY,)
    assert w.learned == (REFUSED_TABLE,) and w.copies == (REFUSED_TABLE,)
    inbound = walk(flows, received("tcp", 8080))
    assert inbound.out == (WEB.port,) and inbound.learned == (REFUSED_TABLE,)
    # the rest of it: counted once
    for state in (NEW, EST):
        again = walk(flows, sent("udp", 9999), state, WOULD_DENY)
        assert again.passed and not again.learned and not again.commits
    assert walk(flows, sent("tcp", 80)).commits == (ALLOWED,)    # the rules still admit


def test_enforcing_drops_what_an_earlier_audit_let_through():
    assert not walk(compiled(), sent("tcp", 22, flags=ACK), EST, WOULD_DENY).passed


def test_a_tcp_packet_that_opens_nothing_is_never_recorded():
    for mode, passes in (("enforce", False), ("audit", True)):
        w = walk(compiled(mode=mode), sent("tcp", 22, flags=ACK))
        assert w.passed is passes and not w.learned, mode


# ------------------------------------------------------------------ fail closed, infrastructure
def test_no_rules_is_default_deny_plus_the_infrastructure():
    flows = compiled(())
    assert not walk(flows, sent("tcp", 80)).passed
    assert not walk(flows, received("tcp", 8080)).passed
    ping = walk(flows, sent("icmp", dst=GW, icmpv4_type=8))
    assert ping.continues == tables.ROUTE.id and ping.commits == (ALLOWED,)
    assert walk(flows, received("icmp", src=GW, icmpv4_type=0), EST, ALLOWED).passed
    for proto in ("udp", "tcp"):
        assert walk(flows, sent(proto, 53, dst=DNS)).commits == (ALLOWED,)
        assert not walk(flows, sent(proto, 53, dst=OTHER)).passed
    assert not walk(flows, sent("icmp", dst=PEER, icmpv4_type=8)).passed


@pytest.mark.parametrize("dst", ["255.255.255.255", GW])
def test_dhcp_to_the_broadcast_or_the_gateway_goes_on_untouched(dst):
    flows = compiled(())
    for src in ("0.0.0.0", IP):
        w = walk(flows, {**sent("udp", 67, dst=dst, src=src), "udp_src": 68})
        assert w.continues == WEB.egress_goto and w.tables == (tables.CLASSIFY.id,)
    offer = walk(flows, {**received("udp", 68, src=GW), "udp_src": 67,
                         "ipv4_dst": "255.255.255.255"})
    assert offer.out == (WEB.port,) and offer.tables == (tables.L2.id,)
    assert not walk(compiled((), infra=INFRA._replace(dhcp=False)),
                    {**sent("udp", 67, dst=dst, src="0.0.0.0"), "udp_src": 68}).passed


def test_arp_passes_untouched_and_anything_else_of_the_member_is_dropped():
    flows = compiled(())
    arp = {"in_port": WEB.port, "eth_src": MAC, "eth_type": 0x0806}
    assert walk(flows, arp).continues == tables.ARP.id
    assert walk(flows, {"in_port": 7, "eth_dst": MAC, "eth_type": 0x0806}).out == (WEB.port,)
    assert not walk(flows, {**arp, "eth_type": 0x86DD}).passed          # IPv6
    assert not walk(flows, {"in_port": 7, "eth_dst": MAC, "eth_type": 0x86DD}).passed
    assert not walk(flows, sent("tcp", 80, src="10.0.1.99")).passed     # spoofed
    assert not walk(flows, {**received("tcp", 80), "ipv4_dst": "10.0.1.99"}).passed


def test_without_known_addresses_all_ipv4_of_its_mac_is_firewalled():
    flows = compiled(member=WEB._replace(ips=()))
    assert walk(flows, sent("tcp", 80, src="10.0.1.99")).passed
    assert not walk(flows, sent("tcp", 22, src="10.0.1.99")).passed


# ------------------------------------------------------------------ layout, budget
def test_a_member_whose_packets_go_to_a_personality_cannot_be_enforced():
    with pytest.raises(ValueError, match="before the policy firewall"):
        compiled(member=WEB._replace(egress_goto=tables.PERSONALITY_EGRESS.id))
    with pytest.raises(ValueError, match="before the policy firewall"):
        compiled(member=WEB._replace(ingress_goto=tables.PERSONALITY_INGRESS.id))
    with pytest.raises(ValueError, match="mode"):
        compiled(mode="permissive")


def test_the_forward_path_only_goes_forward_through_policys_own_tables():
    ids = {tables.POLICY_EGRESS_FW.id, tables.POLICY_INGRESS_FW.id, REFUSED_TABLE}
    assert all(tables.BY_ID[i].owner == "policy" for i in ids)
    assert tables.CLASSIFY.id < tables.POLICY_EGRESS_FW.id < tables.ROUTE.id
    assert tables.L2.id < tables.POLICY_INGRESS_FW.id < REFUSED_TABLE
    assert tables.BY_ID[REFUSED_TABLE].learned
    # the fabric's arp has nothing for IPv4 but its miss to route: skipping it is the same way
    assert tables.ARP.miss == "goto:route"
    tables.check(compiled())            # raises on a backward goto or ct resume


def test_every_flow_stays_inside_the_policy_budget_above_observations_hooks():
    other = WEB._replace(port=4, mac="02:00:00:00:00:04")
    flows = compiled() + compiled(mode="audit", member=other)
    assert budgets.audit(flows) == []
    assert {f.cookie for f in flows} == {COOKIE}
    assert cookies.parse(COOKIE).feature == Feature.POLICY
    learns = [a for f in flows for a in flat(f.actions) if isinstance(a, Learn)]
    assert learns and {a.cookie for a in learns} == {COOKIE}
    assert {a.table for a in learns} == {REFUSED_TABLE}
    seen = observe.observe_flows(WEB, INDEX, observe.record_cookie("web"))
    for table in (tables.CLASSIFY.id, tables.L2.id):
        mine = {f.priority for f in flows if f.table == table}
        theirs = {f.priority for f in seen if f.table == table}
        assert min(mine) > max(theirs), table
    assert not any(isinstance(a, Output) and a.port == Output.controller().port
                   for f in flows for a in flat(f.actions))


def test_review_cookies_are_per_category_and_not_observations():
    assert review_cookie("web") != review_cookie("db")
    assert review_cookie("web") != observe.record_cookie("web")


def test_compiling_is_deterministic():
    assert compiled() == compiled()
    assert compiled((HTTP, HTTP._replace(cidrs=(f"{PEER}/32", PEER)))) != []


# ------------------------------------------------------------------ refused records
def _record(table: int, key: int, **match) -> FlowCounters:
    return FlowCounters(flow(table, 100, {"reg2": key, "eth_type": 0x0800, **match},
                             cookie=COOKIE), 4, 400)


def test_refused_records_decode_to_seen_and_observation_records_do_not():
    egress = _record(REFUSED_TABLE, records.key_of(3, "egress"), ip_proto=6,
                     ipv4_dst=PEER, tcp_dst=22)
    ingress = _record(REFUSED_TABLE, records.key_of(3, "ingress"), ip_proto=1, ipv4_src=PEER)
    learned = _record(tables.POLICY_RECORDS.id, records.key_of(3, "egress"), ip_proto=6,
                      ipv4_dst=PEER, tcp_dst=80)
    got = decode_refused({3: WEB.interface_id}, [egress, ingress, learned], 100.0)
    assert got == sorted([Seen(WEB.interface_id, "egress", "tcp", 22, PEER, 4, 100.0, 100.0),
                          Seen(WEB.interface_id, "ingress", "icmp", None, PEER, 4, 100.0,
                               100.0)])
    assert records.seen_of({3: WEB.interface_id}, [egress, learned], 1.0)[0].port == 80
    assert decode_refused({4: "other"}, [egress], 1.0) == []


def test_an_approval_moves_no_learned_rule():
    learned = tuple(rule("egress", "tcp", p, [f"{PEER}/32"]) for p in (80, 443, 5432))
    approval = rule("egress", "tcp", 22, [f"{PEER}/32"], "allow", "approved")
    before = set(compiled(learned))
    after = set(compiled((approval, *learned)))
    assert before <= after and len(after - before) == 1, "one flow more, none rewritten"
