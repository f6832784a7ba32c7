"""First-payload inspection: segments parsed from punted frames, verdicts pinned by
packet-out, and the hub's packet-in dispatch to it."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP, ICMP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from controller.features.personality.compile import Interface
from controller.features.personality.binding import Binding
from controller.features.personality.inspector import (MAX_CONNECTIONS, REMEMBER_SECONDS, Inspector,
                                           parse_segment)
from controller.pipeline import ctmark, tables
from controller.pipeline.actions import Conntrack

from tests.unit.hubtest import A, H1_IP, H1_MAC, run
from tests.unit.test_changes import IID, OPEN, make_lab

PEER_MAC, PEER_IP = "00:00:00:00:02:0a", "10.0.2.10"
IFACE = Interface(A, 2, H1_MAC)
ZONE = 4
APPS = {"allow": [{"name": "http", "protocol": "tcp", "port": 80,
                   "signature": "re:^(GET|POST|HEAD) "},
                  {"name": "quiz", "protocol": "udp", "port": 7000, "signature": "QUIZ"}],
        "deny": [{"name": "ssh-banner", "protocol": "tcp", "port": 80, "signature": "SSH-"}]}
BODY = {"name": "web", "ip_addresses": [H1_IP], "default_action": "allow",
        "application_access_policy": APPS}
EGRESS_FW, EGRESS_COUNT = tables.PERSONALITY_EGRESS_FW.id, tables.PERSONALITY_EGRESS_COUNT.id
INGRESS_FW, INGRESS_COUNT = tables.PERSONALITY_INGRESS_FW.id, tables.PERSONALITY_INGRESS_COUNT.id


def pinned(direction, verdict, table=None, zone=ZONE):
    """The re-commit of a verdict into the direction's own ct_mark field."""
    mark, mask = ctmark.commit(direction, verdict)
    return Conntrack(commit=True, zone=zone, table=table, mark=mark, mark_mask=mask)


ALLOWED_IN = pinned("ingress", ctmark.APP_ALLOWED, INGRESS_COUNT)
ALLOWED_OUT = pinned("egress", ctmark.APP_ALLOWED, EGRESS_COUNT)
DENIED = pinned("ingress", ctmark.APP_DENIED)       # connections opened toward the interface


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frame(macs, ips, payload, flags, sport, dport, proto) -> bytes:
    l4 = proto(sport=sport, dport=dport, flags=flags) if proto is TCP else \
        proto(sport=sport, dport=dport)
    pkt = Ether(src=macs[0], dst=macs[1]) / IP(src=ips[0], dst=ips[1]) / l4
    return bytes(pkt / Raw(payload) if payload else pkt)


def inbound(payload=b"", flags="A", sport=40000, dport=80, proto=TCP) -> bytes:
    """A packet from the peer to the interface (ingress), as punted after routing."""
    return _frame(("02:b5:00:00:00:01", H1_MAC), (PEER_IP, H1_IP), payload, flags, sport,
                  dport, proto)


def outbound(payload=b"", flags="A", sport=50000, dport=80, proto=TCP) -> bytes:
    """A packet the interface sends (egress)."""
    return _frame((H1_MAC, "02:b5:00:00:00:01"), (H1_IP, PEER_IP), payload, flags, sport,
                  dport, proto)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inspector(clock) -> Inspector:
    binding = Binding(IFACE, "web", 2, BODY, ZONE)
    return Inspector({IFACE.id: binding}, clock)


# ----------------------------------------------------------------- segments
def test_parse_segment_reads_ports_flags_and_payload():
    seg = parse_segment(inbound(b"GET / HTTP/1.1\r\n", flags="PA"))
    assert (seg.protocol, seg.src, seg.sport, seg.dst, seg.dport) == \
        ("tcp", PEER_IP, 40000, H1_IP, 80)
    assert seg.payload == b"GET / HTTP/1.1\r\n" and seg.tcp_flags == 0x18
    assert (seg.eth_src, seg.eth_dst) == ("02:b5:00:00:00:01", H1_MAC)
    assert parse_segment(inbound()).payload == b""
    udp = parse_segment(outbound(b"QUIZ", proto=UDP, dport=7000))
    assert (udp.protocol, udp.dport, udp.payload) == ("udp", 7000, b"QUIZ")


