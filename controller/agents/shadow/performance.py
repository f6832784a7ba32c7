"""Performance_Profiling: mirrored requests replayed to the shadow service on this host.

Python standard library only.  A shadow's TCP stack cannot serve a mirrored
connection itself (its sequence numbers are not production's, its answers are
dropped at the switch), so the profile replays each mirrored request over a fresh
local connection and times the answer:

- `Requests` (pure, what the tests drive) follows the mirrored connections: TCP
  from the client's SYN (a connection joined mid-stream is not followed), the
  client's payload put back in sequence order (`ids.Stream`); once production's
  first answer byte after some of it is seen, those bytes are one `Request`.  UDP:
  a client datagram followed by an answer from production is one.  A request cut by
  the mirror's snaplen or larger than `MAX_REQUEST` is not replayed.
- `replay.Replayer` replays them to the shadow service, over loopback only, in a
  worker thread, and times the answers (replay.py).
- `Profiler` (pure) keeps the last `window` answers: p50 and p99 latency, throughput,
  and a finding when `p50_ms_max` or `p99_ms_max` is missed (once `min_samples`
  answers are in the window; one finding per `cooldown` s).
- `PerformanceProfile` puts them together with the capture (`feed.CaptureFeed`) and
  the CPU and memory of the image's process group (`host.SysStats`), as metrics.
"""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, NamedTuple

from controller.agents.shadow.capture import ACK, FIN, RST, SYN, Capture, Segment
from controller.agents.shadow.feed import CaptureFeed
from controller.agents.shadow.host import SysStats
from controller.agents.shadow.ids import IDLE, Endpoint, Stream
from controller.agents.shadow.protocol import Finding
from controller.agents.shadow.replay import Answer, Replayer, Request, replay
from controller.agents.shadow.settings import Settings

if TYPE_CHECKING:
    from controller.agents.shadow.profiles import ProfileContext

NAME = "Performance_Profiling"
MAX_REQUEST = 64 * 1024     # bytes of a request replayed at most; a larger one is not
CONNECTIONS = 16384         # followed at most; beyond, the longest unseen is forgotten
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class PerformanceSettings:
    rate: float = 50.0
    timeout: float = 2.0
    window: int = 200
    min_samples: int = 20
    p50_ms_max: float | None = None
    p99_ms_max: float | None = None
    cooldown: float = 60.0
    severity: str = "low"

    @classmethod
    def read(cls, given: Mapping[str, Any]) -> PerformanceSettings:
        """The settings of the manifest's `profiles.Performance_Profiling` (ValueError)."""
        s, d = Settings(given), cls()
        out = cls(rate=s.number("rate", d.rate, high=10000),
                  timeout=s.number("timeout", d.timeout, high=60),
                  window=s.integer("window", d.window, low=1, high=100000),
                  min_samples=s.integer("min_samples", d.min_samples, low=1, high=100000),
                  p50_ms_max=s.number("p50_ms_max", None),
                  p99_ms_max=s.number("p99_ms_max", None),
                  cooldown=s.number("cooldown", d.cooldown, low_ok=True),
                  severity=s.severity("severity", d.severity))
        s.done()
        if out.min_samples > out.window:
            raise ValueError(f"min_samples: {out.min_samples} is above window ({out.window})")
        return out


# -- the requests of the mirrored connections ----------------------------------------------

class ExchangeKey(NamedTuple):
    protocol: str
    client: Endpoint
    server: Endpoint


@dataclass
class Exchange:
    """One mirrored connection (or UDP flow), client -> server."""
    protocol: str
    server: Endpoint
    seen: float
    stream: Stream = field(default_factory=lambda: Stream(0))
    payload: bytearray = field(default_factory=bytearray)
    whole: bool = True                      # nothing of the request missing or too much
    asked: bool = False                     # UDP: a client datagram awaits its answer
    server_first: bool = False
    fins: int = 0
    done: bool = False                      # TCP: replayed (or given up)


