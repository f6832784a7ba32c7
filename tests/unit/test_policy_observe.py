"""Learning in flows (controller.features.policy.observe) and its records read back
(controller.features.policy.records): the hooks keep each packet's way and copy it, the
copies' decisions record a connection once and only by who opened it, the learned record
decodes to `Seen`, every flow stays inside the policy budget and survives the wire.

`first` below walks the compiled flows the way a switch looks them up (the highest
priority whose match fits), so the decisions are checked against the flows themselves.
"""
from __future__ import annotations

from typing import Any

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.core import budgets
from controller.core.channel import FlowCounters
from controller.features.policy import records
from controller.features.policy.observe import (RECORDED, Member, observe_flows, record_cookie,
                                                zone_of)
from controller.features.policy.rules import Seen
from controller.pipeline import cookies, ofcodec, tables
from controller.pipeline.actions import (CONTROLLER, Clone, Conntrack, Learn, Output, SetField,
                                         ct_state, flat)
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, flow, make_match

MAC, IP, PEER = "02:00:0a:00:01:0a", "10.0.1.10", "198.51.100.1"
WEB = Member("if-web-1", 1, 3, MAC, (IP,), tables.ARP.id, None)
PERSONAL = WEB._replace(egress_goto=tables.PERSONALITY_EGRESS.id,
                        ingress_goto=tables.PERSONALITY_INGRESS.id)
COOKIE = record_cookie("web")
SYN, SYNACK, ACK = 0x02, 0x12, 0x10
NEW, EST = ct_state("+trk+new")[0], ct_state("+trk+est")[0]


def compiled(member: Member = WEB, index: int = 5) -> list[FlowSpec]:
    return observe_flows(member, index, COOKIE)


def fits(match, packet: dict[str, Any]) -> bool:
    for name, want in match:
        if name not in packet:
            return False
        if isinstance(want, tuple) and isinstance(want[0], int):
            if packet[name] & want[1] != want[0]:
                return False
        elif packet[name] != want:
            return False
    return True


def first(flows: list[FlowSpec], table: int, packet: dict[str, Any]) -> FlowSpec | None:
    hits = [f for f in flows if f.table == table and fits(f.match, packet)]
    return max(hits, key=lambda f: f.priority, default=None)


def from_member(proto: int, **extra) -> dict[str, Any]:
    return {"in_port": WEB.port, "eth_src": MAC, "eth_dst": "02:b5:00:00:00:01",
            "eth_type": 0x0800, "ipv4_src": IP, "ipv4_dst": PEER, "ip_proto": proto, **extra}


def to_member(proto: int, **extra) -> dict[str, Any]:
    return {"in_port": 7, "eth_src": "02:b5:00:00:00:01", "eth_dst": MAC, "eth_type": 0x0800,
            "ipv4_src": PEER, "ipv4_dst": IP, "ip_proto": proto, **extra}


def copy_of(hook: FlowSpec) -> Clone | None:
    return next((a for a in hook.actions if isinstance(a, Clone)), None)


def after_ct(flows, hook: FlowSpec, packet, state: int, mark: int = 0) -> FlowSpec | None:
    """Where the hook's copy lands after conntrack answers `state` (None: dropped)."""
    clone = copy_of(hook)
    assert clone is not None
    key, ct = clone.actions
    assert isinstance(key, SetField) and isinstance(ct, Conntrack)
    return first(flows, ct.table, {**packet, key.field: key.value, "ct_state": state,
                                   "ct_mark": mark, "ct_zone": ct.zone})


def dropped(decision: FlowSpec | None) -> bool:
    """The copy ends there: no flow took it, or one without actions."""
    return decision is None or not decision.actions and decision.goto is None


def learned(learn: Learn, packet: dict[str, Any]) -> FlowSpec:
    """The flow OVS adds for `learn` from `packet`: each spec's value, or the packet's field."""
    match = {s.dst: s.value if s.src is None else packet[s.src] for s in learn.specs}
    return flow(learn.table, learn.priority, match, cookie=learn.cookie)


def record_of(decision: FlowSpec, packet) -> FlowSpec:
    (learn,) = [a for a in decision.actions if isinstance(a, Learn)]
    return learned(learn, packet)


# ------------------------------------------------------------------ the packet keeps its way
@pytest.mark.parametrize("member", [WEB, PERSONAL], ids=["fabric", "personality"])
@pytest.mark.parametrize("packet", [from_member(6, tcp_flags=SYN), from_member(6, tcp_flags=ACK),
                                    from_member(17, udp_dst=53), from_member(1)],
                         ids=["syn", "ack", "udp", "icmp"])
def test_what_the_member_sends_goes_on_where_it_went_and_is_changed_only_in_its_copy(
        member, packet):
    hook = first(compiled(member), tables.CLASSIFY.id, packet)
    assert hook is not None and hook.goto == member.egress_goto
    assert all(isinstance(a, Clone) for a in hook.actions), hook   # nothing else on the packet
    assert (copy_of(hook) is None) == (packet["ip_proto"] == 6 and packet["tcp_flags"] == ACK)


