"""IDS_Signature_Scan in the shadow agent: the scanner fed segments directly (content,
pattern, split and out-of-order segments, once per connection, FIN/RST/idle, UDP),
frames parsed, the profile over a fake capture.  The capture and the profile on a
real veth pair: tests/trace/test_shadow_capture_trace.py."""
from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from controller.agents.shadow import feed
from controller.agents.shadow.capture import ACK, FIN, PSH, RST, SYN, Segment, parse_frame
from controller.agents.shadow.ids import IdsProfile, Scanner, Stream, rules_from
from controller.agents.shadow.profiles import PROFILES, ProfileContext
from controller.agents.shadow.protocol import FiveTuple
from tests.unit.shadowfakes import FakeCapture

CLIENT, SERVER = IPv4Address("10.0.0.9"), IPv4Address("10.0.0.5")
WALL = 1_700_000_000.0
SIGS = [{"id": "passwd", "content": "/etc/passwd", "severity": "high"},
        {"id": "cmd", "pattern": r"cmd=[a-z]+;", "severity": "critical"},
        {"id": "banner", "content": "SSH-1.0", "severity": "low"}]
C_ISN, S_ISN = 1000, 0xFFFFFFF0        # the server's wraps around 2**32


def scanner(sigs=SIGS, **kw) -> Scanner:
    return Scanner(rules_from({"signatures": sigs}), {SERVER}, lambda: WALL, **kw)


def seg(data=b"", seq=0, flags=ACK | PSH, back=False, sport=40000, client=CLIENT, **kw):
    """A segment of the client's connection to SERVER:80; `back`: the server's."""
    if back:
        return Segment("tcp", SERVER, 80, client, sport, flags, seq, data, **kw)
    return Segment("tcp", client, sport, SERVER, 80, flags, seq, data, **kw)


def handshake(sc: Scanner, sport=40000, now=0.0) -> None:
    assert sc.feed(seg(seq=C_ISN, flags=SYN, sport=sport), now) == []
    assert sc.feed(seg(seq=S_ISN, flags=SYN | ACK, back=True, sport=sport), now) == []


def client_data(sc, chunks, now=0.0, sport=40000):
    """Each chunk at its place in the client's stream (chunks: (offset, bytes))."""
    found = []
    for offset, data in chunks:
        found += sc.feed(seg(data, (C_ISN + 1 + offset) & 0xFFFFFFFF, sport=sport), now)
    return found


FIVE = FiveTuple("tcp", CLIENT, 40000, SERVER, 80)


# -- matching --------------------------------------------------------------------------

def test_a_content_match_is_a_finding_with_the_rule_severity_and_the_client_to_server_tuple():
    sc = scanner()
    handshake(sc)
    [found] = client_data(sc, [(0, b"GET /etc/passwd HTTP/1.1\r\n")])
    assert (found.profile, found.severity, found.five_tuple, found.at) == (
        "IDS_Signature_Scan", "high", FIVE, WALL)
    assert found.evidence == r"rule passwd (client->server): b'GET /etc/passwd HTTP/1.1\r\n'"
    assert found.to_json()["five_tuple"] == {"protocol": "tcp", "src": "10.0.0.9",
                                             "sport": 40000, "dst": "10.0.0.5", "dport": 80}


def test_a_pattern_match_and_severities_passed_through():
    sc = scanner()
    handshake(sc)
    found = client_data(sc, [(0, b"POST /x?cmd=whoami; and /etc/passwd")])
    assert sorted((f.evidence.split()[1], f.severity) for f in found) == [
        ("cmd", "critical"), ("passwd", "high")]
    [low] = sc.feed(seg(b"SSH-1.0-x", (S_ISN + 1) & 0xFFFFFFFF, back=True), 0.0)
    assert low.severity == "low" and low.five_tuple == FIVE       # still client -> server
    assert "(server->client)" in low.evidence


def test_a_signature_split_over_two_segments_matches_on_the_second():
    sc = scanner()
    handshake(sc)
    assert client_data(sc, [(0, b"GET /etc/pa")]) == []
    [found] = client_data(sc, [(11, b"sswd HTTP/1.1")])
    assert found.evidence == "rule passwd (client->server): b'GET /etc/passwd HTTP/1.1'"
    assert client_data(sc, [(24, b"x cmd=ls")]) == []
    assert [f.severity for f in client_data(sc, [(32, b"; y")])] == ["critical"]


def test_out_of_order_segments_are_put_back_in_sequence_order():
    sc = scanner()
    handshake(sc)
    assert client_data(sc, [(11, b"sswd"), (4, b"/etc/pa")]) == []    # bytes 0..3 missing
    [found] = client_data(sc, [(0, b"GET ")])
    assert "b'GET /etc/passwd'" in found.evidence
    # the same bytes in a wrong order are no match
    sc = scanner()
    handshake(sc)
    assert client_data(sc, [(0, b"sswd"), (4, b"/etc/pa")]) == []


