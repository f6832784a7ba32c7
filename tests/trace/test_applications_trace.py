"""The ct_mark bits and the application access policy on a real bridge.

Same setup as test_personality_trace (one switch, H1 with a personality, H2
without), with a "web" personality whose policy allows HTTP on tcp/80 only
when the first payload looks like a request, denies an SSH banner there,
denies telnet (tcp/23) outright and admits a udp/7000 "quiz" protocol by
signature.  `ofproto/trace` shows what the datapath does; the mark a
connection carries is given in the traced flow (`ct_mark=`), which the trace
keeps across the conntrack recirculation.

Also: the flows read back from the bridge over OpenFlow (1.3 and 1.4), after
the hub's own encoding put them there, decode to exactly the compiled flows
(marks, masked ct_mark matches, nested set-field and reg_load2 included).
"""
from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_4

from controller.features.personality.compile import (Interface, PersonalityPolicy,
                                            compile_personality, compile_transition)
from controller.pipeline import cookies, ctmark, ofcodec
from controller.pipeline.actions import Conntrack, Nat, Output
from controller.pipeline.flowspec import flow

from tests.trace.ofsession import OFSession
from tests.trace.test_personality_trace import (CTX, EST, EST_REPLY, H1, H2, NEW, Loaded,
                                                load, tcp)

pytestmark = pytest.mark.trace

APPS = {"allow": [{"name": "http", "protocol": "tcp", "port": 80,
                   "signature": "re:^(GET|POST|HEAD) "},
                  {"name": "https", "protocol": "tcp", "port": 443},
                  {"name": "quiz", "protocol": "udp", "port": 7000, "signature": "QUIZ"}],
        "deny": [{"name": "ssh-banner", "protocol": "tcp", "port": 80, "signature": "SSH-"},
                 {"name": "telnet", "protocol": "tcp", "port": 23}]}
WEB = {"name": "web", "ip_addresses": [H1[1]], "default_action": "allow",
       "application_access_policy": APPS}


def value(direction: str, verdict: int = ctmark.APP_NONE) -> int:
    """The ct_mark of a connection `direction`'s firewall committed with this verdict."""
    return ctmark.commit(direction, verdict)[0]


# Connections opened toward H1 carry their marks in the IN field, H1's own in OUT.
C_IN, INSPECT, ALLOWED, DENIED = (value("ingress", v) for v in (
    ctmark.APP_NONE, ctmark.APP_INSPECT, ctmark.APP_ALLOWED, ctmark.APP_DENIED))
C_OUT, INSPECT_OUT = value("egress"), value("egress", ctmark.APP_INSPECT)


def commit(zone: int, direction: str, verdict: int = ctmark.APP_NONE) -> str:
    """A commit as the datapath actions show it: a masked mark, the table's own field."""
    mark, mask = ctmark.commit(direction, verdict)
    return f"ct(commit,zone={zone},mark={mark:#x}/{mask:#x})"


def udp(src, dst, sport: int, dport: int) -> str:
    (s_mac, s_ip, s_port), (d_mac, d_ip, _) = src, dst
    return (f"in_port={s_port},udp,dl_src={s_mac},dl_dst={d_mac},nw_src={s_ip},nw_dst={d_ip},"
            f"nw_ttl=64,udp_src={sport},udp_dst={dport}")


def marked(packet: str, mark: int) -> str:
    return f"ct_mark={mark:#x},{packet}"


