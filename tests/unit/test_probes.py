"""Data-plane probes: frames checked with scapy, replies recognised precisely."""
from __future__ import annotations

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from controller.probes import (
    Probe,
    checksum,
    dns_name,
    dns_probe,
    ping_probe,
    tcp_probe,
    tcp_reset,
)

HOST_MAC = "00:00:00:00:01:0a"
HOST_IP = "10.0.1.10"
GW_MAC = "00:00:00:00:fe:01"
PEER_IP = "10.0.2.20"
DNS_IP = "10.0.1.3"


def checksums_ok(frame: bytes) -> Ether:
    """Parse ``frame`` and assert every checksum equals scapy's recomputation."""
    pkt = Ether(frame)
    fresh = Ether(frame)
    del fresh[IP].chksum
    for layer in (ICMP, UDP, TCP):
        if fresh.haslayer(layer):
            del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    assert pkt[IP].chksum == fresh[IP].chksum
    for layer in (ICMP, UDP, TCP):
        if pkt.haslayer(layer):
            assert pkt[layer].chksum == fresh[layer].chksum, layer.__name__
    return pkt


def reply_frame(*layers) -> bytes:
    pkt = Ether(src=GW_MAC, dst=HOST_MAC)
    for layer in layers:
        pkt = pkt / layer
    return bytes(pkt)


def assert_match_agrees(probe: Probe, frame: bytes) -> None:
    """Every reply_match field holds for ``frame`` (what OVS would match on)."""
    pkt = Ether(frame)
    values = {"eth_dst": pkt.dst, "eth_type": pkt.type, "ip_proto": pkt[IP].proto,
              "ipv4_src": pkt[IP].src, "ipv4_dst": pkt[IP].dst}
    if pkt.haslayer(ICMP):
        values["icmpv4_type"] = pkt[ICMP].type
    if pkt.haslayer(UDP):
        values.update(udp_src=pkt[UDP].sport, udp_dst=pkt[UDP].dport)
    if pkt.haslayer(TCP):
        values.update(tcp_src=pkt[TCP].sport, tcp_dst=pkt[TCP].dport)
    for field, want in probe.reply_match.items():
        assert values[field] == want, field


def test_checksum_rfc1071_example():
    # RFC 1071 section 3 example: sum 0xddf2, checksum its complement
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF & ~0xDDF2
    assert checksum(b"\x01") == 0xFFFF & ~0x0100


def test_dns_name():
    assert dns_name("a.bc.") == b"\x01a\x02bc\x00"
    assert dns_name("a.bc") == b"\x01a\x02bc\x00"
    assert dns_name(".") == b"\x00"
    with pytest.raises(ValueError):
        dns_name("x" * 64 + ".example.")
    with pytest.raises(ValueError):
        dns_name("a..b.")


# -- ping --------------------------------------------------------------------

def test_ping_probe_frame():
    probe = ping_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, ident=0x1234, seq=7)
    assert probe.kind == "ping"
    pkt = checksums_ok(probe.frame)
    assert (pkt.src, pkt.dst, pkt.type) == (HOST_MAC, GW_MAC, 0x0800)
    ip = pkt[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.version, ip.ihl) == (HOST_IP, PEER_IP, 64, 1, 4, 5)
    assert ip.flags == "DF" and ip.frag == 0 and ip.len == len(probe.frame) - 14
    assert (pkt[ICMP].type, pkt[ICMP].code, pkt[ICMP].id, pkt[ICMP].seq) == (8, 0, 0x1234, 7)
    assert probe.reply_match == {"eth_dst": HOST_MAC, "eth_type": 0x0800, "ip_proto": 1,
                                 "ipv4_src": PEER_IP, "ipv4_dst": HOST_IP, "icmpv4_type": 0}


def test_ping_reply_recognised():
    probe = ping_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, ident=0x1234, seq=7)
    good = reply_frame(IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=0x1234, seq=7) / (b"x" * 4))
    assert probe.is_reply(good)
    assert_match_agrees(probe, good)
    # the reply as a reflecting host sends it: the request with type 0
    echoed = Ether(probe.frame)
    echoed = reply_frame(IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=echoed[ICMP].id,
                                                            seq=echoed[ICMP].seq)
                         / bytes(echoed[ICMP].payload))
    assert probe.is_reply(echoed)
    # padded to the Ethernet minimum, VLAN tagged: still a reply
    assert probe.is_reply(good + b"\x00" * 20)
    tagged = bytes(Ether(src=GW_MAC, dst=HOST_MAC) / Dot1Q(vlan=5) / IP(src=PEER_IP, dst=HOST_IP)
                   / ICMP(type=0, id=0x1234, seq=7))
    assert probe.is_reply(tagged)