def test_retransmitted_and_overlapping_segments_are_taken_once():
    sc = scanner([{"id": "aa", "content": "abcabc", "severity": "medium"}])
    handshake(sc)
    assert client_data(sc, [(0, b"xabc"), (0, b"xabc"), (1, b"abcab")]) == []  # stream: xabcab
    assert len(client_data(sc, [(6, b"c")])) == 1                               # xabcabc


def test_data_on_a_syn_follows_its_sequence_number():
    sc = scanner()
    assert sc.feed(seg(b"/etc/pa", C_ISN, flags=SYN), 0.0) == []       # TCP fast open
    assert len(client_data(sc, [(7, b"sswd")])) == 1


def test_each_signature_is_reported_once_per_connection():
    sc = scanner()
    handshake(sc)
    assert len(client_data(sc, [(0, b"/etc/passwd")])) == 1
    assert client_data(sc, [(11, b"/etc/passwd /etc/passwd")]) == []
    assert sc.feed(seg(b"/etc/passwd", (S_ISN + 1) & 0xFFFFFFFF, back=True), 0.0) == []
    handshake(sc, sport=40001)                                   # another connection
    [again] = client_data(sc, [(0, b"/etc/passwd")], sport=40001)
    assert again.five_tuple.sport == 40001


def test_fin_both_ways_or_a_rst_forgets_the_connection():
    sc = scanner()
    handshake(sc)
    assert len(client_data(sc, [(0, b"/etc/passwd")])) == 1
    sc.feed(seg(seq=C_ISN + 12, flags=FIN | ACK), 0.0)
    assert len(sc.connections) == 1                              # half closed
    sc.feed(seg(seq=S_ISN + 1, flags=FIN | ACK, back=True), 0.0)
    assert len(sc.connections) == 0
    assert sc.feed(seg(seq=C_ISN + 13), 0.0) == [] and len(sc.connections) == 0  # the last ACK
    handshake(sc)                                                # the same 5-tuple again
    assert len(client_data(sc, [(0, b"/etc/passwd")])) == 1
    sc.feed(seg(seq=S_ISN + 1, flags=RST, back=True), 0.0)
    assert len(sc.connections) == 0


def test_data_waiting_behind_a_gap_is_searched_when_the_connection_ends():
    sc = scanner()
    handshake(sc)
    assert client_data(sc, [(100, b"/etc/passwd")]) == []       # bytes 0..99 never come
    [found] = sc.feed(seg(seq=C_ISN + 1, flags=RST), 0.0)
    assert found.severity == "high" and len(sc.connections) == 0


def test_idle_connections_are_forgotten_after_60_s():
    sc = scanner()
    handshake(sc, now=0.0)
    handshake(sc, sport=40001, now=30.0)
    assert sc.expire(59.9) == [] and len(sc.connections) == 2
    assert sc.expire(60.0) == [] and [c.five_tuple.sport for c in sc.connections.values()] == [40001]
    assert sc.expire(90.0) == [] and len(sc.connections) == 0


def test_without_the_syn_the_production_address_is_the_server():
    sc = scanner()
    [found] = sc.feed(seg(b"SSH-1.0", 5000, back=True), 0.0)    # the server speaks first
    assert found.five_tuple == FIVE


def test_udp_datagrams_are_searched_one_by_one():
    sc = scanner()
    dgram = lambda data, sport=5353: Segment("udp", CLIENT, sport, SERVER, 53, payload=data)
    assert sc.feed(dgram(b"q /etc/pa"), 0.0) == []
    assert sc.feed(dgram(b"sswd"), 0.0) == []                    # no stream across datagrams
    [found] = sc.feed(dgram(b"q /etc/passwd"), 0.0)
    assert found.five_tuple == FiveTuple("udp", CLIENT, 5353, SERVER, 53)
    assert sc.feed(dgram(b"q /etc/passwd"), 0.0) == []           # once per flow
    assert len(sc.feed(dgram(b"q /etc/passwd", 5354), 0.0)) == 1
    assert len(sc.expire(61.0)) == 0 and len(sc.connections) == 0


def test_a_truncated_copy_leaves_a_hole_no_match_spans():
    sc = scanner()
    handshake(sc)
    # the mirror's snaplen cut the copy: 11 bytes captured of 30; the stream goes on after
    assert sc.feed(seg(b"GET /etc/pa", C_ISN + 1, length=30), 0.0) == []
    assert sc.feed(seg(b"sswd", C_ISN + 1 + 30), 0.0) == []        # across the hole: no match
    assert len(sc.feed(seg(b" /etc/passwd", C_ISN + 1 + 34), 0.0)) == 1   # after it: matches


