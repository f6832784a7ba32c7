"""The mirrored traffic as it arrives on the slot's interface: IPv4 TCP and UDP segments.

Python standard library only.  `Capture` is an AF_PACKET raw socket bound to one
interface, non-blocking: `read(limit)` takes the frames waiting (never the ones the
host sends itself: the shadow's own answers are not the mirrored stream) and
`parse_frame` makes a `Segment` of each IPv4 TCP or UDP one (Ethernet, one 802.1Q
tag at most); anything else is passed over.  A copy truncated by the mirror's
`snaplen` keeps its declared `length`, so a reader knows how much it misses.
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
PACKET_OUTGOING = 4             # sll_pkttype of a frame this host sent
RCVBUF = 4 << 20                # bytes of socket buffer asked for (SO_RCVBUFFORCE as root)
FRAME_MAX = 65600               # bytes read per frame: any IPv4 packet, its link header
# Linux's values (asm-generic, x86, arm), where Python's socket module does not name them
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBB")         # ports, seq, ack, data offset, flags
_UDP = struct.Struct("!HHHH")        # ports, length, checksum
_TIMESPEC = struct.Struct("@qq")


@dataclass(frozen=True)
class Segment:
    """One IPv4 TCP segment or UDP datagram: `payload` is what was captured of its
    `length` bytes of data (less when the copy was truncated)."""
    protocol: str               # "tcp" or "udp"
    src: IPv4Address
    sport: int
    dst: IPv4Address
    dport: int
    flags: int = 0              # TCP flags (FIN, SYN, RST, PSH, ACK, ...); 0 for UDP
    seq: int = 0                # TCP sequence number of the first payload byte (or SYN)
    payload: bytes = b""
    length: int | None = None   # the data's declared length; None: len(payload)

    @property
    def size(self) -> int:
        return len(self.payload) if self.length is None else self.length


def parse_frame(frame: bytes) -> Segment | None:
    """The Ethernet frame's IPv4 TCP or UDP segment, or None (another protocol, a later
    fragment, too short to hold its headers)."""
    if len(frame) < _ETH.size:
        return None
    ethertype, offset = _ETH.unpack_from(frame)[2], _ETH.size
    if ethertype == ETH_P_8021Q and len(frame) >= offset + 4:
        ethertype, offset = struct.unpack_from("!H", frame, offset + 2)[0], offset + 4
    if ethertype != ETH_P_IP or len(frame) < offset + _IPV4.size:
        return None
    vihl, _, total, _, frag, _, proto, _, src, dst = _IPV4.unpack_from(frame, offset)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < _IPV4.size or total < ihl or frag & 0x1FFF:
        return None                     # not IPv4, a broken header, or not the first fragment
    l4, end = offset + ihl, offset + total
    data = frame[l4:end]                # the padding of a short frame left out
    declared = total - ihl
    if proto == socket.IPPROTO_TCP and len(data) >= _TCP.size:
        sport, dport, seq, _, off, flags = _TCP.unpack_from(data)
        hlen = (off >> 4) * 4
        if hlen < 20 or len(data) < hlen:
            return None
        return Segment("tcp", IPv4Address(src), sport, IPv4Address(dst), dport, flags, seq,
                       bytes(data[hlen:]), max(0, declared - hlen))
    if proto == socket.IPPROTO_UDP and len(data) >= _UDP.size:
        sport, dport, ulen, _ = _UDP.unpack_from(data)
        size = min(max(0, ulen - _UDP.size), max(0, declared - _UDP.size))
        return Segment("udp", IPv4Address(src), sport, IPv4Address(dst), dport,
                       payload=bytes(data[_UDP.size:_UDP.size + size]), length=size)
    return None


class Capture:
    """An AF_PACKET socket on `interface` (root), non-blocking.  After a `read`,
    `drained` says whether it took every frame waiting, and `lag_ms` how far behind
    it is: 0 when drained, else the age of the last frame taken (from the kernel's
    receive time)."""

    def __init__(self, interface: str, rcvbuf: int = RCVBUF) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.bind((interface, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.lag_ms, self.drained = 0.0, True
        self.frames = 0                 # taken, of any kind
        self._ancillary = socket.CMSG_SPACE(_TIMESPEC.size)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 256) -> list[Segment]:
        """The segments of at most `limit` frames waiting (never blocks)."""
        segments: list[Segment] = []
        stamp = None
        for _ in range(limit):
            try:
                frame, ancdata, _, address = self.sock.recvmsg(FRAME_MAX, self._ancillary)
            except (BlockingIOError, InterruptedError):
                self.lag_ms, self.drained = 0.0, True
                return segments
            self.frames += 1
            stamp = _stamp(ancdata) or stamp
            if address[2] == PACKET_OUTGOING:
                continue
            segment = parse_frame(frame)
            if segment is not None:
                segments.append(segment)
        self.drained = False
        self.lag_ms = max(0.0, (time.time() - stamp) * 1000) if stamp is not None else 0.0
        return segments

    def close(self) -> None:
        self.sock.close()


def _stamp(ancdata) -> float | None:
    """The frame's receive time (wall clock s) from SO_TIMESTAMPNS, if given."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS \
                and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec + nsec / 1e9
    return None
