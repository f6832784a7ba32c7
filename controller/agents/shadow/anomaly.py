"""Anomaly_Detection: a robust per-source baseline of the mirrored traffic, then scores.

Python standard library only.  The profile (`AnomalyProfile`) reads the mirrored
traffic on the slot's interface and hands every segment to a `Detector`, which is
pure (no socket, clocks passed in) and is what the tests drive:

- Time is cut in windows of `window` s from the profile's start.  In each, per
  source (the endpoint of a segment that is not a production address; a segment
  with no production endpoint, such as the agent's own channel, is not counted),
  the figures are: connection attempts (TCP SYNs from the source, a retransmitted
  SYN counted once), distinct destination ports touched (protocol and port, any
  segment from the source), bytes (TCP and UDP data, both directions, as declared:
  a truncated copy counts whole) and failed handshakes (a SYN answered by a RST, or
  not answered by a SYN+ACK before the window ends).
- The windows that begin within the first `baseline` s are the baseline: the figures
  of every active source in each of them are kept, and their medians are the
  baseline's per-source figures.  From then on each window is scored when it ends:
  - **port_scan**: distinct ports >= `scan_ports`, severity `scan_severity`;
  - **burst**: attempts >= `burst_factor` x max(median attempts, `floor_attempts`),
    or bytes >= `burst_factor` x max(median bytes, `floor_bytes`), severity
    `severity` (a scanning source's attempts are its scan's: only its bytes can
    make a burst).
- One finding per (source, kind) per `cooldown` s.  Its 5-tuple is the source toward
  the first port it touched in the window: `(protocol, source, 0, production
  address, port)`; its evidence names the kind, the figure, the threshold and the
  baseline.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, NamedTuple

from controller.agents.shadow.capture import ACK, RST, SYN, Capture, Segment
from controller.agents.shadow.feed import CaptureFeed
from controller.agents.shadow.protocol import FiveTuple, Finding
from controller.agents.shadow.settings import Settings

if TYPE_CHECKING:
    from controller.agents.shadow.profiles import ProfileContext

NAME = "Anomaly_Detection"
SOURCES = 4096              # sources counted per window at most; beyond, new ones are not
PORTS = 4096                # distinct ports kept per source and window at most
SAMPLES = 65536             # baseline figures (source, window) kept at most
SCAN, BURST = "port_scan", "burst"


@dataclass(frozen=True)
class AnomalySettings:
    window: float = 5.0
    baseline: float = 30.0
    scan_ports: int = 15
    burst_factor: float = 20.0
    floor_attempts: float = 1.0
    floor_bytes: float = 65536.0
    cooldown: float = 60.0
    severity: str = "medium"
    scan_severity: str = "high"

    @classmethod
    def read(cls, given: Mapping[str, Any]) -> AnomalySettings:
        """The settings of the manifest's `profiles.Anomaly_Detection` (ValueError)."""
        s, d = Settings(given), cls()
        out = cls(window=s.number("window", d.window, high=3600),
                  baseline=s.number("baseline", d.baseline, high=86400, low_ok=True),
                  scan_ports=s.integer("scan_ports", d.scan_ports, low=2, high=65536),
                  burst_factor=s.number("burst_factor", d.burst_factor, low=1, low_ok=True),
                  floor_attempts=s.number("floor_attempts", d.floor_attempts),
                  floor_bytes=s.number("floor_bytes", d.floor_bytes),
                  cooldown=s.number("cooldown", d.cooldown, low_ok=True),
                  severity=s.severity("severity", d.severity),
                  scan_severity=s.severity("scan_severity", d.scan_severity))
        s.done()
        return out


class Target(NamedTuple):
    """A port of a production address, as a source touched it."""
    protocol: str
    address: IPv4Address
    port: int


class Handshake(NamedTuple):
    """A SYN awaiting its answer: the source's port toward a target."""
    sport: int
    target: Target


@dataclass
class Figures:
    """One source in one window."""
    first: Target                                   # the first port it touched
    attempts: int = 0
    bytes: int = 0
    failed: int = 0
    ports: set[tuple[str, int]] = field(default_factory=set)
    waiting: set[Handshake] = field(default_factory=set)   # SYNs not answered yet


@dataclass(frozen=True)
class Baseline:
    """The medians of the baseline's (source, window) figures; zero when it saw none."""
    attempts: float = 0.0
    bytes: float = 0.0
    ports: float = 0.0
    samples: int = 0


