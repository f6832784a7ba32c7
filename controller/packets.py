"""The few packets the controller reads and writes itself: Ethernet, ARP, IPv4, LLDP.

A small struct-based codec: packet-in is rare by design, but it must be cheap
and must never raise on garbage (a malformed packet parses to None fields).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ETH_LLDP = 0x88CC
ETH_VLAN = 0x8100
LLDP_MULTICAST = "01:80:c2:00:00:0e"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class Packet:
    eth_src: str
    eth_dst: str
    eth_type: int
    arp_op: int | None = None
    arp_spa: str | None = None
    arp_tpa: str | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    lldp_dpid: int | None = None
    lldp_port: int | None = None

    @property
    def sender_ip(self) -> str | None:
        ip = self.arp_spa if self.eth_type == ETH_ARP else self.ip_src
        return None if ip in (None, "0.0.0.0") else ip

    @property
    def unicast_src(self) -> bool:
        return not int(self.eth_src[:2], 16) & 1


def parse(data: bytes) -> Packet | None:
    if len(data) < 14:
        return None
    dst, src = mac_str(data[0:6]), mac_str(data[6:12])
    (eth_type,) = struct.unpack_from("!H", data, 12)
    off = 14
    if eth_type == ETH_VLAN and len(data) >= 18:
        (eth_type,) = struct.unpack_from("!H", data, 16)
        off = 18
    body = data[off:]
    if eth_type == ETH_ARP and len(body) >= 28:
        op = struct.unpack_from("!H", body, 6)[0]
        return Packet(src, dst, eth_type, arp_op=op,
                      arp_spa=socket.inet_ntoa(body[14:18]), arp_tpa=socket.inet_ntoa(body[24:28]))
    if eth_type == ETH_IPV4 and len(body) >= 20:
        return Packet(src, dst, eth_type, ip_src=socket.inet_ntoa(body[12:16]),
                      ip_dst=socket.inet_ntoa(body[16:20]))
    if eth_type == ETH_LLDP:
        dpid, port = _parse_lldp(body)
        return Packet(src, dst, eth_type, lldp_dpid=dpid, lldp_port=port)
    return Packet(src, dst, eth_type)


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    eth = mac_bytes(BROADCAST) + mac_bytes(src_mac) + struct.pack("!H", ETH_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, 1) + mac_bytes(src_mac) + \
        socket.inet_aton(src_ip) + b"\x00" * 6 + socket.inet_aton(target_ip)
    return eth + arp


# LLDP: chassis id "dpid:<16 hex>" (subtype 7, locally assigned), port id the
# port number as text (subtype 7), TTL.  Enough to identify both link ends.
def _tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!H", (tlv_type << 9) | len(value)) + value


def lldp_frame(dpid: int, port: int, src_mac: str) -> bytes:
    eth = mac_bytes(LLDP_MULTICAST) + mac_bytes(src_mac) + struct.pack("!H", ETH_LLDP)
    return eth + (_tlv(1, b"\x07" + f"dpid:{dpid:016x}".encode())
                  + _tlv(2, b"\x07" + str(port).encode())
                  + _tlv(3, struct.pack("!H", 120)) + _tlv(0, b""))


def _parse_lldp(body: bytes) -> tuple[int | None, int | None]:
    dpid = port = None
    off = 0
    try:
        while off + 2 <= len(body):
            (header,) = struct.unpack_from("!H", body, off)
            tlv_type, length = header >> 9, header & 0x1FF
            value = body[off + 2: off + 2 + length]
            off += 2 + length
            if tlv_type == 0 or len(value) < length:
                break  # end of LLDPDU, or a truncated TLV (never read a partial value)
            if tlv_type == 1 and value[1:6] == b"dpid:":
                dpid = int(value[6:].decode(), 16)
            elif tlv_type == 2 and value[:1] == b"\x07":
                port = int(value[1:].decode())
    except (ValueError, UnicodeDecodeError, struct.error):
        return None, None
    return dpid, port