@pytest.mark.parametrize("member, then, goto", [
    (WEB, (Output(WEB.port),), None), (PERSONAL, (), tables.PERSONALITY_INGRESS.id)],
    ids=["fabric", "personality"])
def test_what_the_member_receives_goes_out_its_port_or_to_its_personality(member, then, goto):
    for packet in (to_member(6, tcp_flags=SYN), to_member(17, udp_dst=53), to_member(1)):
        hook = first(compiled(member), tables.L2.id, packet)
        assert hook is not None and isinstance(hook.actions[0], Clone)
        assert hook.actions[1:] == then and hook.goto == goto
    quiet = first(compiled(member), tables.L2.id, to_member(6, tcp_flags=ACK))
    assert quiet.actions == then and quiet.goto == goto


def test_only_the_members_own_ipv4_is_hooked_and_without_addresses_all_of_its_mac():
    flows = compiled()
    assert first(flows, tables.CLASSIFY.id, from_member(1, ipv4_src="10.0.1.99")) is None
    assert first(flows, tables.L2.id, to_member(1, ipv4_dst="10.0.1.99")) is None
    assert first(flows, tables.CLASSIFY.id, {**from_member(1), "in_port": 4}) is None
    assert first(flows, tables.CLASSIFY.id, {"in_port": 3, "eth_src": MAC, "eth_type": 0x0806}) \
        is None
    two = compiled(WEB._replace(ips=(IP, "10.0.1.11")))
    assert first(two, tables.CLASSIFY.id, from_member(1, ipv4_src="10.0.1.11")) is not None
    anyip = compiled(WEB._replace(ips=()))
    assert first(anyip, tables.L2.id, to_member(1, ipv4_dst="10.0.1.99")) is not None


def test_no_flow_sends_anything_to_the_controller():
    actions = [a for f in compiled() + compiled(PERSONAL) for a in flat(f.actions)]
    assert not [a for a in actions if isinstance(a, Output) and a.port == CONTROLLER]


# ------------------------------------------------------------------ who opened it
def test_the_member_opening_tcp_80_is_an_egress_record_of_the_server_port_and_peer():
    flows = compiled()
    syn = from_member(6, tcp_src=40123, tcp_dst=80, tcp_flags=SYN)
    decision = after_ct(flows, first(flows, tables.CLASSIFY.id, syn), syn, NEW)
    ct = decision.actions[-1]
    assert isinstance(ct, Conntrack) and ct.commit and ct.zone == zone_of(5)
    assert ct.table == tables.POLICY_RECORDS.id and ct.mark == ct.mark_mask == RECORDED
    record = record_of(decision, {**syn, "reg2": records.key_of(WEB.port, "egress")})
    assert dict(record.match) == {"reg2": WEB.port, "eth_type": 0x0800, "ip_proto": 6,
                                  "ipv4_dst": PEER, "tcp_dst": 80}
    assert record.cookie == COOKIE and record.table == tables.POLICY_RECORDS.id
    # the commit resumes in the records: the copy meets the record it just learned
    assert fits(record.match, {**syn, "reg2": records.key_of(WEB.port, "egress")})


def test_the_peer_opening_tcp_8080_is_an_ingress_record_and_the_members_answer_is_nothing():
    flows = compiled()
    syn = to_member(6, tcp_src=51000, tcp_dst=8080, tcp_flags=SYN)
    decision = after_ct(flows, first(flows, tables.L2.id, syn), syn, NEW)
    record = record_of(decision, syn)
    assert dict(record.match) == {"reg2": WEB.port | records.INGRESS, "eth_type": 0x0800,
                                  "ip_proto": 6, "ipv4_src": PEER, "tcp_dst": 8080}
    answer = from_member(6, ipv4_dst=PEER, tcp_src=8080, tcp_dst=51000, tcp_flags=SYNACK)
    hook = first(flows, tables.CLASSIFY.id, answer)
    assert dropped(after_ct(flows, hook, answer, EST | ct_state("+rpl")[0]))


@pytest.mark.parametrize("packet, state, mark", [
    (from_member(6, tcp_dst=80, tcp_flags=SYNACK), NEW, 0),    # an answer whose SYN was missed
    (from_member(6, tcp_dst=80, tcp_flags=SYN), NEW, RECORDED),   # a retransmitted SYN
    (from_member(17, udp_dst=53), NEW, RECORDED),                # one-way UDP: +new again
    (from_member(17, udp_dst=53), EST, RECORDED),
    (from_member(1), EST, RECORDED),
    (from_member(6, tcp_dst=80, tcp_flags=SYN), ct_state("+trk+inv")[0], 0),
], ids=["synack", "syn-again", "udp-again", "udp-est", "icmp-est", "invalid"])
def test_nothing_but_a_connections_first_opening_packet_is_recorded(packet, state, mark):
    flows = compiled()
    decision = after_ct(flows, first(flows, tables.CLASSIFY.id, packet), packet, state, mark)
    assert dropped(decision), decision


@pytest.mark.parametrize("packet, protocol, port", [
    (from_member(17, udp_src=50001, udp_dst=53), "udp", 53),
    (from_member(1, icmpv4_type=8), "icmp", None),
    (from_member(47), "47", None)], ids=["udp", "icmp", "gre"])
