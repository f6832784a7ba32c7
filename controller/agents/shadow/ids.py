"""IDS_Signature_Scan: the manifest's signatures matched over each connection's payload.

Python standard library only.  The profile (`IdsProfile`) reads the mirrored traffic
on the slot's interface (`capture.Capture`) and hands every segment to a `Scanner`,
which is pure (no socket, clocks passed in) and is what the tests drive:

- TCP: per connection and direction, the payload is put back in sequence order
  (`Stream`); segments ahead of a gap wait for it, up to `WINDOW` bytes, beyond
  which the gap is given up.  Each new run of bytes is searched together with the
  bytes before it that a match could have begun in (`Rule.reach`: a content's
  length less one, `PATTERN_SPAN` for a pattern), so a signature split over
  segments matches; only those bytes (and `CONTEXT` for the evidence) are kept.
- UDP: each datagram is searched alone.
- A (connection, signature) match is a `Finding` once: the 5-tuple is the client's
  (the SYN's sender; without a SYN, the side that is not a production address, or
  the first sender) toward the server; the evidence names the rule, the direction
  and an excerpt.
- A connection is forgotten after a RST, a FIN each way, or `IDLE` seconds unseen.
"""
from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, NamedTuple

from controller.agents.shadow.capture import ACK, FIN, RST, SYN, Capture, Segment
from controller.agents.shadow.feed import CaptureFeed
from controller.agents.shadow.protocol import SEVERITIES, FiveTuple, Finding

if TYPE_CHECKING:
    from controller.agents.shadow.profiles import ProfileContext

NAME = "IDS_Signature_Scan"
WINDOW = 64 * 1024          # bytes of one direction held out of order at most
PATTERN_SPAN = 4096         # bytes before new data that a pattern's match may begin in
IDLE = 60.0                 # s unseen before a connection is forgotten
CONNECTIONS = 16384         # followed at most; beyond, the longest unseen is forgotten
CONTEXT = 16                # bytes shown each side of a match in the evidence
SHOWN = 64                  # bytes of the match itself shown at most
_MASK = 0xFFFFFFFF


# -- the rules -------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A signature: `content` (bytes to find) or `pattern` (a regex over bytes)."""
    id: str
    severity: str
    content: bytes | None = None
    pattern: re.Pattern[bytes] | None = None

    @property
    def reach(self) -> int:
        """How many bytes before new data a match of this rule may begin in."""
        return len(self.content) - 1 if self.content is not None else PATTERN_SPAN

    def search(self, data: bytes | bytearray, start: int) -> tuple[int, int] | None:
        """The span of the first match beginning at or after `start`, or None."""
        if self.content is not None:
            at = data.find(self.content, start)
            return None if at < 0 else (at, at + len(self.content))
        found = self.pattern.search(data, start)
        return None if found is None else found.span()


def rules_from(settings: Mapping[str, Any]) -> tuple[Rule, ...]:
    """The rules of the manifest's `profiles.IDS_Signature_Scan` (ValueError if one is
    not `{id, content | pattern, severity}`)."""
    signatures = settings.get("signatures", [])
    if not isinstance(signatures, list):
        raise ValueError("signatures is not a list")
    rules: list[Rule] = []
    for i, sig in enumerate(signatures):
        if not isinstance(sig, dict) or not isinstance(sig.get("id"), str) or not sig["id"]:
            raise ValueError(f"signature {i} has no id")
        rid, severity = sig["id"], sig.get("severity")
        content, pattern = sig.get("content"), sig.get("pattern")
        if severity not in SEVERITIES:
            raise ValueError(f"signature {rid}: severity {severity!r}")
        if (content is None) == (pattern is None) or not isinstance(content or pattern, str) \
                or not (content or pattern):
            raise ValueError(f"signature {rid}: give exactly one of content and pattern")
        try:
            rules.append(Rule(rid, severity, content=content.encode("utf-8")) if content
                         else Rule(rid, severity, pattern=re.compile(pattern.encode("utf-8"))))
        except re.error as exc:
            raise ValueError(f"signature {rid}: pattern: {exc}") from None
    return tuple(rules)


# -- one direction's stream ------------------------------------------------------------

class Run(NamedTuple):
    """Bytes to search: new ones from `start`, those before it kept from earlier."""
    data: bytes
    start: int


