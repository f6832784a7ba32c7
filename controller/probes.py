"""Data-plane health probes: frames injected as if an interface's host sent them.

The controller packet-outs a probe with in_port = the host's port; the switch
pipeline forwards it like any packet from that host, and a temporary flow
matching ``Probe.reply_match`` punts the answer back.  ``Probe.is_reply`` then
checks the punted frame really is the answer to this very probe (ICMP id/seq,
DNS query id, TCP ISN+1), so a stray packet that happens to hit the flow never
counts as success.

Pure struct code like ``controller.packets``; parsing never raises on garbage.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from controller.packets import ETH_IPV4, ETH_VLAN, mac_bytes, mac_str

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
DNS_PORT = 53
DNS_QTYPE_A = 1
DNS_CLASS_IN = 1
DEFAULT_DNS_NAME = "hubshift-health.example."
TTL = 64
IP_DF = 0x4000
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_MSS = 1460
TCP_WINDOW = 64240
PING_PAYLOAD = b"hubshift-probe".ljust(32, b".")


# -- checksums and headers ---------------------------------------------------

def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src_ip: str, dst_ip: str, proto: int, length: int) -> bytes:
    return socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack("!BBH", 0, proto, length)


def _ethernet(src_mac: str, dst_mac: str) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_IPV4)


def _ipv4(src_ip: str, dst_ip: str, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, IP_DF, TTL,
                         proto, 0, socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def _udp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(_pseudo_header(src_ip, dst_ip, PROTO_UDP, length) + segment) or 0xFFFF
    return segment[:6] + struct.pack("!H", csum) + segment[8:]


def _tcp(src_ip: str, dst_ip: str, sport: int, dport: int, seq: int, ack: int, flags: int,
         window: int, options: bytes = b"") -> bytes:
    assert len(options) % 4 == 0
    offset = (20 + len(options)) // 4
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0) \
        + options
    csum = checksum(_pseudo_header(src_ip, dst_ip, PROTO_TCP, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def _check(name: str, value: int, bits: int) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} {value} is not a {bits}-bit unsigned value")
    return value


def dns_name(name: str) -> bytes:
    """Wire form of a domain name ("a.b." or "a.b"; "." is the root)."""
    labels = name.rstrip(".").split(".") if name.strip(".") else []
    out = b""
    for label in labels:
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return out


# -- the probe ---------------------------------------------------------------

@dataclass(frozen=True)
class _Reply:
    """The parts of a punted IPv4 frame a reply check needs."""
    eth_dst: str
    ip_src: str
    ip_dst: str
    proto: int
    l4: bytes  # the IP payload, cut to the IP total length (no Ethernet padding)


def _parse_ipv4(data: bytes) -> _Reply | None:
    if len(data) < 14:
        return None
    (eth_type,) = struct.unpack_from("!H", data, 12)
    off = 14
    if eth_type == ETH_VLAN and len(data) >= 18:
        (eth_type,) = struct.unpack_from("!H", data, 16)
        off = 18
    if eth_type != ETH_IPV4 or len(data) < off + 20:
        return None
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", data, off)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl or len(data) < off + total:
        return None
    if frag & 0x3FFF:  # a fragment (MF set or nonzero offset): never a whole reply
        return None
    return _Reply(mac_str(data[0:6]), socket.inet_ntoa(data[off + 12:off + 16]),
                  socket.inet_ntoa(data[off + 16:off + 20]), proto, data[off + ihl:off + total])


@dataclass(frozen=True)
class Probe:
    """One injected probe: its frame, the OpenFlow match that catches its reply,
    and the check that a caught frame is really the reply.

    ``reply_match`` uses os-ken OXM field names (MACs and IPv4 addresses as
    strings), ready for ``parser.OFPMatch(**probe.reply_match)``.
    """
    kind: str  # "ping" | "dns" | "tcp"
    frame: bytes
    reply_match: dict[str, int | str]

    def _reply(self, data: bytes) -> _Reply | None:
        """The parsed frame if it passes ``reply_match`` (addresses, protocol, ports)."""
        r = _parse_ipv4(data)
        m = self.reply_match
        if r is None or r.eth_dst != m["eth_dst"] or r.proto != m["ip_proto"] \
                or r.ip_src != m["ipv4_src"] or r.ip_dst != m["ipv4_dst"]:
            return None
        if self.kind in ("dns", "tcp"):
            if len(r.l4) < (8 if self.kind == "dns" else 20):
                return None
            sport, dport = struct.unpack_from("!HH", r.l4, 0)
            prefix = "udp" if self.kind == "dns" else "tcp"
            if sport != m[f"{prefix}_src"] or dport != m[f"{prefix}_dst"]:
                return None
        return r

    def _sent_l4(self) -> bytes:
        """The probe's own IP payload (its id/seq, query id, ISN live there)."""
        sent = _parse_ipv4(self.frame)
        assert sent is not None
        return sent.l4

    def is_reply(self, data: bytes) -> bool:
        """Whether ``data`` (a punted frame) answers this probe.

        ping: ICMP echo reply with our identifier and sequence number.
        dns: a DNS response (QR set) with our query id, whatever its rcode.
        tcp: a SYN-ACK acknowledging our ISN+1 (a RST is ``refused``, not a reply).
        """
        r = self._reply(data)
        if r is None:
            return False
        sent = self._sent_l4()
        if self.kind == "ping":
            return len(r.l4) >= 8 and r.l4[0] == ICMP_ECHO_REPLY and r.l4[1] == 0 \
                and r.l4[4:8] == sent[4:8]
        if self.kind == "dns":
            (length,) = struct.unpack_from("!H", r.l4, 4)
            dns = r.l4[8:length]
            return len(dns) >= 12 and dns[0:2] == sent[8:10] and bool(dns[2] & 0x80)
        if self.kind == "tcp":
            _, ack, flags = _tcp_fields(r.l4)
            (isn,) = struct.unpack_from("!I", sent, 4)
            return flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK \
                and ack == (isn + 1) & 0xFFFFFFFF
        return False

    def refused(self, data: bytes) -> bool:
        """TCP only: whether ``data`` is a RST answering our SYN (port closed or
        rejected with tcp-reset).  Always False for other kinds."""
        if self.kind != "tcp":
            return False
        r = self._reply(data)
        if r is None:
            return False
        _, ack, flags = _tcp_fields(r.l4)
        (isn,) = struct.unpack_from("!I", self._sent_l4(), 4)
        return bool(flags & TCP_RST) and bool(flags & TCP_ACK) and ack == (isn + 1) & 0xFFFFFFFF