class Requests:
    """Segments in, requests out: `feed(segment, now)`, `expire(now)` on a monotonic
    clock.  `servers` are the production addresses: the only ones replayed to."""

    def __init__(self, servers: Collection[IPv4Address], idle: float = IDLE,
                 limit: int = CONNECTIONS) -> None:
        self.servers, self.idle, self.limit = set(servers), idle, limit
        self.exchanges: collections.OrderedDict[ExchangeKey, Exchange] = collections.OrderedDict()
        self.skipped = 0                    # requests cut or too large: not replayed

    def feed(self, seg: Segment, now: float) -> list[Request]:
        src, dst = Endpoint(seg.src, seg.sport), Endpoint(seg.dst, seg.dport)
        to_server = seg.dst in self.servers and seg.src not in self.servers
        if not to_server and not (seg.src in self.servers and seg.dst not in self.servers):
            return []                       # not the appliance's traffic
        client, server = (src, dst) if to_server else (dst, src)
        key = ExchangeKey(seg.protocol, client, server)
        ex = self.exchanges.get(key)
        opening = seg.protocol == "tcp" and to_server and seg.flags & (SYN | ACK) == SYN
        if ex is not None and opening and ex.stream.next != (seg.seq + 1) & _MASK:
            ex = None                       # the ports used again: a new connection
        if ex is None:
            if seg.protocol == "tcp" and not opening:
                return []                   # TCP is followed from its SYN only
            ex = self._open(key, Exchange(seg.protocol, server, now))
        ex.seen = now
        self.exchanges.move_to_end(key)
        if seg.protocol == "udp":
            return self._udp(ex, seg, to_server)
        out = self._tcp(ex, seg, to_server)
        if seg.flags & FIN:
            ex.fins += 1
        if seg.flags & RST or ex.fins >= 2:
            del self.exchanges[key]
        return out

    def expire(self, now: float) -> None:
        while self.exchanges:
            key, ex = next(iter(self.exchanges.items()))
            if now - ex.seen < self.idle:
                break
            del self.exchanges[key]

    def _open(self, key: ExchangeKey, ex: Exchange) -> Exchange:
        if key not in self.exchanges and len(self.exchanges) >= self.limit:
            self.exchanges.popitem(last=False)
        self.exchanges[key] = ex
        return ex

    def _tcp(self, ex: Exchange, seg: Segment, to_server: bool) -> list[Request]:
        if ex.done:
            return []
        if not to_server:
            if seg.size == 0:
                return []
            if not ex.payload:
                ex.server_first = True      # a banner: the client has not spoken yet
                return []
            ex.done = True
            return self._request(ex, ex.server_first)
        if seg.flags & SYN:
            ex.stream.syn(seg.seq)
        if seg.size > len(seg.payload):
            ex.whole = False                # cut by the mirror's snaplen
        seq = (seg.seq + 1) & _MASK if seg.flags & SYN else seg.seq
        for run in ex.stream.add(seq, seg.payload, seg.size):
            ex.payload += run.data[run.start:]
        if len(ex.payload) > MAX_REQUEST:
            ex.whole, ex.payload = False, bytearray()
            ex.done = True
            self.skipped += 1
        return []

    def _udp(self, ex: Exchange, seg: Segment, to_server: bool) -> list[Request]:
        if to_server:
            ex.payload, ex.whole, ex.asked = bytearray(seg.payload), seg.size == len(
                seg.payload), True
            return []
        if not ex.asked:
            return []                       # no question waiting
        ex.asked = False
        return self._request(ex, False)

    def _request(self, ex: Exchange, server_first: bool) -> list[Request]:
        if not ex.whole:
            self.skipped += 1
            return []
        return [Request(ex.protocol, ex.server, bytes(ex.payload), server_first)]


# -- the figures -------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..100) of sorted `values`."""
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