@pytest.mark.parametrize("layers", [
    (IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=0x1235, seq=7)),    # other id
    (IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=0x1234, seq=8)),    # other seq
    (IP(src=PEER_IP, dst=HOST_IP), ICMP(type=8, id=0x1234, seq=7)),    # a request
    (IP(src=PEER_IP, dst=HOST_IP), ICMP(type=3, code=3)),              # unreachable
    (IP(src="10.0.2.21", dst=HOST_IP), ICMP(type=0, id=0x1234, seq=7)),  # other peer
    (IP(src=PEER_IP, dst="10.0.1.11"), ICMP(type=0, id=0x1234, seq=7)),  # other host
    (IP(src=PEER_IP, dst=HOST_IP, flags="MF"), ICMP(type=0, id=0x1234, seq=7)),  # fragment
])
def test_ping_non_replies(layers):
    probe = ping_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, ident=0x1234, seq=7)
    assert not probe.is_reply(reply_frame(*layers))
    assert not probe.refused(reply_frame(*layers))


def test_garbage_is_never_a_reply():
    probe = ping_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, ident=1, seq=1)
    good = reply_frame(IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=1, seq=1))
    for n in range(len(good)):
        assert not probe.is_reply(good[:n])  # every truncation, never raising
    assert not probe.is_reply(b"")
    assert not probe.is_reply(bytes(Ether(src=GW_MAC, dst="00:00:00:00:01:0b")
                                    / IP(src=PEER_IP, dst=HOST_IP) / ICMP(type=0, id=1, seq=1)))


# -- dns ---------------------------------------------------------------------

def test_dns_probe_frame():
    probe = dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, sport=40001, query_id=0xBEEF)
    assert probe.kind == "dns"
    pkt = checksums_ok(probe.frame)
    assert pkt[UDP].chksum != 0
    assert (pkt.src, pkt.dst) == (HOST_MAC, GW_MAC)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl, pkt[IP].flags) == (HOST_IP, DNS_IP, 64, "DF")
    assert (pkt[UDP].sport, pkt[UDP].dport, pkt[UDP].len) == (40001, 53, len(pkt[UDP]))
    dns = pkt[DNS]
    assert (dns.id, dns.qr, dns.opcode, dns.rd, dns.qdcount, dns.ancount) == (0xBEEF, 0, 0, 1, 1, 0)
    assert (dns.qd[0].qname, dns.qd[0].qtype, dns.qd[0].qclass) == (
        b"hubshift-health.example.", 1, 1)
    assert probe.reply_match == {"eth_dst": HOST_MAC, "eth_type": 0x0800, "ip_proto": 17,
                                 "ipv4_src": DNS_IP, "ipv4_dst": HOST_IP,
                                 "udp_src": 53, "udp_dst": 40001}


def test_dns_probe_custom_name():
    probe = dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, 40001, 1, name="www.example.org")
    assert Ether(probe.frame)[DNS].qd[0].qname == b"www.example.org."


def dns_reply(query_id: int, rcode: int = 0, sport: int = 53, dport: int = 40001,
              qr: int = 1, src: str = DNS_IP) -> bytes:
    an = DNSRR(rrname="hubshift-health.example.", type="A", ttl=5, rdata="192.0.2.10") \
        if rcode == 0 else []
    return reply_frame(IP(src=src, dst=HOST_IP), UDP(sport=sport, dport=dport),
                       DNS(id=query_id, qr=qr, rd=1, ra=1, rcode=rcode,
                           qd=DNSQR(qname="hubshift-health.example."), an=an))


def test_dns_reply_recognised():
    probe = dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, sport=40001, query_id=0xBEEF)
    good = dns_reply(0xBEEF)
    assert probe.is_reply(good)
    assert probe.is_reply(good + b"\x00" * 8)  # trailing padding
    assert probe.is_reply(dns_reply(0xBEEF, rcode=3))  # NXDOMAIN is an answer
    assert probe.is_reply(dns_reply(0xBEEF, rcode=5))  # so is REFUSED
    assert_match_agrees(probe, good)
    assert not probe.refused(good)


@pytest.mark.parametrize("kwargs", [
    {"query_id": 0xBEEE},              # other query id
    {"query_id": 0xBEEF, "dport": 40002},  # other port
    {"query_id": 0xBEEF, "sport": 5353},   # not from port 53
    {"query_id": 0xBEEF, "qr": 0},         # a query, not a response
    {"query_id": 0xBEEF, "src": "10.0.1.4"},  # another server
])
def test_dns_non_replies(kwargs):
    probe = dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, sport=40001, query_id=0xBEEF)
    assert not probe.is_reply(dns_reply(**kwargs))