def test_parse_segment_handles_options_vlan_and_padding():
    opts = Ether(dst=H1_MAC) / IP(src=PEER_IP, dst=H1_IP, options=[b"\x01\x01\x01\x00"]) / \
        TCP(dport=80, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]) / Raw(b"HEAD /")
    assert parse_segment(bytes(opts)).payload == b"HEAD /"
    tagged = Ether(dst=H1_MAC) / Dot1Q(vlan=5) / IP(src=PEER_IP, dst=H1_IP) / UDP(dport=9) / \
        Raw(b"x")
    assert parse_segment(bytes(tagged)).payload == b"x"
    # Ethernet padding of a short frame is not payload (IP total length bounds it)
    short = bytes(Ether(dst=H1_MAC) / IP(src=PEER_IP, dst=H1_IP) / TCP(dport=80, flags="A"))
    assert parse_segment(short + bytes(12)).payload == b""


@pytest.mark.parametrize("frame", [
    b"", b"\x00" * 20,
    bytes(Ether() / IP(src=PEER_IP, dst=H1_IP) / ICMP()),
    bytes(Ether() / IP(src=PEER_IP, dst=H1_IP, frag=10) / Raw(b"x" * 20)),   # non-first fragment
    bytes(Ether() / IP(src=PEER_IP, dst=H1_IP) / TCP(dport=80) / Raw(b"GET /"))[:40],  # truncated
    bytes(Ether(type=0x86DD) / Raw(b"x" * 60)),
])
def test_parse_segment_refuses_what_it_cannot_key(frame):
    assert parse_segment(frame) is None


# ------------------------------------------------------------------ verdicts
def test_http_request_in_is_allowed_and_pinned(inspector):
    out = inspector.on_packet_in(A, INGRESS_FW, 1, inbound(b"GET / HTTP/1.1\r\n", "PA"))
    assert out.actions == (ALLOWED_IN,)
    assert ALLOWED_IN.mark == 0x28 and ALLOWED_IN.mark_mask == 0x38
    assert (out.dpid, out.in_port) == (A, 1) and out.data.endswith(b"GET / HTTP/1.1\r\n")
    assert inspector.verdicts == {"allow": 1, "deny": 0}


def test_other_payload_on_80_is_denied_and_goes_nowhere(inspector):
    for payload in (b"hello\n", b"SSH-2.0-OpenSSH_9.2\r\n"):
        out = inspector.on_packet_in(A, INGRESS_FW, 1, inbound(payload, "PA", sport=len(payload)))
        assert out.actions == (DENIED,), payload
    assert inspector.verdicts == {"allow": 0, "deny": 2}


def test_handshake_ack_goes_on_then_payload_decides(inspector):
    out = inspector.on_packet_in(A, EGRESS_FW, 2, outbound())
    assert out.actions == (Conntrack(zone=ZONE, table=EGRESS_COUNT),), "sent on, still inspected"
    out = inspector.on_packet_in(A, EGRESS_FW, 2, outbound(b"POST /x HTTP/1.1", "PA"))
    assert out.actions == (ALLOWED_OUT,)
    assert ALLOWED_OUT.mark == 0x5 and ALLOWED_OUT.mark_mask == 0x7


def test_verdict_is_remembered_for_packets_punted_before_the_pin(inspector, clock):
    inspector.on_packet_in(A, INGRESS_FW, 1, inbound(b"hello", "PA"))
    clock.now += 1
    # a later segment of the same connection, and an empty one: the same verdict
    assert inspector.on_packet_in(A, INGRESS_FW, 1, inbound(b"GET / ", "PA")).actions == (DENIED,)
    assert inspector.on_packet_in(A, INGRESS_FW, 1, inbound()).actions == (DENIED,)
    assert inspector.verdicts["deny"] == 1
    # another connection (other source port) is judged on its own
    other = inspector.on_packet_in(A, INGRESS_FW, 1, inbound(b"GET / ", "PA", sport=40001))
    assert other.actions == (ALLOWED_IN,)