def test_udp_records_its_server_port_and_other_protocols_none(packet, protocol, port):
    flows = compiled()
    decision = after_ct(flows, first(flows, tables.CLASSIFY.id, packet), packet, NEW)
    record = record_of(decision, packet)
    got = records.seen_of({WEB.port: WEB.interface_id}, [FlowCounters(record, 1, 60)], 10.0)
    assert got == [Seen(WEB.interface_id, "egress", protocol, port, PEER, 1, 10.0, 10.0)]


def test_a_client_port_is_never_in_a_record():
    specs = [s for f in compiled() for a in f.actions if isinstance(a, Learn) for s in a.specs]
    assert specs and not [s for s in specs if s.dst.endswith("_src") and s.dst != "ipv4_src"]
    assert not [s for s in specs if s.src in ("tcp_src", "udp_src")]


# ------------------------------------------------------------------ read back
def counted(match: dict, packets: int, table: int = tables.POLICY_RECORDS.id) -> FlowCounters:
    return FlowCounters(FlowSpec(table, 100, make_match(match), cookie=COOKIE), packets, 0)


def test_records_decode_to_seen_by_the_port_of_the_member_sorted():
    eg = {"reg2": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": PEER, "tcp_dst": 80}
    ing = {"reg2": 4 | records.INGRESS, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": PEER,
           "tcp_dst": 8080}
    got = records.seen_of({3: "a", 4: "b"}, [counted(ing, 2), counted(eg, 3)], 5.0)
    assert got == [Seen("a", "egress", "tcp", 80, PEER, 3, 5.0, 5.0),
                   Seen("b", "ingress", "tcp", 8080, PEER, 2, 5.0, 5.0)]


def test_a_record_not_yet_counted_is_one_connection():
    eg = {"reg2": 3, "eth_type": 0x0800, "ip_proto": 17, "ipv4_dst": PEER, "udp_dst": 53}
    assert records.seen_of({3: "a"}, [counted(eg, 0)], 1.0)[0].connections == 1


@pytest.mark.parametrize("flow_", [
    counted({"reg2": 9, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": PEER, "tcp_dst": 80}, 1),
    counted({"reg2": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": PEER, "tcp_dst": 80}, 1,
            table=tables.POLICY_FROM.id),
    counted({"reg2": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": PEER, "tcp_dst": 80}, 1),
    counted({"reg2": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": PEER}, 1),
    counted({"reg2": 3 | 1 << 20, "eth_type": 0x0800, "ip_proto": 1, "ipv4_dst": PEER}, 1),
    counted({"eth_type": 0x0800, "ip_proto": 1, "ipv4_dst": PEER}, 1),
], ids=["unknown-port", "other-table", "wrong-peer-field", "no-port", "stray-bits", "no-key"])
def test_what_is_not_a_record_of_a_known_member_is_left_out(flow_):
    assert records.seen_of({3: "a"}, [flow_], 1.0) == []


def test_every_observation_flow_read_from_the_switch_is_a_flow_the_hub_wrote_not_a_record():
    assert records.seen_of({WEB.port: "a"}, [FlowCounters(f, 9, 0) for f in compiled()], 1.0) == []


# ------------------------------------------------------------------ budget, wire, shape
def test_every_flow_stays_inside_the_policy_budget_and_its_bands():
    flows = compiled(index=0) + compiled(PERSONAL, index=0xFFF)
    assert budgets.audit(flows) == []
    assert {cookies.parse(f.cookie).feature for f in flows} == {Feature.POLICY}
    bands = {h.table: h.band for h in budgets.POLICY.hooks}
    assert all(f.priority in bands[f.table] for f in flows if f.table in bands)
    zones = {a.zone for f in flows for a in flat(f.actions) if isinstance(a, Conntrack)}
    assert zones == {0xD000, 0xDFFF} and all(z in budgets.POLICY.zones[0] for z in zones)
    learns = [a for f in flows for a in f.actions if isinstance(a, Learn)]
    assert learns and all(a.idle_timeout == a.hard_timeout == 0 for a in learns)


@pytest.mark.parametrize("index", [-1, 0x1000])
def test_an_index_outside_the_zones_is_refused(index):
    with pytest.raises(ValueError):
        compiled(index=index)


def test_compiling_is_deterministic_and_two_members_of_a_switch_never_share_a_flow():
    assert compiled() == compiled()
    other = Member("if-web-2", 1, 4, "02:00:0a:00:01:0b", ("10.0.1.11",), tables.ARP.id, None)
    a, b = compiled(), observe_flows(other, 6, COOKIE)
    assert not {f.key for f in a} & {f.key for f in b}
    assert len({f.key for f in a}) == len(a)


@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_every_action_survives_the_wire(version):
    parser = ofproto_protocol.ProtocolDesc(version).ofproto_parser
    for action in {a for f in compiled(PERSONAL) for a in f.actions}:
        buf = bytearray()
        ofcodec.encode_action(parser, action).serialize(buf, 0)
        back = parser.OFPAction.parser(bytes(buf), 0)
        assert ofcodec.decode_action(parser, back) == action