@pytest.fixture(scope="module")
def web(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("web", WEB, revision=1)
    return load(make_bridge, lambda i, zone: compile_personality(i, policy, zone, CTX))


@pytest.fixture(scope="module")
def web_transition(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("web", WEB, revision=1)
    return load(make_bridge, lambda i, zone: compile_transition(i, policy, zone, CTX), epoch=1)


# ------------------------------------------------------ the first packet
def test_syn_to_an_inspected_port_is_committed_for_inspection_and_sent_on(web):
    """The rule commits it (COMMITTED); the count table, seeing it untracked
    after that commit, commits it again with APP_INSPECT, counts it, delivers it."""
    t = web.trace(tcp(H2, H1, 40000, 80), NEW)
    final = t.passes[-1]
    assert final.index(commit(web.zone, "ingress")) < \
        final.index(commit(web.zone, "ingress", ctmark.APP_INSPECT)), t
    assert t.out_ports == [H1[2]], t
    assert t.tables[-2:] == [61, 62] and len(t.learned(web.connection_cookie)) == 1, t
    t = web.trace(tcp(H1, H2, 50000, 80), NEW)          # the same opened by H1: egress, OUT
    assert commit(web.zone, "egress", ctmark.APP_INSPECT) in t.final, t
    assert t.out_ports == [H2[2]], t


def test_connection_to_a_denied_port_is_marked_denied_and_dropped(web):
    t = web.trace(tcp(H2, H1, 40000, 23), NEW)
    assert t.final == [commit(web.zone, "ingress"),
                       commit(web.zone, "ingress", ctmark.APP_DENIED)], t
    assert not t.learned(web.connection_cookie), "not counted"


def test_first_udp_packet_of_an_inspected_port_goes_to_the_controller(web):
    t = web.trace(udp(H2, H1, 5000, 7000), NEW)
    assert commit(web.zone, "ingress", ctmark.APP_INSPECT) in t.final, t
    assert "controller(" in t.passes[-1], t
    assert t.out_ports == [], "held until the verdict"


def test_ports_with_allow_rules_only_are_the_firewalls_business(web):
    t = web.trace(tcp(H2, H1, 40000, 443), NEW)
    assert t.final[0] == commit(web.zone, "ingress") and len(t.final) == 2, t  # no verdict
    assert t.out_ports == [H1[2]], t


# --------------------------------------------------- marked connections
@pytest.mark.parametrize("packet, state, mark, outcome", [
    (tcp(H2, H1, 40000, 80), EST, INSPECT, "controller"),     # opener's next segment
    (tcp(H1, H2, 80, 40000), EST_REPLY, INSPECT, H2[2]),      # the server's answer passes
    (tcp(H2, H1, 40000, 80), EST, ALLOWED, H1[2]),
    (tcp(H1, H2, 80, 40000), EST_REPLY, ALLOWED, H2[2]),
    (tcp(H2, H1, 40000, 80), EST, DENIED, "drop"),
    (tcp(H1, H2, 80, 40000), EST_REPLY, DENIED, "drop"),
    (udp(H2, H1, 5000, 7000), NEW, INSPECT, "controller"),    # one-way UDP under inspection
    (udp(H2, H1, 5000, 7000), NEW, ALLOWED, H1[2]),           # ... and once allowed
    (udp(H2, H1, 5000, 7000), NEW, DENIED, "drop"),
    (tcp(H2, H1, 40000, 80), "rel,trk", INSPECT, H1[2]),      # related: not punted
], ids=["inspect-opener", "inspect-reply", "allowed", "allowed-reply", "denied",
        "denied-reply", "udp-inspect", "udp-allowed", "udp-denied", "inspect-related"])
def test_marked_connections(web, packet, state, mark, outcome):
    t = web.trace(marked(packet, mark), state)
    assert not t.committed, f"no new commit for a marked connection:\n{t}"
    if outcome == "controller":
        assert "controller(" in t.passes[-1], t
        assert t.out_ports == [], t
    elif outcome == "drop":
        assert t.dropped, t
    else:
        assert t.out_ports == [outcome], t


def test_established_packets_are_not_taken_for_just_admitted_ones(web):
    """The count table's application flows need -trk: an established packet reaches
    the count table tracked, and is counted without a commit or a new mark."""
    t = web.trace(tcp(H2, H1, 40000, 23), EST)
    assert t.out_ports == [H1[2]] and not t.committed, t


def test_one_way_udp_committed_here_passes_as_established(web):
    t = web.trace(marked(udp(H2, H1, 5000, 9999), C_IN), NEW)
    assert t.out_ports == [H1[2]] and not t.committed, t
    t = web.trace(marked(udp(H1, H2, 6000, 9999), C_OUT), NEW)
    assert t.out_ports == [H2[2]] and not t.committed, t


def test_a_mark_of_the_other_end_is_not_trusted(web):
    """Zones are per interface, but bridges of one datapath share conntrack: a
    connection the peer's personality committed (its egress: OUT) is still +new
    at H1's ingress, where H1's own rules and policy decide (IN)."""
    t = web.trace(marked(tcp(H2, H1, 40000, 23), C_OUT), NEW)
    assert t.final == [commit(web.zone, "ingress"),
                       commit(web.zone, "ingress", ctmark.APP_DENIED)], t
    t = web.trace(marked(tcp(H2, H1, 40000, 80), INSPECT_OUT), EST)
    assert t.out_ports == [H1[2]], "the peer's own inspection is not H1's business"


# ------------------------------------------------------------ transition
def test_transition_lets_one_way_udp_of_the_personality_through(web_transition):
    zone_t = web_transition
    t = zone_t.trace(marked(udp(H2, H1, 5000, 9999), C_IN), NEW)
    assert t.out_ports == [H1[2]] and not t.committed, t
    t = zone_t.trace(marked(udp(H1, H2, 6000, 9999), C_OUT), NEW)
    assert t.out_ports == [H2[2]], t
    for packet, other in ((udp(H2, H1, 5000, 9999), C_OUT), (udp(H1, H2, 6000, 9999), C_IN)):
        assert zone_t.trace(marked(packet, 0), NEW).dropped      # not committed: refused
        assert zone_t.trace(marked(packet, other), NEW).dropped  # not by this direction


def test_transition_keeps_inspecting(web_transition):
    t = web_transition.trace(marked(tcp(H2, H1, 40000, 80), INSPECT), EST)
    assert "controller(" in t.passes[-1], t
    assert web_transition.trace(marked(tcp(H2, H1, 40000, 80), DENIED), EST).dropped


# ------------------------------------------------------------- read-back
def _readback(make_bridge, version: int, flows) -> None:
    bridge = make_bridge(ports=2)
    with OFSession(bridge.name, version) as of:
        of.barrier([ofcodec.flow_add(of.dp, f) for f in flows])
        back = {f.key: f for f in (ofcodec.decode_flow(of.dp, s) for s in
                                   of.flow_stats(*cookies.hub_mask()))}
    want = {f.key: f for f in flows}
    assert set(back) == set(want)
    for key, spec in want.items():
        assert back[key] == spec, (spec, back[key])


@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_flows_read_back_exactly(make_bridge, version):
    policy = PersonalityPolicy.from_body("web", {**WEB, "dns_servers": [H2[1]]}, revision=1)
    dpid = 0xB5 << 40 | 0x77
    iface = Interface(dpid, H1[2], H1[0])
    c = cookies.make(cookies.Feature.PERSONALITY, "mark-test")
    masked = [  # a masked mark is written as reg_load2, with and without nat
        flow(3, 7, {"eth_type": 0x0800, "ct_mark": (0x2, 0x6), "ct_state": (0x21, 0x21)},
             [Conntrack(commit=True, zone=9, mark=0x4, mark_mask=0x6, table=4)], cookie=c),
        flow(3, 8, {"eth_type": 0x0800, "ct_mark": 0x5},
             [Conntrack(commit=True, zone=9, mark=0x2, mark_mask=0x6,
                        nat=Nat(dst="10.0.9.9", dst_port=53)), Output(1)], cookie=c),
    ]
    personality = list(compile_personality(iface, policy, 3, CTX))
    assert any(isinstance(a, Conntrack) and a.mark is not None and a.nat is not None
               for f in personality for a in f.actions), "DNS redirect: mark and nat"
    _readback(make_bridge, version, personality + masked)
    _readback(make_bridge, version, list(compile_transition(iface, policy, 4, CTX)))
