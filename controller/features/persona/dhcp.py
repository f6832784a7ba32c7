"""The hub's DHCP server logic (RFC 2131/2132): parse a punted request, decide, build the reply.

The hub answers DHCP for interfaces attached to a persona: the edge switch
punts the client's BOOTREQUEST, the worker looks up the address the
attachment assigned, and packet-outs the reply toward the client.  Addresses
are never chosen here (the attachment already did that), so the server keeps
no lease table: every answer follows from the request and the one address the
client is meant to have.  A relay (non-zero giaddr) is never involved, since the
hub sees the client's frame at its own edge.

Struct code like ``controller.packets``: packet-in runs on the hub's single
worker thread, so parsing is cheap and never raises on garbage (it returns
None instead).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from controller.packets import BROADCAST, ETH_IPV4, ETH_VLAN, mac_bytes, mac_str
from controller.probes import PROTO_UDP, checksum

SERVER_PORT = 67
CLIENT_PORT = 68
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
FIXED_LEN = 236            # op .. file, before the magic cookie
MIN_BOOTP_LEN = 300        # RFC 1542 §3.4: old clients drop shorter replies; pad up to it
TTL = 64
ZERO_IP = "0.0.0.0"
BROADCAST_IP = "255.255.255.255"

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {DISCOVER: "discover", OFFER: "offer", REQUEST: "request", DECLINE: "decline",
                 ACK: "ack", NAK: "nak", RELEASE: "release", INFORM: "inform"}
CLIENT_MESSAGES = frozenset({DISCOVER, REQUEST, DECLINE, RELEASE, INFORM})
REPLY_TYPES = {"offer": OFFER, "ack": ACK, "nak": NAK}

# Options (RFC 2132).
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_LIST = 55
OPT_MESSAGE = 56
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59
OPT_CLIENT_ID = 61
OPT_END = 255
MAX_LEASE = 0xFFFFFFFE     # 0xFFFFFFFF means "infinite"; a persona always ends


@dataclass(frozen=True)
class DhcpRequest:
    """The parts of a client's message the server acts on.

    ``client_mac`` is chaddr (who the lease is for); ``eth_src`` is who sent
    the frame, which is the same for a client on the segment.
    """
    message_type: int
    xid: int
    flags: int
    ciaddr: str
    giaddr: str
    client_mac: str
    eth_src: str
    ip_src: str
    ip_dst: str                          # the server (renewing) or broadcast
    requested_ip: str | None = None      # option 50
    server_id: str | None = None         # option 54
    client_id: bytes | None = None       # option 61
    hostname: str | None = None          # option 12
    parameter_list: tuple[int, ...] = ()  # option 55

    @property
    def kind(self) -> str:
        return MESSAGE_NAMES[self.message_type]

    @property
    def broadcast(self) -> bool:
        """The client cannot receive unicast before it has an address (RFC 2131 §4.1)."""
        return bool(self.flags & FLAG_BROADCAST)


@dataclass(frozen=True)
class Decision:
    """What to answer: ``kind`` is "offer", "ack" or "nak"; ``reason`` is for the journal."""
    kind: str
    reason: str


# -- parsing -----------------------------------------------------------------

def _ip(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def _options(data: bytes) -> dict[int, bytes]:
    """Option code -> value; a repeated option is concatenated (RFC 3396).

    A truncated option ends the list (what came before it still counts).
    """
    out: dict[int, bytes] = {}
    off = 0
    while off < len(data):
        code = data[off]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            off += 1
            continue
        if off + 2 > len(data):
            break
        length = data[off + 1]
        value = data[off + 2:off + 2 + length]
        if len(value) < length:
            break
        out[code] = out.get(code, b"") + value
        off += 2 + length
    return out


def _udp_payload(frame: bytes) -> tuple[str, str, bytes] | None:
    """(IPv4 source, IPv4 destination, UDP payload) of a whole, unfragmented UDP datagram to port 67."""
    if len(frame) < 14:
        return None
    (eth_type,) = struct.unpack_from("!H", frame, 12)
    off = 14
    if eth_type == ETH_VLAN and len(frame) >= 18:
        (eth_type,) = struct.unpack_from("!H", frame, 16)
        off = 18
    if eth_type != ETH_IPV4 or len(frame) < off + 20:
        return None
    ver_ihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, off)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or total < ihl + 8 or len(frame) < off + total:
        return None
    if proto != PROTO_UDP or frag & 0x3FFF:
        return None
    udp = off + ihl
    _, dport, length = struct.unpack_from("!HHH", frame, udp)
    if dport != SERVER_PORT or length < 8 or udp + length > off + total:
        return None
    return (_ip(frame[off + 12:off + 16]), _ip(frame[off + 16:off + 20]),
            frame[udp + 8:udp + length])


def parse_request(frame: bytes) -> DhcpRequest | None:
    """A client's DHCP message in an Ethernet frame, or None for anything else.

    Only BOOTREQUESTs over Ethernet (htype 1, hlen 6) with the magic cookie and
    a client message type (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM) parse.
    """
    try:
        udp = _udp_payload(frame)
        if udp is None:
            return None
        ip_src, ip_dst, msg = udp
        if len(msg) < FIXED_LEN + 4 or msg[FIXED_LEN:FIXED_LEN + 4] != MAGIC_COOKIE:
            return None
        op, htype, hlen, _, xid, _, flags = struct.unpack_from("!BBBBIHH", msg, 0)
        if op != BOOTREQUEST or htype != HTYPE_ETHERNET or hlen != 6:
            return None
        opts = _options(msg[FIXED_LEN + 4:])
        mtype = opts.get(OPT_MESSAGE_TYPE, b"")
        if len(mtype) != 1 or mtype[0] not in CLIENT_MESSAGES:
            return None
        requested = opts.get(OPT_REQUESTED_IP)
        server_id = opts.get(OPT_SERVER_ID)
        hostname = opts.get(OPT_HOSTNAME)
        return DhcpRequest(
            message_type=mtype[0], xid=xid, flags=flags,
            ciaddr=_ip(msg[12:16]), giaddr=_ip(msg[24:28]),
            client_mac=mac_str(msg[28:34]), eth_src=mac_str(frame[6:12]),
            ip_src=ip_src, ip_dst=ip_dst,
            requested_ip=_ip(requested) if requested is not None and len(requested) == 4 else None,
            server_id=_ip(server_id) if server_id is not None and len(server_id) == 4 else None,
            client_id=opts.get(OPT_CLIENT_ID),
            hostname=hostname.decode("utf-8", "replace") if hostname else None,
            parameter_list=tuple(opts.get(OPT_PARAMETER_LIST, b"")))
    except (struct.error, ValueError, OSError):
        return None


# -- deciding ----------------------------------------------------------------

def decide(request: DhcpRequest, assigned_ip: str | None, server_ip: str) -> Decision | None:
    """The answer RFC 2131 §4.3 asks for, or None to stay silent.

    ``assigned_ip`` is the address the client's attachment holds (None: the
    client is not ours to serve, so never answered).  ``server_ip`` is this
    server's identifier (the persona gateway address).

    - DISCOVER: offer the assigned address.
    - REQUEST, SELECTING (server id present): for another server, silent (the
      client took its offer); for us, ack the assigned address, nak another.
    - REQUEST, INIT-REBOOT (requested IP, no server id, no ciaddr): ack the
      assigned address, nak another (the client remembers a stale lease).
    - REQUEST, RENEWING/REBINDING (ciaddr, no requested IP): ack if ciaddr is
      the assigned address, else nak.
    - INFORM: ack (configuration only, no lease) when ciaddr is the assigned address.
    - DECLINE, RELEASE: no reply.  The address stays assigned: it belongs to
      the attachment, not to a lease.
    """
    if assigned_ip is None or request.giaddr != ZERO_IP:
        return None
    mtype = request.message_type
    if mtype == DISCOVER:
        return Decision("offer", f"offer {assigned_ip}")
    if mtype == INFORM:
        if request.ciaddr == assigned_ip:
            return Decision("ack", f"inform from {assigned_ip}")
        return None
    if mtype != REQUEST:
        return None
    if request.server_id is not None:
        if request.server_id != server_ip:
            return None
        return _confirm(request.requested_ip, assigned_ip, "selecting")
    if request.requested_ip is not None:
        return _confirm(request.requested_ip, assigned_ip, "init-reboot")
    if request.ciaddr != ZERO_IP:
        return _confirm(request.ciaddr, assigned_ip, "renewing")
    return None


def _confirm(asked: str | None, assigned_ip: str, state: str) -> Decision:
    if asked == assigned_ip:
        return Decision("ack", f"{state}: ack {assigned_ip}")
    return Decision("nak", f"{state}: asked for {asked or 'no address'}, assigned {assigned_ip}")


# -- building ----------------------------------------------------------------

def _option(code: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"DHCP option {code} is {len(value)} bytes, at most 255 fit")
    return bytes([code, len(value)]) + value


def _addresses(ips: tuple[str, ...] | list[str]) -> bytes:
    return b"".join(socket.inet_aton(ip) for ip in ips)


def _seconds(value: int) -> bytes:
    return struct.pack("!I", max(1, min(int(value), MAX_LEASE)))


def reply_options(request: DhcpRequest, *, kind: str, server_ip: str, netmask: str,
                  router: str | None, dns: tuple[str, ...] | list[str], lease_seconds: int,
                  domain: str | None = None, message: str | None = None) -> bytes:
    """The options field of a reply (without the magic cookie), END included.

    A NAK carries only its type, the server id and an optional message (RFC
    2131 Table 3).  An ACK to INFORM carries configuration but no lease times.
    Renewal (T1) and rebinding (T2) times are the RFC's defaults, 1/2 and 7/8
    of the lease, so a client renews well before a persona's expiration.
    """
    out = _option(OPT_MESSAGE_TYPE, bytes([REPLY_TYPES[kind]])) \
        + _option(OPT_SERVER_ID, socket.inet_aton(server_ip))
    if kind == "nak":
        if message:
            out += _option(OPT_MESSAGE, message.encode()[:255])
        return out + bytes([OPT_END])
    if request.message_type != INFORM:
        lease = max(1, min(int(lease_seconds), MAX_LEASE))
        out += _option(OPT_LEASE_TIME, _seconds(lease)) \
            + _option(OPT_RENEWAL_TIME, _seconds(lease // 2)) \
            + _option(OPT_REBINDING_TIME, _seconds(lease * 7 // 8))
    out += _option(OPT_SUBNET_MASK, socket.inet_aton(netmask))
    if router:
        out += _option(OPT_ROUTER, socket.inet_aton(router))
    if dns:
        out += _option(OPT_DNS, _addresses(dns))
    if domain:
        out += _option(OPT_DOMAIN, domain.encode())
    return out + bytes([OPT_END])


def destination(request: DhcpRequest, kind: str, your_ip: str) -> tuple[str, str]:
    """(Ethernet, IPv4) destination of a reply, by RFC 2131 §4.1 (no relay).

    A NAK is broadcast; a client that has an address (ciaddr: renewing,
    INFORM) gets unicast to it; a client that asked for broadcast gets it;
    otherwise unicast to chaddr and the offered address (the client accepts
    it before its interface has the address, which is the point of the flag).
    """
    if kind == "nak":
        return BROADCAST, BROADCAST_IP
    if request.ciaddr != ZERO_IP:
        return request.client_mac, request.ciaddr
    if request.broadcast:
        return BROADCAST, BROADCAST_IP
    return request.client_mac, your_ip


def build_reply(request: DhcpRequest, *, kind: str, your_ip: str, server_ip: str, server_mac: str,
                netmask: str, router: str | None, dns: tuple[str, ...] | list[str] = (),
                lease_seconds: int, domain: str | None = None, message: str | None = None) -> bytes:
    """A whole Ethernet frame answering ``request``: from server_mac/server_ip:67
    to the client (see ``destination``) port 68, checksums filled in.

    ``kind`` is a ``Decision.kind``.  ``your_ip`` becomes yiaddr, except in a
    NAK and in the ACK to an INFORM (the client already has its address).
    """
    if kind not in REPLY_TYPES:
        raise ValueError(f"reply kind must be one of {sorted(REPLY_TYPES)}, not {kind!r}")
    yiaddr = ZERO_IP if kind == "nak" or request.message_type == INFORM else your_ip
    # ciaddr is echoed in an ACK (renewing, INFORM) and zero in OFFER and NAK (Table 3).
    ciaddr = request.ciaddr if kind == "ack" else ZERO_IP
    fixed = struct.pack("!BBBBIHH4s4s4s4s", BOOTREPLY, HTYPE_ETHERNET, 6, 0, request.xid, 0,
                        request.flags & FLAG_BROADCAST, socket.inet_aton(ciaddr),
                        socket.inet_aton(yiaddr), socket.inet_aton(ZERO_IP),
                        socket.inet_aton(request.giaddr)) \
        + mac_bytes(request.client_mac).ljust(16, b"\x00") + b"\x00" * (64 + 128)
    msg = fixed + MAGIC_COOKIE + reply_options(
        request, kind=kind, server_ip=server_ip, netmask=netmask, router=router, dns=dns,
        lease_seconds=lease_seconds, domain=domain, message=message)
    msg = msg.ljust(MIN_BOOTP_LEN, bytes([OPT_PAD]))
    eth_dst, ip_dst = destination(request, kind, your_ip)
    return _ethernet(server_mac, eth_dst) + _ipv4_udp(server_ip, ip_dst, SERVER_PORT,
                                                        CLIENT_PORT, msg)


def _ethernet(src_mac: str, dst_mac: str) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_IPV4)


def _ipv4_udp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    length = 8 + len(payload)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, length)
    csum = checksum(pseudo + segment) or 0xFFFF     # 0 would mean "no checksum"
    segment = segment[:6] + struct.pack("!H", csum) + segment[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, TTL, PROTO_UDP, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + segment