def test_a_gap_is_given_up_once_the_window_is_full():
    stream = Stream(reach=3, window=10)
    stream.syn(99)
    assert stream.add(105, b"abcdef", 6) == []                   # 100..104 missing
    runs = stream.add(111, b"ghijk", 5)                          # 11 bytes held: give up
    assert [bytes(r.data[r.start:]) for r in runs] == [b"abcdef", b"ghijk"]
    assert stream.next == 116 and stream.held == 0
    assert stream.add(100, b"late!", 5) == []                    # before `next`: seen as old


def test_rules_are_checked_when_the_profile_starts():
    assert rules_from({}) == ()
    assert [r.content for r in rules_from({"signatures": [
        {"id": "u", "content": "é", "severity": "low"}]})] == ["é".encode()]
    for bad, why in [({"signatures": {}}, "not a list"),
                     ({"signatures": [{"content": "x", "severity": "low"}]}, "no id"),
                     ({"signatures": [{"id": "a", "content": "x", "severity": "bad"}]}, "severity"),
                     ({"signatures": [{"id": "a", "severity": "low"}]}, "exactly one"),
                     ({"signatures": [{"id": "a", "content": "x", "pattern": "y",
                                       "severity": "low"}]}, "exactly one"),
                     ({"signatures": [{"id": "a", "pattern": "(", "severity": "low"}]}, "pattern")]:
        with pytest.raises(ValueError, match=why):
            rules_from(bad)


# -- frames ----------------------------------------------------------------------------

def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def frame(payload=b"", proto=socket.IPPROTO_TCP, src=CLIENT, dst=SERVER, sport=40000, dport=80,
          seq=1234, flags=ACK | PSH, vlan=None, frag=0, pad=0, cut=None) -> bytes:
    if proto == socket.IPPROTO_TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                         src.packed, dst.packed)
    ip = header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + l4
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02"
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    data = eth + b"\x08\x00" + ip + b"\x00" * pad
    return data if cut is None else data[:cut]


def test_frames_are_parsed_into_segments():
    assert parse_frame(frame(b"hello", seq=7, flags=SYN | ACK, pad=20)) == Segment(
        "tcp", CLIENT, 40000, SERVER, 80, SYN | ACK, 7, b"hello", 5)
    assert parse_frame(frame(b"dns?", proto=socket.IPPROTO_UDP, vlan=5, sport=53, dport=99)) == \
        Segment("udp", CLIENT, 53, SERVER, 99, payload=b"dns?", length=4)
    cut = parse_frame(frame(b"0123456789", cut=14 + 20 + 20 + 4))  # a snaplen of 58
    assert (cut.payload, cut.size) == (b"0123", 10)
    assert parse_frame(frame(b"x", frag=100)) is None           # a later fragment
    assert parse_frame(frame(b"x", proto=1)) is None             # ICMP
    assert parse_frame(b"\xff" * 12 + b"\x86\xdd" + b"\x60" + b"\x00" * 60) is None   # IPv6
    assert parse_frame(frame(b"x")[:30]) is None


# -- the profile -----------------------------------------------------------------------

def context(interface="eth1", settings=None) -> ProfileContext:
    return ProfileContext("web-shadow-1", interface, (IPv4Interface(f"{SERVER}/24"),), None,
                          {"signatures": SIGS} if settings is None else settings, 812,
                          lambda: WALL)




def test_the_profile_is_registered_and_polls_its_capture():
    assert PROFILES["IDS_Signature_Scan"] is IdsProfile
    made = []
    profile = IdsProfile(lambda i: made.append(FakeCapture(i)) or made[-1], now=lambda: 5.0)
    profile.start(context())
    [capture] = made
    assert capture.interface == "eth1" and profile.poll() == []
    capture.waiting = [seg(seq=C_ISN, flags=SYN)] + [seg(b"x", C_ISN + 1 + i) for i in range(300)]
    capture.waiting.append(seg(b"/etc/passwd", C_ISN + 301))
    [found] = profile.poll()                                  # two reads of CHUNK frames
    assert found.five_tuple == FIVE and profile.lag_ms == 0.0
    profile.stop()
    assert capture.closed and profile.lag_ms == 0.0


def test_the_profile_stops_at_its_budget_and_reports_the_lag():
    clock = iter(range(0, 100, 1))
    made = []
    profile = IdsProfile(lambda i: made.append(FakeCapture(i)) or made[-1],
                         now=lambda: next(clock) * feed.BUDGET)
    profile.start(context())
    made[0].waiting = [seg(b"x", i, sport=1000 + i) for i in range(feed.CHUNK * 3)]
    profile.poll()                                 # one read: the clock says it took BUDGET
    assert len(made[0].waiting) == feed.CHUNK * 3 - feed.FIRST_READ and profile.lag_ms == 250.0


def test_bad_signatures_keep_the_profile_from_starting():
    with pytest.raises(ValueError, match="severity"):
        IdsProfile(FakeCapture).start(context(settings={"signatures": [
            {"id": "a", "content": "x", "severity": "urgent"}]}))