class Detector:
    """Segments in, findings out: `feed(segment, now)` and `expire(now)` on a monotonic
    clock starting at `start`; findings' `at` from `wallclock`.  `servers` are the
    production addresses."""

    def __init__(self, settings: AnomalySettings, servers: Collection[IPv4Address],
                 wallclock: Callable[[], float] = time.time, start: float = 0.0) -> None:
        self.settings, self.servers, self.wallclock = settings, set(servers), wallclock
        self.start = start
        self.index = 0                              # the current window's
        self.figures: dict[IPv4Address, Figures] = {}
        self.samples: list[tuple[int, int, int]] = []    # (attempts, bytes, ports)
        self.baseline: Baseline | None = None       # once learnt
        self.reported: dict[tuple[IPv4Address, str], float] = {}   # -> when
        self.untracked = 0                          # segments of sources beyond SOURCES

    @property
    def learning(self) -> bool:
        return self.index * self.settings.window < self.settings.baseline

    def feed(self, seg: Segment, now: float) -> list[Finding]:
        found = self.expire(now)
        if seg.dst in self.servers and seg.src not in self.servers:
            source, target, outward = seg.src, Target(seg.protocol, seg.dst, seg.dport), True
        elif seg.src in self.servers and seg.dst not in self.servers:
            source, target, outward = seg.dst, Target(seg.protocol, seg.src, seg.sport), False
        else:
            return found                            # not the appliance's traffic
        fig = self.figures.get(source)
        if fig is None:
            if len(self.figures) >= SOURCES:
                self.untracked += 1
                return found
            fig = self.figures[source] = Figures(target)
        fig.bytes += seg.size
        if outward:
            if len(fig.ports) < PORTS:
                fig.ports.add((seg.protocol, seg.dport))
            if seg.protocol == "tcp" and seg.flags & (SYN | ACK) == SYN:
                handshake = Handshake(seg.sport, target)
                if handshake not in fig.waiting:
                    fig.attempts += 1
                    fig.waiting.add(handshake)
        elif seg.protocol == "tcp":
            handshake = Handshake(seg.dport, target)
            if seg.flags & (SYN | ACK) == SYN | ACK:
                fig.waiting.discard(handshake)
            elif seg.flags & RST and handshake in fig.waiting:
                fig.waiting.discard(handshake)
                fig.failed += 1
        return found

    def expire(self, now: float) -> list[Finding]:
        """Close the window if `now` is past it: learnt or scored."""
        index = int((now - self.start) // self.settings.window)
        if index <= self.index:
            return []
        found: list[Finding] = []
        for fig in self.figures.values():
            fig.failed += len(fig.waiting)
        if self.learning:
            for fig in self.figures.values():
                if len(self.samples) < SAMPLES:
                    self.samples.append((fig.attempts, fig.bytes, len(fig.ports)))
        else:
            found = self._score(now)
        self.figures, self.index = {}, index
        if self.baseline is None and not self.learning:
            self.baseline = self._learnt()
        return found

    def _learnt(self) -> Baseline:
        if not self.samples:
            return Baseline()
        attempts, sizes, ports = zip(*self.samples)
        return Baseline(statistics.median(attempts), statistics.median(sizes),
                        statistics.median(ports), len(self.samples))

    def _score(self, now: float) -> list[Finding]:
        s, base = self.settings, self.baseline or Baseline()
        most_attempts = s.burst_factor * max(base.attempts, s.floor_attempts)
        most_bytes = s.burst_factor * max(base.bytes, s.floor_bytes)
        found: list[Finding] = []
        for source, fig in self.figures.items():
            scan = len(fig.ports) >= s.scan_ports
            if scan:
                found += self._report(source, SCAN, fig, now, s.scan_severity, (
                    f"{_ports(fig)} distinct ports in {s.window:g} s (threshold "
                    f"{s.scan_ports}); {fig.attempts} connection attempts, {fig.failed} failed; "
                    f"baseline median {base.ports:g} ports per source"))
            over = []
            if not scan and fig.attempts >= most_attempts:
                over.append(f"{fig.attempts} connection attempts (threshold {most_attempts:g}, "
                            f"baseline median {base.attempts:g})")
            if fig.bytes >= most_bytes:
                over.append(f"{fig.bytes} bytes (threshold {most_bytes:g}, baseline median "
                            f"{base.bytes:g})")
            if over:
                found += self._report(source, BURST, fig, now, s.severity, (
                    f"{' and '.join(over)} in {s.window:g} s, {s.burst_factor:g}x the baseline "
                    f"per source"))
        return found

    def _report(self, source: IPv4Address, kind: str, fig: Figures, now: float,
                severity: str, figures: str) -> list[Finding]:
        last = self.reported.get((source, kind))
        if last is not None and now - last < self.settings.cooldown:
            return []
        self.reported[(source, kind)] = now
        t = fig.first
        return [Finding(NAME, severity, FiveTuple(t.protocol, source, 0, t.address, t.port),
                        f"{kind}: {figures}", self.wallclock())]


def _ports(fig: Figures) -> str:
    return f"{len(fig.ports)}+" if len(fig.ports) >= PORTS else str(len(fig.ports))


# -- the profile -----------------------------------------------------------------------

class AnomalyProfile:
    """The profile the agent runs (`profiles.PROFILES[NAME]`): the settings checked at
    `start`, the capture on the slot's interface, the detector fed in `poll` for a
    bounded time (`feed.BUDGET`).  `lag_ms`: how far behind the capture is."""

    def __init__(self, open_capture: Callable[[str], Capture] = Capture,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.open_capture, self.now = open_capture, now
        self.feed: CaptureFeed | None = None
        self.detector: Detector | None = None

    @property
    def lag_ms(self) -> float:
        return self.feed.lag_ms if self.feed is not None else 0.0

    def start(self, ctx: ProfileContext) -> None:
        self.detector = Detector(AnomalySettings.read(ctx.settings),
                                 {a.ip for a in ctx.addresses}, ctx.wallclock, self.now())
        self.feed = CaptureFeed(self.open_capture(ctx.interface), self.now)

    def poll(self) -> list[Finding]:
        found, now = self.feed.drain(self.detector.feed)
        return found + self.detector.expire(now)

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.close()
        self.feed = self.detector = None