def _after(seq: int, ref: int) -> int:
    """How far `seq` is after `ref`, in sequence space (negative: before)."""
    d = (seq - ref) & _MASK
    return d - (1 << 32) if d >= 1 << 31 else d


class Stream:
    """One direction of a TCP connection, in sequence order: `add` a segment, get the
    runs of new bytes it makes contiguous (none while it waits behind a gap)."""

    def __init__(self, reach: int, window: int = WINDOW) -> None:
        self.reach, self.window = reach, window
        self.next: int | None = None        # the sequence number of the next byte expected
        self.tail = b""                     # the last `reach` bytes before `next`
        self.waiting: dict[int, tuple[bytes, int]] = {}   # seq -> (payload, length)
        self.held = 0                       # bytes in `waiting`

    def syn(self, seq: int) -> None:
        if self.next is None:
            self.next = (seq + 1) & _MASK

    def add(self, seq: int, payload: bytes, length: int) -> list[Run]:
        if self.next is None:
            self.next = seq                 # joined without the SYN
        if length <= 0:
            return []
        if _after(seq, self.next) > 0:
            if seq not in self.waiting:
                self.waiting[seq] = (payload, length)
                self.held += len(payload)
            return self._skip() if self.held > self.window else []
        return self._take(seq, payload, length) + self._drain()

    def flush(self) -> list[Run]:
        """Whatever waits, gaps given up: the stream ends."""
        runs: list[Run] = []
        while self.waiting:
            runs += self._skip()
        return runs

    def _take(self, seq: int, payload: bytes, length: int) -> list[Run]:
        seen = -_after(seq, self.next)      # bytes of it already taken (a retransmission)
        if seen >= length:
            return []
        new = payload[seen:]
        self.next = (self.next + length - seen) & _MASK
        data = self.tail + new
        # A copy cut short by the mirror's snaplen leaves a hole: nothing spans it.
        self.tail = data[-self.reach:] if len(payload) >= length and self.reach else b""
        return [Run(data, len(data) - len(new))] if new else []

    def _drain(self) -> list[Run]:
        runs: list[Run] = []
        while True:
            ready = next((s for s in self.waiting if _after(s, self.next) <= 0), None)
            if ready is None:
                return runs
            payload, length = self.waiting.pop(ready)
            self.held -= len(payload)
            runs += self._take(ready, payload, length)

    def _skip(self) -> list[Run]:
        """Give up the gap before the first segment waiting."""
        first = min(self.waiting, key=lambda s: _after(s, self.next))
        self.next, self.tail = first, b""
        return self._drain()


# -- connections and the scanner -------------------------------------------------------

class Endpoint(NamedTuple):
    address: IPv4Address
    port: int


class FlowKey(NamedTuple):
    protocol: str
    low: Endpoint                           # the two endpoints, in order
    high: Endpoint


@dataclass
class Connection:
    five_tuple: FiveTuple                   # client -> server
    keep: int                               # bytes of each stream kept (`Stream.reach`)
    seen: float
    streams: dict[bool, Stream] = field(default_factory=dict)    # by "from the client"
    finished: set[bool] = field(default_factory=set)
    matched: set[str] = field(default_factory=set)               # rule ids reported

    def stream(self, from_client: bool) -> Stream:
        if from_client not in self.streams:
            self.streams[from_client] = Stream(self.keep)
        return self.streams[from_client]


