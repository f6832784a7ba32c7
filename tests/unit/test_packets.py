"""The controller's own packet codec: Ethernet, ARP, IPv4, VLAN, LLDP."""
from __future__ import annotations

import random
import socket
import struct

import pytest

from controller import packets
from controller.packets import (BROADCAST, ETH_ARP, ETH_IPV4, ETH_LLDP, ETH_VLAN, LLDP_MULTICAST,
                                arp_request, lldp_frame, mac_bytes, mac_str, parse)

A = "00:00:00:00:00:0a"
B = "00:00:00:00:00:0b"


def eth(dst: str, src: str, eth_type: int) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", eth_type)


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return (struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op) + mac_bytes(sha) + socket.inet_aton(spa)
            + mac_bytes(tha) + socket.inet_aton(tpa))


def ipv4(src: str, dst: str, proto: int = 1) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + b"\x08\x00" + b"\x00" * 6


def test_mac_helpers():
    assert mac_bytes("AA:bb:00:01:02:ff") == b"\xaa\xbb\x00\x01\x02\xff"
    assert mac_str(b"\xaa\xbb\x00\x01\x02\xff") == "aa:bb:00:01:02:ff"


def test_arp_request():
    p = parse(eth(BROADCAST, A, ETH_ARP) + arp(1, A, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2"))
    assert p == packets.Packet(A, BROADCAST, ETH_ARP, arp_op=1, arp_spa="10.0.0.1",
                               arp_tpa="10.0.0.2")
    assert p.sender_ip == "10.0.0.1"
    assert p.unicast_src


def test_arp_reply():
    p = parse(eth(B, A, ETH_ARP) + arp(2, A, "10.0.0.1", B, "10.0.0.2") + b"\x00" * 18)
    assert (p.eth_src, p.eth_dst, p.arp_op, p.arp_spa, p.arp_tpa) == \
        (A, B, 2, "10.0.0.1", "10.0.0.2")
    assert p.ip_src is None and p.lldp_dpid is None


def test_arp_probe_has_no_sender_ip():
    p = parse(eth(BROADCAST, A, ETH_ARP) + arp(1, A, "0.0.0.0", "00:00:00:00:00:00", "10.0.0.2"))
    assert p.arp_spa == "0.0.0.0"
    assert p.sender_ip is None


def test_ipv4():
    p = parse(eth(B, A, ETH_IPV4) + ipv4("10.0.1.5", "10.0.2.6"))
    assert (p.eth_type, p.ip_src, p.ip_dst) == (ETH_IPV4, "10.0.1.5", "10.0.2.6")
    assert p.sender_ip == "10.0.1.5"
    assert p.arp_op is None


def test_vlan_tagged():
    tag = struct.pack("!HH", ETH_VLAN, 100)
    frame = mac_bytes(B) + mac_bytes(A) + tag + struct.pack("!H", ETH_IPV4) + ipv4("1.2.3.4", "5.6.7.8")
    p = parse(frame)
    assert (p.eth_type, p.ip_src, p.ip_dst) == (ETH_IPV4, "1.2.3.4", "5.6.7.8")
    frame = mac_bytes(BROADCAST) + mac_bytes(A) + tag + struct.pack("!H", ETH_ARP) + \
        arp(1, A, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.9")
    p = parse(frame)
    assert (p.eth_type, p.arp_op, p.arp_tpa) == (ETH_ARP, 1, "10.0.0.9")


def test_multicast_source_is_not_unicast():
    p = parse(eth(B, "01:00:5e:00:00:01", 0x86DD))
    assert p == packets.Packet("01:00:5e:00:00:01", B, 0x86DD)
    assert not p.unicast_src


@pytest.mark.parametrize("dpid,port", [(1, 1), (0x0000_0000_0000_abcd, 65000),
                                       ((1 << 64) - 1, 0xFFFFFF00 - 1)])
def test_lldp_roundtrip(dpid, port):
    frame = lldp_frame(dpid, port, "02:b5:00:00:00:01")
    assert frame[:6] == mac_bytes(LLDP_MULTICAST)
    p = parse(frame)
    assert (p.eth_type, p.eth_src, p.eth_dst) == (ETH_LLDP, "02:b5:00:00:00:01", LLDP_MULTICAST)
    assert (p.lldp_dpid, p.lldp_port) == (dpid, port)
    assert p.sender_ip is None


def test_lldp_from_another_agent_has_no_ids():
    # chassis id as a MAC address (subtype 4), port id as interface name (subtype 5)
    body = (packets._tlv(1, b"\x04" + mac_bytes(A)) + packets._tlv(2, b"\x05eth0")
            + packets._tlv(3, b"\x00\x78") + packets._tlv(0, b""))
    p = parse(eth(LLDP_MULTICAST, A, ETH_LLDP) + body)
    assert (p.lldp_dpid, p.lldp_port) == (None, None)


def test_lldp_with_garbage_ids_does_not_raise():
    body = packets._tlv(1, b"\x07dpid:zz") + packets._tlv(2, b"\x07\xff\xfe") + packets._tlv(0, b"")
    p = parse(eth(LLDP_MULTICAST, A, ETH_LLDP) + body)
    assert (p.lldp_dpid, p.lldp_port) == (None, None)


def test_truncated_lldp_never_yields_wrong_ids():
    frame = lldp_frame(0x1234, 123, "02:b5:00:00:00:01")
    for n in range(len(frame)):
        p = parse(frame[:n])
        if p is None:
            assert n < 14
            continue
        assert p.lldp_dpid in (None, 0x1234), n
        assert p.lldp_port in (None, 123), n


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 13])
def test_too_short_is_none(data):
    assert parse(data) is None


def test_truncated_arp_and_ipv4_have_no_fields():
    full = eth(BROADCAST, A, ETH_ARP) + arp(1, A, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2")
    p = parse(full[:14 + 27])
    assert (p.eth_type, p.arp_op, p.arp_spa, p.arp_tpa) == (ETH_ARP, None, None, None)
    p = parse((eth(B, A, ETH_IPV4) + ipv4("1.1.1.1", "2.2.2.2"))[:14 + 19])
    assert (p.eth_type, p.ip_src, p.ip_dst) == (ETH_IPV4, None, None)
    p = parse(mac_bytes(B) + mac_bytes(A) + struct.pack("!H", ETH_VLAN) + b"\x00")
    assert p.eth_type == ETH_VLAN


def test_garbage_never_raises():
    rng = random.Random(1234)
    for _ in range(3000):
        n = rng.randrange(0, 80)
        data = bytes(rng.randrange(256) for _ in range(n))
        if n >= 14 and rng.random() < 0.5:  # steer toward the interesting ethertypes
            data = data[:12] + struct.pack("!H", rng.choice([ETH_ARP, ETH_IPV4, ETH_LLDP, ETH_VLAN])) + data[14:]
        p = parse(data)
        assert p is None or isinstance(p, packets.Packet)


def test_arp_request_layout():
    frame = arp_request("02:b5:00:00:00:01", "10.0.1.1", "10.0.1.99")
    assert len(frame) == 14 + 28
    assert frame[0:6] == b"\xff" * 6
    assert frame[6:12] == mac_bytes("02:b5:00:00:00:01")
    assert frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac_bytes("02:b5:00:00:00:01")
    assert frame[28:32] == socket.inet_aton("10.0.1.1")
    assert frame[32:38] == b"\x00" * 6
    assert frame[38:42] == socket.inet_aton("10.0.1.99")
    p = parse(frame)
    assert (p.eth_dst, p.arp_op, p.arp_spa, p.arp_tpa) == (BROADCAST, 1, "10.0.1.1", "10.0.1.99")