def test_no_payload_in_a_few_packets_takes_the_fallback(inspector):
    for _ in range(3):
        assert inspector.on_packet_in(A, INGRESS_FW, 1, inbound()).actions == \
            (Conntrack(zone=ZONE, table=INGRESS_COUNT),)
    # a reset is sent on without counting
    assert inspector.on_packet_in(A, INGRESS_FW, 1, inbound(flags="R")).actions == \
        (Conntrack(zone=ZONE, table=INGRESS_COUNT),)
    # the fourth empty packet: tcp/80 admits only http, so the fallback is deny
    assert inspector.on_packet_in(A, INGRESS_FW, 1, inbound()).actions == (DENIED,)


def test_first_udp_packet_is_the_payload(inspector):
    ok = inspector.on_packet_in(A, EGRESS_COUNT, 2, outbound(b"QUIZ 42", proto=UDP, dport=7000))
    assert ok.actions == (ALLOWED_OUT,)
    bad = inspector.on_packet_in(A, INGRESS_COUNT, 1, inbound(b"quiz", proto=UDP, dport=7000))
    assert bad.actions == (DENIED,)


def test_packets_of_no_interface_are_dropped(inspector):
    assert inspector.on_packet_in(A, EGRESS_FW, 3, outbound(b"GET /")) is None     # other port
    assert inspector.on_packet_in(A + 1, EGRESS_FW, 2, outbound(b"GET /")) is None  # other switch
    stranger = inbound(b"GET /").replace(bytes.fromhex(H1_MAC.replace(":", "")), b"\x02" * 6, 1)
    assert inspector.on_packet_in(A, INGRESS_FW, 1, stranger) is None
    assert inspector.on_packet_in(A, tables.L2.id, 1, inbound(b"GET /")) is None   # not ours
    icmp = bytes(Ether(dst=H1_MAC) / IP(src=PEER_IP, dst=H1_IP) / ICMP())
    assert inspector.on_packet_in(A, INGRESS_FW, 1, icmp) is None
    assert not inspector.connections


def test_a_port_the_policy_no_longer_names_is_left_to_the_firewall(inspector):
    out = inspector.on_packet_in(A, INGRESS_FW, 1, inbound(b"anything", dport=8080))
    assert out.actions == (ALLOWED_IN,)


def test_memory_is_bounded_in_time_and_size(inspector, clock):
    inspector.on_packet_in(A, INGRESS_FW, 1, inbound())
    assert len(inspector.connections) == 1
    clock.now += REMEMBER_SECONDS + 1
    inspector.on_packet_in(A, INGRESS_FW, 1, inbound(sport=1))
    assert [k[4] for k in inspector.connections] == [1], "the silent one is forgotten"
    frame = inbound(sport=0)
    sport_at = frame.index(bytes.fromhex("00000050"))      # TCP ports 0 -> 80
    for sport in range(2, MAX_CONNECTIONS + 10):
        data = frame[:sport_at] + sport.to_bytes(2, "big") + frame[sport_at + 2:]
        inspector.on_packet_in(A, INGRESS_FW, 1, data)
    assert len(inspector.connections) == MAX_CONNECTIONS


# --------------------------------------------------------- through the hub
def test_hub_switches_to_an_application_policy_and_answers_punts():
    lab = make_lab()
    lab.store.put("personality", "web", BODY)
    op = lab.switch("web")
    assert lab.op(op)["state"] == "succeeded", lab.op(op)["log"]
    binding = lab.bindings[IID]
    punts = [f for f in lab.a.flows.values() if f.priority == 64500]
    assert {f.table for f in punts} == {EGRESS_FW, INGRESS_FW}
    before = len(lab.a.sent)
    lab.hub.packet_in(A, INGRESS_FW, 1, inbound(b"SSH-2.0-x\r\n", "PA"))
    lab.hub.packet_in(A, EGRESS_FW, 2, outbound(b"GET / HTTP/1.0\r\n", "PA"))
    run(lab.hub)
    sent = lab.a.sent[before:]
    zone = binding.zone
    assert [(actions, in_port) for _, actions, in_port in sent] == [
        ([pinned("ingress", ctmark.APP_DENIED, zone=zone)], 1),
        ([pinned("egress", ctmark.APP_ALLOWED, EGRESS_COUNT, zone=zone)], 2)]
    # back to a personality without the policy: its flows go, punts are no longer answered
    lab.store.put("personality", "open", OPEN)
    assert lab.op(lab.switch("open", drain={"max_seconds": 0}))["state"] == "succeeded"
    assert not [f for f in lab.a.flows.values() if f.priority == 64500]