def test_dns_truncated_payload_not_a_reply():
    probe = dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, sport=40001, query_id=0xBEEF)
    short = reply_frame(IP(src=DNS_IP, dst=HOST_IP), UDP(sport=53, dport=40001) / b"\xbe\xef\x80")
    assert not probe.is_reply(short)


# -- tcp ---------------------------------------------------------------------

ISN = 0xFFFFFFFF  # the ack wraps to 0: checked modulo 2**32


def test_tcp_probe_frame():
    probe = tcp_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, dst_port=443, sport=40002, isn=ISN)
    assert probe.kind == "tcp"
    pkt = checksums_ok(probe.frame)
    assert (pkt.src, pkt.dst) == (HOST_MAC, GW_MAC)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl, pkt[IP].flags, pkt[IP].proto) == (
        HOST_IP, PEER_IP, 64, "DF", 6)
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags) == (40002, 443, ISN, 0, "S")
    assert tcp.window > 0 and ("MSS", 1460) in tcp.options
    assert probe.reply_match == {"eth_dst": HOST_MAC, "eth_type": 0x0800, "ip_proto": 6,
                                 "ipv4_src": PEER_IP, "ipv4_dst": HOST_IP,
                                 "tcp_src": 443, "tcp_dst": 40002}


def tcp_answer(flags: str, ack: int = (ISN + 1) & 0xFFFFFFFF, sport: int = 443,
               dport: int = 40002) -> bytes:
    return reply_frame(IP(src=PEER_IP, dst=HOST_IP),
                       TCP(sport=sport, dport=dport, seq=1000, ack=ack, flags=flags))


def test_tcp_syn_ack_and_rst():
    probe = tcp_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, dst_port=443, sport=40002, isn=ISN)
    syn_ack = tcp_answer("SA")
    assert probe.is_reply(syn_ack) and not probe.refused(syn_ack)
    assert probe.is_reply(syn_ack + b"\x00" * 6)  # 54-byte frame padded to 60
    assert_match_agrees(probe, syn_ack)
    rst = tcp_answer("RA")
    assert probe.refused(rst) and not probe.is_reply(rst)
    assert_match_agrees(probe, rst)


@pytest.mark.parametrize("frame", [
    tcp_answer("SA", ack=ISN),          # acknowledges something else
    tcp_answer("SA", ack=1),
    tcp_answer("SA", sport=444),        # other port
    tcp_answer("SA", dport=40003),
    tcp_answer("S"),                    # simultaneous open, no ACK
    tcp_answer("A"),
    tcp_answer("SAR"),
])
def test_tcp_non_replies(frame):
    probe = tcp_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, dst_port=443, sport=40002, isn=ISN)
    assert not probe.is_reply(frame)


def test_tcp_rst_for_someone_else_is_not_refused():
    probe = tcp_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, dst_port=443, sport=40002, isn=ISN)
    assert not probe.refused(tcp_answer("RA", ack=5))
    assert not probe.refused(tcp_answer("RA", dport=40003))
    assert not probe.refused(tcp_answer("R", ack=0))


def test_tcp_reset():
    frame = tcp_reset(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, sport=40002, dport=443, seq=ISN + 1)
    pkt = checksums_ok(frame)
    assert (pkt.src, pkt.dst, pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (
        HOST_MAC, GW_MAC, HOST_IP, PEER_IP, 64)
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].flags) == (40002, 443, 0, "R")


def test_builders_reject_out_of_range():
    with pytest.raises(ValueError):
        ping_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, ident=1 << 16, seq=0)
    with pytest.raises(ValueError):
        dns_probe(HOST_MAC, HOST_IP, GW_MAC, DNS_IP, sport=-1, query_id=0)
    with pytest.raises(ValueError):
        tcp_probe(HOST_MAC, HOST_IP, GW_MAC, PEER_IP, dst_port=80, sport=1, isn=1 << 32)


def test_upper_case_mac_normalised_in_match():
    probe = ping_probe(HOST_MAC.upper(), HOST_IP, GW_MAC, PEER_IP, ident=1, seq=1)
    assert probe.reply_match["eth_dst"] == HOST_MAC
    assert probe.is_reply(reply_frame(IP(src=PEER_IP, dst=HOST_IP), ICMP(type=0, id=1, seq=1)))
