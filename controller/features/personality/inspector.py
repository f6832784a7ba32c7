"""First-payload inspection: the controller's half of the application access policy.

The flows (`controller.features.personality.applications`) send the opener's packets of a
connection under inspection to the controller, from the interface's
firewall or count table.  `Inspector.on_packet_in` finds the interface's
binding, reads the TCP/UDP segment, and answers with one packet-out:

- no payload (a TCP handshake ACK, a FIN): sent on to the count table, the
  connection still under inspection; after `MAX_EMPTY_PACKETS` such packets
  the port's fallback verdict is pinned instead;
- a payload: the port's verdict on it (`PortPolicy.decide`) is pinned in
  conntrack by re-committing the connection with the APP_ALLOWED mark (and
  the packet goes on to the count table) or APP_DENIED (and it goes nowhere;
  the firewall drops what follows).

Verdicts are remembered for a short while, so packets punted before the pin
took effect get the same answer.  Pure apart from the clock: it returns the
packet-out, the hub sends it.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

from controller.features.personality.applications import (MAX_EMPTY_PACKETS, PortPolicy, Verdict,
                                             verdict_actions)
from controller.features.personality.binding import Binding
from controller.pipeline import tables
from controller.pipeline.actions import Action

LOG = logging.getLogger("hubshift.inspector")

ETH_IPV4 = 0x0800
ETH_VLAN = 0x8100
PROTOCOLS = {6: "tcp", 17: "udp"}
TCP_RST = 0x04

# Packet-in table -> (direction, the count table a packet goes on to).
TABLES = {
    tables.PERSONALITY_EGRESS_FW.id: ("egress", tables.PERSONALITY_EGRESS_COUNT.id),
    tables.PERSONALITY_EGRESS_COUNT.id: ("egress", tables.PERSONALITY_EGRESS_COUNT.id),
    tables.PERSONALITY_INGRESS_FW.id: ("ingress", tables.PERSONALITY_INGRESS_COUNT.id),
    tables.PERSONALITY_INGRESS_COUNT.id: ("ingress", tables.PERSONALITY_INGRESS_COUNT.id),
}
REMEMBER_SECONDS = 30.0   # a connection's verdict (or its count of empty packets)
MAX_CONNECTIONS = 4096    # remembered at most; the oldest are forgotten first


@dataclass(frozen=True)
class Segment:
    """The parts of an IPv4 TCP/UDP packet inspection needs."""
    eth_src: str
    eth_dst: str
    protocol: str            # tcp | udp
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    tcp_flags: int = 0


def parse_segment(data: bytes) -> Segment | None:
    """An Ethernet frame's IPv4 TCP/UDP segment; None for anything else or a truncated one."""
    try:
        eth_type = struct.unpack_from("!H", data, 12)[0]
        off = 14
        if eth_type == ETH_VLAN:
            eth_type, off = struct.unpack_from("!H", data, 16)[0], 18
        if eth_type != ETH_IPV4:
            return None
        ver_ihl, proto = data[off], data[off + 9]
        (total,), (frag,) = struct.unpack_from("!H", data, off + 2), struct.unpack_from(
            "!H", data, off + 6)
        ihl = (ver_ihl & 0x0F) * 4
        if ver_ihl >> 4 != 4 or ihl < 20 or proto not in PROTOCOLS or frag & 0x1FFF:
            return None   # not IPv4, or a non-first fragment (no ports to key it by)
        end = min(len(data), off + total)
        l4 = off + ihl
        sport, dport = struct.unpack_from("!HH", data, l4)
        flags = 0
        if proto == 6:
            data_off = (data[l4 + 12] >> 4) * 4
            flags = data[l4 + 13]
            if data_off < 20:
                return None
            payload = data[l4 + data_off:end]
        else:
            if end < l4 + 8:
                return None
            payload = data[l4 + 8:end]
        mac = lambda b: ":".join(f"{x:02x}" for x in b)  # noqa: E731
        return Segment(mac(data[6:12]), mac(data[0:6]), PROTOCOLS[proto],
                       socket.inet_ntoa(data[off + 12:off + 16]), sport,
                       socket.inet_ntoa(data[off + 16:off + 20]), dport, bytes(payload), flags)
    except (IndexError, struct.error):
        return None