class Scanner:
    """Segments in, findings out: `feed(segment, now)` on a monotonic clock; findings'
    `at` from `wallclock`.  `servers` are the production addresses (the server side of
    a connection whose SYN was not seen)."""

    def __init__(self, rules: Iterable[Rule], servers: Collection[IPv4Address] = (),
                 wallclock: Callable[[], float] = time.time, idle: float = IDLE,
                 limit: int = CONNECTIONS) -> None:
        self.rules = tuple(rules)
        # kept of each direction: what a match may begin in, and the evidence's context
        self.keep = max([CONTEXT] + [r.reach for r in self.rules])
        self.servers, self.wallclock, self.idle, self.limit = set(servers), wallclock, idle, limit
        self.connections: collections.OrderedDict[FlowKey, Connection] = \
            collections.OrderedDict()       # the longest unseen first

    def feed(self, seg: Segment, now: float) -> list[Finding]:
        src, dst = Endpoint(seg.src, seg.sport), Endpoint(seg.dst, seg.dport)
        key = FlowKey(seg.protocol, *sorted((src, dst)))
        conn = self.connections.get(key)
        if conn is None:
            if seg.protocol == "tcp" and not (seg.payload or seg.flags & SYN):
                return []                   # a last ACK or a RST of nothing followed
            conn = self._open(key, seg, src, dst, now)
        conn.seen = now
        self.connections.move_to_end(key)
        from_client = (src.address, src.port) == (conn.five_tuple.src, conn.five_tuple.sport)
        if seg.protocol == "udp":
            return self._match(conn, from_client, [Run(seg.payload, 0)])
        stream = conn.stream(from_client)
        if seg.flags & SYN:
            stream.syn(seg.seq)
        data_seq = (seg.seq + 1) & _MASK if seg.flags & SYN else seg.seq   # after a SYN's own
        found = self._match(conn, from_client, stream.add(data_seq, seg.payload, seg.size))
        if seg.flags & FIN:
            conn.finished.add(from_client)
        if seg.flags & RST or len(conn.finished) == 2:
            found += self._close(key)
        return found

    def expire(self, now: float) -> list[Finding]:
        """Forget the connections unseen for `idle` s (what waited in them searched)."""
        found: list[Finding] = []
        while self.connections:
            key, conn = next(iter(self.connections.items()))
            if now - conn.seen < self.idle:
                break
            found += self._close(key)
        return found

    def _open(self, key: FlowKey, seg: Segment, src: Endpoint, dst: Endpoint,
              now: float) -> Connection:
        if len(self.connections) >= self.limit:
            self.connections.popitem(last=False)
        syn = seg.flags & (SYN | ACK)
        if syn == SYN:
            sender_is_client = True
        elif syn == SYN | ACK:
            sender_is_client = False
        else:
            sender_is_client = not (src.address in self.servers and dst.address not in self.servers)
        client, server = (src, dst) if sender_is_client else (dst, src)
        conn = Connection(FiveTuple(seg.protocol, client.address, client.port, server.address,
                                    server.port), self.keep, now)
        self.connections[key] = conn
        return conn

    def _close(self, key: FlowKey) -> list[Finding]:
        conn = self.connections.pop(key)
        found: list[Finding] = []
        for from_client, stream in conn.streams.items():
            found += self._match(conn, from_client, stream.flush())
        return found

    def _match(self, conn: Connection, from_client: bool, runs: list[Run]) -> list[Finding]:
        found: list[Finding] = []
        for run in runs:
            for rule in self.rules:
                if rule.id in conn.matched:
                    continue
                span = rule.search(run.data, max(0, run.start - rule.reach))
                if span is not None:
                    conn.matched.add(rule.id)
                    found.append(Finding(NAME, rule.severity, conn.five_tuple,
                                         _evidence(rule, from_client, run.data, span),
                                         self.wallclock()))
        return found


def _evidence(rule: Rule, from_client: bool, data: bytes, span: tuple[int, int]) -> str:
    start, end = span
    shown = data[max(0, start - CONTEXT):min(end, start + SHOWN) + CONTEXT]
    way = "client->server" if from_client else "server->client"
    return f"rule {rule.id} ({way}): {bytes(shown)!r}"


# -- the profile -----------------------------------------------------------------------

class IdsProfile:
    """The profile the agent runs (`profiles.PROFILES[NAME]`): its signatures from the
    settings at `start`, the capture on the slot's interface, the scanner fed in `poll`
    for a bounded time (`feed.BUDGET`).  `lag_ms`: how far behind the capture is."""

    def __init__(self, open_capture: Callable[[str], Capture] = Capture,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.open_capture, self.now = open_capture, now
        self.feed: CaptureFeed | None = None
        self.scanner: Scanner | None = None

    @property
    def lag_ms(self) -> float:
        return self.feed.lag_ms if self.feed is not None else 0.0

    def start(self, ctx: ProfileContext) -> None:
        self.scanner = Scanner(rules_from(ctx.settings), {a.ip for a in ctx.addresses},
                               ctx.wallclock)
        self.feed = CaptureFeed(self.open_capture(ctx.interface), self.now)

    def poll(self) -> list[Finding]:
        found, now = self.feed.drain(self.scanner.feed)
        return found + self.scanner.expire(now)

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.close()
        self.feed = self.scanner = None