class Profiler:
    """Answers in, figures and findings out: the last `window` answers' latencies and
    throughput; `check(now)` is a finding when a threshold is missed."""

    def __init__(self, settings: PerformanceSettings,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.settings, self.wallclock = settings, wallclock
        self.window: collections.deque[Answer] = collections.deque(maxlen=settings.window)
        self.replays = self.errors = 0
        self.reported: float | None = None

    def add(self, answers: Iterable[Answer]) -> None:
        for answer in answers:
            self.replays += 1
            if answer.latency_ms is None:
                self.errors += 1
            else:
                self.window.append(answer)

    def latencies(self) -> tuple[float, float] | None:
        """(p50, p99) in ms, or None before an answer."""
        if not self.window:
            return None
        values = sorted(a.latency_ms for a in self.window)
        return percentile(values, 50), percentile(values, 99)

    def throughput(self) -> float:
        """Answer bytes a second over the window (from request sent to answer's end)."""
        seconds = sum(a.seconds for a in self.window)
        return sum(a.size for a in self.window) / seconds if seconds > 0 else 0.0

    def check(self, now: float) -> list[Finding]:
        s = self.settings
        figures = self.latencies()
        if figures is None or len(self.window) < s.min_samples:
            return []
        if self.reported is not None and now - self.reported < s.cooldown:
            return []
        missed = [f"latency {name} {value:.1f} ms > {name}_ms_max {most:g}"
                  for name, value, most in (("p50", figures[0], s.p50_ms_max),
                                            ("p99", figures[1], s.p99_ms_max))
                  if most is not None and value > most]
        if not missed:
            return []
        self.reported = now
        return [Finding(NAME, s.severity, None,
                        f"{' and '.join(missed)} over the last {len(self.window)} answers "
                        f"(p50 {figures[0]:.1f} ms, p99 {figures[1]:.1f} ms)", self.wallclock())]


# -- the profile -------------------------------------------------------------------------------

class PerformanceProfile:
    """The profile the agent runs (`profiles.PROFILES[NAME]`).  `metrics()`: the figures
    for HEARTBEAT; `lag_ms`: how far behind the capture is."""

    def __init__(self, open_capture: Callable[[str], Capture] = Capture,
                 now: Callable[[], float] = time.monotonic,
                 replay: Callable[[Request, float], Answer] = replay,
                 proc_root: str = "/proc") -> None:
        self.open_capture, self.now, self._replay, self.proc_root = (open_capture, now,
                                                                     replay, proc_root)
        self.feed: CaptureFeed | None = None
        self.requests: Requests | None = None
        self.replayer: Replayer | None = None
        self.profiler: Profiler | None = None

    @property
    def lag_ms(self) -> float:
        return self.feed.lag_ms if self.feed is not None else 0.0

    def start(self, ctx: ProfileContext) -> None:
        settings = PerformanceSettings.read(ctx.settings)
        self.pgid, self.stats = ctx.pgid, SysStats(ctx.interface, proc_root=self.proc_root)
        self._cpu = (self.now(), self.stats.cpu_seconds(self.pgid))
        self.requests = Requests({a.ip for a in ctx.addresses})
        self.profiler = Profiler(settings, ctx.wallclock)
        self.feed = CaptureFeed(self.open_capture(ctx.interface), self.now)
        self.replayer = Replayer(settings.rate, settings.timeout, self._replay, self.now)

    def poll(self) -> list[Finding]:
        requests, now = self.feed.drain(self.requests.feed)
        for request in requests:
            self.replayer.submit(request)
        self.requests.expire(now)
        self.profiler.add(self.replayer.take())
        return self.profiler.check(now)

    def metrics(self) -> dict[str, float]:
        now, cpu = self.now(), self.stats.cpu_seconds(self.pgid)
        (then, before), self._cpu = self._cpu, (now, cpu)
        out: dict[str, float] = {}
        figures = self.profiler.latencies()
        if figures is not None:
            out["latency_p50_ms"], out["latency_p99_ms"] = (round(f, 3) for f in figures)
        out.update(throughput_bps=round(self.profiler.throughput(), 1),
                   replays=float(self.profiler.replays),
                   replay_drops=float(self.replayer.drops),
                   cpu_percent=round(max(0.0, cpu - before) / max(now - then, 1e-6) * 100, 1),
                   memory_bytes=float(self.stats.memory_bytes(self.pgid)))
        return out

    def stop(self) -> None:
        if self.replayer is not None:
            self.replayer.stop()
        if self.feed is not None:
            self.feed.close()
        self.feed = self.requests = self.replayer = None