@dataclass(frozen=True)
class PacketOut:
    dpid: int
    data: bytes
    actions: tuple[Action, ...]
    in_port: int


@dataclass
class _Tracked:
    empty: int = 0
    verdict: Verdict | None = None
    seen: float = 0.0


class ConnectionKey(NamedTuple):
    """One inspected connection, as its opener sent it, in one conntrack zone."""
    dpid: int
    zone: int
    protocol: str
    src: str
    sport: int
    dst: str
    dport: int


class Inspector:
    def __init__(self, bindings: Mapping[str, Binding],
                 clock: Callable[[], float] = time.monotonic,
                 max_empty: int = MAX_EMPTY_PACKETS) -> None:
        self.bindings = bindings      # the hub's, by interface id (read only)
        self.clock = clock
        self.max_empty = max_empty
        self.connections: OrderedDict[ConnectionKey, _Tracked] = OrderedDict()
        self.verdicts = {"allow": 0, "deny": 0}

    def on_packet_in(self, dpid: int, table_id: int, in_port: int,
                     data: bytes) -> PacketOut | None:
        """The packet-out for a punted packet, or None (it is dropped)."""
        if table_id not in TABLES:
            return None
        direction, count_table = TABLES[table_id]
        seg = parse_segment(data)
        if seg is None:
            return None
        binding = self._binding(dpid, direction, in_port, seg)
        if binding is None:
            LOG.debug("no personality for a punted packet on %016x port %d", dpid, in_port)
            return None
        port = binding.policy.applications.port(seg.protocol, seg.dport)
        now = self.clock()
        self._expire(now)
        key = ConnectionKey(dpid, binding.zone, seg.protocol, seg.src, seg.sport, seg.dst, seg.dport)
        tracked = self.connections.get(key)
        if tracked is None:
            tracked = self.connections[key] = _Tracked()
        tracked.seen = now
        self.connections.move_to_end(key)
        if tracked.verdict is None:
            tracked.verdict = self._judge(port, seg, tracked)
            if tracked.verdict is not None:
                self.verdicts[tracked.verdict.action] += 1
                LOG.info("application %s %s:%d -> %s:%d on %s: %s (%s)", seg.protocol, seg.src,
                         seg.sport, seg.dst, seg.dport, binding.interface.id,
                         tracked.verdict.action, tracked.verdict.reason)
        return PacketOut(dpid, data, verdict_actions(binding.zone, direction, tracked.verdict,
                                                     count_table), in_port)

    def _judge(self, port: PortPolicy | None, seg: Segment, tracked: _Tracked) -> Verdict | None:
        if port is None:   # the policy no longer names this port: the firewall admitted it
            return Verdict("allow", f"{seg.protocol}/{seg.dport} is not in the policy")
        if seg.payload:
            return port.decide(seg.payload)
        if seg.protocol == "tcp" and seg.tcp_flags & TCP_RST:
            return None   # an abort is sent on; nothing follows it to judge
        tracked.empty += 1
        if tracked.empty >= self.max_empty:
            return port.fallback(f"no payload in {tracked.empty} packets")
        return None

    def _binding(self, dpid: int, direction: str, in_port: int, seg: Segment) -> Binding | None:
        """The interface the packet leaves (egress: port and MAC) or reaches (ingress: MAC)."""
        for binding in self.bindings.values():
            iface = binding.interface
            if iface.dpid != dpid:
                continue
            if direction == "egress" and (iface.port, iface.mac) == (in_port, seg.eth_src):
                return binding
            if direction == "ingress" and iface.mac == seg.eth_dst:
                return binding
        return None

    def _expire(self, now: float) -> None:
        while self.connections:
            key, oldest = next(iter(self.connections.items()))
            if now - oldest.seen <= REMEMBER_SECONDS and len(self.connections) < MAX_CONNECTIONS:
                break
            del self.connections[key]