def _tcp_fields(segment: bytes) -> tuple[int, int, int]:
    seq, ack, _, flags = struct.unpack_from("!IIBB", segment, 4)
    return seq, ack, flags


def _base_match(src_mac: str, src_ip: str, peer_ip: str, proto: int) -> dict[str, int | str]:
    return {"eth_dst": src_mac.lower(), "eth_type": ETH_IPV4, "ip_proto": proto,
            "ipv4_src": peer_ip, "ipv4_dst": src_ip}


# -- builders ----------------------------------------------------------------

def ping_probe(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, ident: int, seq: int) -> Probe:
    """An ICMP echo request from the host (src) to dst_ip, sent to the gateway dst_mac."""
    _check("ident", ident, 16)
    _check("seq", seq, 16)
    icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq) + PING_PAYLOAD
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    frame = _ethernet(src_mac, dst_mac) + _ipv4(src_ip, dst_ip, PROTO_ICMP, icmp, ident)
    match = _base_match(src_mac, src_ip, dst_ip, PROTO_ICMP)
    match["icmpv4_type"] = ICMP_ECHO_REPLY
    return Probe("ping", frame, match)


def dns_probe(src_mac: str, src_ip: str, dst_mac: str, server_ip: str, sport: int, query_id: int,
              name: str = DEFAULT_DNS_NAME) -> Probe:
    """A standard recursive (RD) query for the A record of ``name`` to server_ip:53."""
    _check("sport", sport, 16)
    _check("query_id", query_id, 16)
    query = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + dns_name(name) \
        + struct.pack("!HH", DNS_QTYPE_A, DNS_CLASS_IN)
    udp = _udp(src_ip, server_ip, sport, DNS_PORT, query)
    frame = _ethernet(src_mac, dst_mac) + _ipv4(src_ip, server_ip, PROTO_UDP, udp, query_id)
    match = _base_match(src_mac, src_ip, server_ip, PROTO_UDP)
    match.update(udp_src=DNS_PORT, udp_dst=sport)
    return Probe("dns", frame, match)


def tcp_probe(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, dst_port: int, sport: int,
              isn: int) -> Probe:
    """A TCP SYN (MSS option) from the host's sport to dst_ip:dst_port.

    After a SYN-ACK, close the half-open connection with
    ``tcp_reset(src_mac, src_ip, dst_mac, dst_ip, sport, dst_port, isn + 1)``:
    the host's own kernel never sees the SYN-ACK, so nobody else will.
    """
    _check("dst_port", dst_port, 16)
    _check("sport", sport, 16)
    _check("isn", isn, 32)
    options = struct.pack("!BBH", 2, 4, TCP_MSS)
    tcp = _tcp(src_ip, dst_ip, sport, dst_port, isn, 0, TCP_SYN, TCP_WINDOW, options)
    frame = _ethernet(src_mac, dst_mac) + _ipv4(src_ip, dst_ip, PROTO_TCP, tcp, isn)
    match = _base_match(src_mac, src_ip, dst_ip, PROTO_TCP)
    match.update(tcp_src=dst_port, tcp_dst=sport)
    return Probe("tcp", frame, match)


def tcp_reset(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, sport: int, dport: int,
              seq: int) -> bytes:
    """A bare RST (no ACK) from sport to dst_ip:dport with sequence number ``seq``
    (the probe's ISN+1, which is exactly what the peer expects next)."""
    _check("sport", sport, 16)
    _check("dport", dport, 16)
    tcp = _tcp(src_ip, dst_ip, sport, dport, seq & 0xFFFFFFFF, 0, TCP_RST, 0)
    return _ethernet(src_mac, dst_mac) + _ipv4(src_ip, dst_ip, PROTO_TCP, tcp, seq)


@dataclass(frozen=True)
class UdpDatagram:
    """A whole, unfragmented IPv4 UDP datagram in an Ethernet frame."""
    eth_src: str
    ip_src: str
    ip_dst: str
    sport: int
    dport: int
    payload: bytes


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int,
              payload: bytes, ident: int = 0) -> bytes:
    """An Ethernet frame carrying one UDP datagram (checksums filled in)."""
    return _ethernet(src_mac, dst_mac) + _ipv4(src_ip, dst_ip, PROTO_UDP,
                                               _udp(src_ip, dst_ip, sport, dport, payload), ident)


def parse_udp(frame: bytes) -> UdpDatagram | None:
    """The UDP datagram of an untagged IPv4 frame, or None (never raises on garbage)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, 14)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or proto != PROTO_UDP or frag & 0x3FFF:
        return None
    if total < ihl + 8 or len(frame) < 14 + total:
        return None
    udp = 14 + ihl
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    if length < 8 or udp + length > 14 + total:
        return None
    return UdpDatagram(mac_str(frame[6:12]), socket.inet_ntoa(frame[26:30]),
                       socket.inet_ntoa(frame[30:34]), sport, dport,
                       frame[udp + 8:udp + length])
