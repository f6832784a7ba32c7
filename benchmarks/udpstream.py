"""A UDP stream through a switch, counted at both ends: what a personality switch loses.

`stream_once` runs tests/lab/netcheck.py's udpsink and udpstream on a side's
sink and sender (a side is anything with `name`, `tmp`, `sink_ip`,
`sender_ip`, `sink_popen`, `sender_popen`, `sink_run` and `sender_run`), runs
`during()` partway through, and counts what was sent, received, and dropped at
the sink's own socket buffer.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from benchmarks.labtools import Procs

REPO = Path(__file__).resolve().parents[1]
NETCHECK = str(REPO / "tests" / "lab" / "netcheck.py")
SINK_PORT = 5001


def sink_socket_drops(snmp: str) -> int:
    """Udp RcvbufErrors of /proc/net/snmp (per network namespace): datagrams the sink's
    socket buffer had no room for, i.e. lost because the sink did not read in time."""
    rows = [line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1]))["RcvbufErrors"])


def read_sink(log: Path) -> int:
    m = re.search(r"received (\d+)", log.read_text()) if log.exists() else None
    return int(m.group(1)) if m else 0


# One datagram from the sink's port back to the stream's source port, sent on a raw socket
# (netcheck's udpsink holds the port and never answers).  Passing through conntrack in the
# sink's own egress pipeline, it makes the stream a connection with a reply: `+est`.
REPLY = r"""
import socket, struct, sys
src, dst, sport, dport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = b"reply"
n = 8 + len(data)
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, n)
c = csum(pseudo + struct.pack("!HHHH", sport, dport, n, 0) + data) or 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.sendto(struct.pack("!HHHH", sport, dport, n, c) + data, (dst, 0))
"""


def stream_socket(ss: str, pid: int) -> tuple[int, int] | None:
    """(local port, Recv-Q) of process `pid`'s UDP socket in `ss -uanp` output."""
    for line in ss.splitlines():
        if f"pid={pid}," in line:
            fields = line.split()
            return int(fields[3].rsplit(":", 1)[1]), int(fields[1])
    return None


def stream_once(side, procs: Procs, args, during) -> dict:
    """One UDP stream from side's sender to its sink; `during()` runs `switch_at` s in.

    Unless --one-way, the sink answers the stream once, right after it starts, so that
    conntrack holds it as an established connection (`+est`) when the switch comes.
    """
    sock_before = sink_socket_drops(side.sink_run(["cat", "/proc/net/snmp"]))
    log = side.tmp / f"{side.name}-sink.log"
    if log.exists():
        log.unlink()
    sink = procs.add(side.sink_popen(["python3", NETCHECK, "udpsink", str(SINK_PORT), str(log)]))
    deadline = time.monotonic() + 10
    while not log.exists():          # the sink writes its log 0.5 s after binding
        if time.monotonic() > deadline or sink.poll() is not None:
            raise RuntimeError(f"the UDP sink did not start ({sink.poll()})")
        time.sleep(0.05)
    stream = procs.add(side.sender_popen(["python3", NETCHECK, "udpstream", side.sink_ip,
                                          str(SINK_PORT), str(args.seconds), str(args.rate)]))
    started = time.monotonic()
    info: dict = {"established": None}
    if not args.one_way:
        sport = None
        while sport is None and time.monotonic() - started < min(args.switch_at, 3):
            found = stream_socket(side.sender_run(["ss", "-uanp"]), stream.pid)
            sport = found[0] if found else None
            time.sleep(0.02)
        if sport is None:
            raise RuntimeError("could not find the stream's source port")
        while read_sink(log) == 0 and time.monotonic() - started < 3:
            time.sleep(0.02)         # the stream's first datagram is in (committed) first
        side.sink_run(["python3", "-c", REPLY, side.sink_ip, side.sender_ip,
                       str(SINK_PORT), str(sport)])
    time.sleep(max(0.0, args.switch_at - (time.monotonic() - started)))
    if not args.one_way:   # the answer reached the sender: it went through the sink's firewall
        found = stream_socket(side.sender_run(["ss", "-uanp"]), stream.pid)
        info["established"] = bool(found and found[1] > 0)
    if during is not None:
        info.update(during())
    info["switch_done_s"] = time.monotonic() - started
    out, err = stream.communicate(timeout=args.seconds + 60)
    procs.procs.remove(stream)
    m = re.search(rb"sent (\d+)", out or b"")
    if not m:
        raise RuntimeError(f"udpstream printed no count: {out!r} {err!r}")
    sent = int(m.group(1))
    time.sleep(1.0)                  # last datagrams in, and the sink's log rewritten
    received = read_sink(log)
    procs.stop(sink)
    sock = sink_socket_drops(side.sink_run(["cat", "/proc/net/snmp"])) - sock_before
    info.update(sent=sent, received=received, lost=sent - received, sock=sock,
                path=sent - received - sock)
    if info["switch_done_s"] > args.seconds:
        info["note"] = "the switch finished after the stream ended"
    if info["established"] is False:
        info["note"] = "the sink's answer did not reach the sender: stream not +est"
    return info
