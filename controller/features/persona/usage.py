"""A persona's usage from its gateway counters: totals that survive counter resets,
the current rate, and which alert thresholds it crosses.

Pure: the runtime reads the counters (flow or aggregate stats on the gateway)
every poll and folds each `Sample` into the persona's `Usage` with `update`;
time is a monotonic reading passed in.

Why per-source readings: a flow that is re-installed (a policy change gives it
a new cookie revision; an OpenFlow ADD replaces it) starts counting from zero.
When several flows are summed before the hub sees them, one of them going back
to zero looks like a smaller total, and nobody can tell how much it counted
since.  So a sample keeps each source (one flow, or one aggregate request)
apart, under a key the runtime chooses, and a reset is detected per source:
one of its counters went down, or its age (a flow's duration) says it was
installed again since the last reading.  A reset
source contributes everything it counted since it restarted; a source that
disappeared contributes nothing more; totals never go backwards.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from controller.features.persona import net

BANDWIDTH, BYTES, SECURITY_EVENTS, LATENCY, EXPIRY_WARNING = (
    "bandwidth", "bytes", "security_events", "latency", "expiry_warning")
THRESHOLD_KINDS = (BANDWIDTH, BYTES, SECURITY_EVENTS, LATENCY, EXPIRY_WARNING)
DEFAULT_EXPIRY_WARNING = 300      # seconds; alert_thresholds.expiry_warning "5m"
AGE_TOLERANCE = 0.25              # seconds: switch clock vs sample time (see Reading)


class Counters(NamedTuple):
    """What a persona's gateway counts, both directions ("out" = from the persona).

    A named tuple rather than a frozen dataclass: a poll of a thousand personas
    makes tens of thousands of them, and a tuple is made three times faster."""
    bytes_out: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    packets_in: int = 0
    connections: int = 0        # new connections admitted
    denied: int = 0             # new connections refused: security events

    # Written out field by field: a poll of a thousand personas does this tens of
    # thousands of times, and a loop over the fields cost most of the poll.
    def __add__(self, other: Counters) -> Counters:
        return Counters(self.bytes_out + other.bytes_out, self.bytes_in + other.bytes_in,
                        self.packets_out + other.packets_out, self.packets_in + other.packets_in,
                        self.connections + other.connections, self.denied + other.denied)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.bytes_out - other.bytes_out, self.bytes_in - other.bytes_in,
                        self.packets_out - other.packets_out, self.packets_in - other.packets_in,
                        self.connections - other.connections, self.denied - other.denied)

    def any_below(self, other: Counters) -> bool:
        """Whether any counter is lower than in ``other`` (a restarted counter)."""
        return (self.bytes_out < other.bytes_out or self.bytes_in < other.bytes_in
                or self.packets_out < other.packets_out or self.packets_in < other.packets_in
                or self.connections < other.connections or self.denied < other.denied)

    @property
    def bytes(self) -> int:
        return self.bytes_out + self.bytes_in

    @property
    def packets(self) -> int:
        return self.packets_out + self.packets_in

    def to_body(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in _NAMES}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Counters:
        return cls(**{f: int(body.get(f, 0)) for f in _NAMES})


_NAMES = Counters._fields
assert _NAMES == ("bytes_out", "bytes_in", "packets_out", "packets_in", "connections",
                  "denied"), "Counters' arithmetic names every field"


@dataclass(frozen=True)
class Reading:
    """One counter source as read at one poll.

    ``age`` is how long the source has been counting when the switch knows
    (a flow's duration); a smaller age than last time means it was
    re-installed, even if it has already counted past its old values.
    """
    counters: Counters
    age: float | None = None

    def restarted_since(self, before: Reading, elapsed: float | None = None) -> bool:
        """Whether the source started counting again since ``before``, read
        ``elapsed`` seconds earlier: a counter went down, the age went back, or
        the age is shorter than the interval (it did not exist at the last
        reading).  ``AGE_TOLERANCE`` absorbs the gap between the switch's clock
        and the hub's sample times; a source re-installed within it of a poll,
        twice in a row, and counting past its old values is the blind spot.
        """
        if self.counters.any_below(before.counters):
            return True
        if self.age is None or before.age is None:
            return False
        return self.age < before.age or \
            (elapsed is not None and self.age + AGE_TOLERANCE < elapsed)


@dataclass(frozen=True)
class Sample:
    """Every source's reading at one monotonic time ``at``; keys are the runtime's
    names for its sources (a flow's table/priority/match, an aggregate's cookie)."""
    at: float
    readings: tuple[tuple[str, Reading], ...]

    @classmethod
    def of(cls, at: float, readings: Mapping[str, Reading | Counters]) -> Sample:
        return cls(at, tuple(sorted(
            (key, r if isinstance(r, Reading) else Reading(r)) for key, r in readings.items())))


@dataclass(frozen=True)
class Usage:
    """A persona's usage so far: totals, the rate over the last interval, and the
    last reading of every source (to diff the next sample against)."""
    totals: Counters = Counters()
    rate_out_bps: float = 0.0
    rate_in_bps: float = 0.0
    at: float | None = None                     # monotonic time of the last sample
    last: tuple[tuple[str, Reading], ...] = ()

    @property
    def rate_bps(self) -> float:
        """The busier direction: what a per-direction bandwidth limit is compared with."""
        return max(self.rate_out_bps, self.rate_in_bps)

    def to_body(self) -> dict[str, Any]:
        """What to persist so a restarted controller neither loses nor double counts.

        The monotonic time and the rates are left out: they mean nothing to
        another process, so the first sample after a restart has rate 0.
        """
        return {"totals": self.totals.to_body(),
                "last": {key: {"counters": r.counters.to_body(), "age": r.age}
                         for key, r in self.last}}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Usage:
        last = tuple(sorted((key, Reading(Counters.from_body(r["counters"]), r.get("age")))
                            for key, r in body.get("last", {}).items()))
        return cls(totals=Counters.from_body(body.get("totals", {})), last=last)


def update(usage: Usage | None, sample: Sample) -> Usage:
    """Fold one sample into the usage: totals grow by what each source counted
    since its last reading; the rate is bits over the time since the last sample.

    The first sample (or the first after a restart) has no interval: its rate is
    0.  A sample no later than the last one keeps the previous rate.
    """
    usage = usage or Usage()
    before = dict(usage.last)
    elapsed = sample.at - usage.at if usage.at is not None else None
    delta = Counters()
    for key, reading in sample.readings:
        prev = before.get(key)
        if prev is None or reading.restarted_since(prev, elapsed):
            delta = delta + reading.counters
        else:
            delta = delta + (reading.counters - prev.counters)
    rate_out, rate_in = usage.rate_out_bps, usage.rate_in_bps
    if usage.at is None:
        rate_out = rate_in = 0.0
    elif elapsed is not None and elapsed > 0:
        rate_out, rate_in = delta.bytes_out * 8 / elapsed, delta.bytes_in * 8 / elapsed
    return Usage(usage.totals + delta, rate_out, rate_in, sample.at, sample.readings)


# -- thresholds ----------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """A persona's ``alert_thresholds`` in base units (None: no alert of that kind)."""
    bandwidth_bps: float | None = None
    bytes: int | None = None
    security_events: int | None = None

    @classmethod
    def from_body(cls, alert_thresholds: Mapping[str, Any] | None) -> Thresholds:
        """From a stored persona body's ``alert_thresholds`` (normalized by
        ``controller.features.persona.document``: the rate is in ``bandwidth_kbps``)."""
        t = alert_thresholds or {}
        kbps = t.get("bandwidth_kbps")
        return cls(bandwidth_bps=kbps * 1000 if kbps is not None else None,
                   bytes=t.get("bytes"), security_events=t.get("security_events"))


def expiry_warning_seconds(alert_thresholds: Mapping[str, Any] | None) -> float:
    """``alert_thresholds.expiry_warning`` in seconds (stored as ``expiry_warning_s``),
    default five minutes."""
    seconds = (alert_thresholds or {}).get("expiry_warning_s")
    return DEFAULT_EXPIRY_WARNING if seconds is None else seconds


class Crossing(NamedTuple):
    """A condition that holds now: (kind, value, threshold)."""
    kind: str
    value: float
    threshold: float


def check_thresholds(usage: Usage, thresholds: Thresholds | None,
                     latency_objective: float | None, measured_latency: float | None,
                     expires_at: float | None, now: float,
                     warning_seconds: float | None = DEFAULT_EXPIRY_WARNING) -> list[Crossing]:
    """Every alert condition that holds now, in ``THRESHOLD_KINDS`` order.

    - bandwidth: the current rate (the busier direction) exceeds the threshold;
    - bytes: total bytes (both directions) exceed the threshold;
    - security_events: denied attempts reach the threshold;
    - latency: the measured round trip (seconds) misses the objective (seconds);
    - expiry_warning: the persona expires within ``warning_seconds`` (value: the
      seconds left, never negative).

    ``expires_at`` and ``now`` are wall-clock seconds (an expiration is a date);
    a kind whose inputs are None is not checked.  The caller raises an alert for
    each crossing and clears the kinds it checked that are absent.
    """
    t = thresholds or Thresholds()
    out: list[Crossing] = []
    if t.bandwidth_bps is not None and usage.rate_bps > t.bandwidth_bps:
        out.append(Crossing(BANDWIDTH, usage.rate_bps, t.bandwidth_bps))
    if t.bytes is not None and usage.totals.bytes > t.bytes:
        out.append(Crossing(BYTES, usage.totals.bytes, t.bytes))
    if t.security_events is not None and usage.totals.denied >= t.security_events:
        out.append(Crossing(SECURITY_EVENTS, usage.totals.denied, t.security_events))
    if latency_objective is not None and measured_latency is not None \
            and measured_latency > latency_objective:
        out.append(Crossing(LATENCY, measured_latency, latency_objective))
    if expires_at is not None and warning_seconds is not None \
            and expires_at - now <= warning_seconds:
        out.append(Crossing(EXPIRY_WARNING, max(0.0, expires_at - now), warning_seconds))
    return out


def checked_kinds(thresholds: Thresholds | None, latency_objective: float | None,
                  measured_latency: float | None, expires_at: float | None,
                  warning_seconds: float | None = DEFAULT_EXPIRY_WARNING) -> tuple[str, ...]:
    """The kinds ``check_thresholds`` evaluates with these inputs: a kind it did
    not evaluate (no threshold, no latency measured yet) must not be cleared."""
    t = thresholds or Thresholds()
    kinds = {BANDWIDTH: t.bandwidth_bps is not None, BYTES: t.bytes is not None,
             SECURITY_EVENTS: t.security_events is not None,
             LATENCY: latency_objective is not None and measured_latency is not None,
             EXPIRY_WARNING: expires_at is not None and warning_seconds is not None}
    return tuple(k for k in THRESHOLD_KINDS if kinds[k])


# -- the REST view ---------------------------------------------------------------

def usage_view(usage: Usage, at: float, latency: float | None) -> dict:
    """What GET /v1/personas/{id}/usage answers ("in": to the persona, "out": from it)."""
    t = usage.totals
    return {"bytes": {"in": t.bytes_in, "out": t.bytes_out},
            "packets": {"in": t.packets_in, "out": t.packets_out},
            "connections": t.connections, "denied": t.denied,
            "rate_bps": {"in": usage.rate_in_bps, "out": usage.rate_out_bps},
            "updated_at": at, "latency_ms": round(latency * 1000, 3) if latency else None}


def counted(kind: str, packets: int, nbytes: int) -> Counters:
    """One counted flow's counters, by what it counts (controller.features.persona.net)."""
    if kind == net.OUT:
        return Counters(bytes_out=nbytes, packets_out=packets)
    if kind == net.IN:
        return Counters(bytes_in=nbytes, packets_in=packets)
    if kind == net.CONNECTION:
        return Counters(connections=packets)
    return Counters(denied=packets)
