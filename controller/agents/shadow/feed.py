"""A profile's poll of the mirrored traffic: the capture read for a bounded time.

Python standard library only.  `CaptureFeed.drain(take)` reads what waits in the
capture, `CHUNK` frames at a time at most, hands every segment to `take(segment, now)`
and stops once the capture is drained or `BUDGET` s have passed (the rest waits for
the next poll, and `lag_ms` says how far behind that leaves the profile).  Each read
takes only as many frames as the time left allows at what a segment cost `take` so
far (`SegmentCost`): a profile whose `take` is slow (expensive IDS patterns) keeps to
its budget instead of blocking the agent's loop, and its heartbeats, for a whole
`CHUNK`.  Every profile that reads the slot's interface polls through it; its `take`
is the profile's pure part.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, Protocol, TypeVar

from controller.agents.shadow.capture import Segment

BUDGET = 0.05               # s of reading per poll at most
CHUNK = 256                 # frames read at a time at most
FIRST_READ = 16            # frames of the first read, before a segment was timed

T = TypeVar("T")


class Source(Protocol):
    """What `capture.Capture` offers a reader (tests give a fake)."""
    lag_ms: float
    drained: bool

    def read(self, limit: int) -> list[Segment]: ...

    def close(self) -> None: ...


class Drained(NamedTuple, Generic[T]):
    out: list[T]                # what `take` returned, in order
    now: float                  # the clock when the reading ended


class SegmentCost:
    """What `take` spent on a segment: the mean of the last readings, weighted to the
    latest (a burst of expensive segments is felt at the next read)."""

    def __init__(self, first: float) -> None:
        self.seconds = first

    def add(self, seconds: float, segments: int) -> None:
        if segments:
            self.seconds = (self.seconds + max(0.0, seconds) / segments) / 2

    def within(self, seconds: float, most: int) -> int:
        """How many segments fit in `seconds` (one at least, `most` at most)."""
        if self.seconds <= 0:
            return most
        return max(1, min(most, int(seconds / self.seconds + 1e-9)))


class CaptureFeed:
    def __init__(self, capture: Source, now: Callable[[], float], budget: float = BUDGET,
                 chunk: int = CHUNK) -> None:
        self.capture, self.now, self.budget, self.chunk = capture, now, budget, chunk
        self.cost = SegmentCost(budget / FIRST_READ)

    @property
    def lag_ms(self) -> float:
        return self.capture.lag_ms

    def drain(self, take: Callable[[Segment, float], list[T]]) -> Drained[T]:
        out: list[T] = []
        now = self.now()
        deadline = now + self.budget
        while True:
            segments = self.capture.read(self.cost.within(deadline - now, self.chunk))
            now = self.now()
            for seg in segments:
                out += take(seg, now)
            taken, now = now, self.now()
            self.cost.add(now - taken, len(segments))
            if self.capture.drained or now >= deadline:
                return Drained(out, now)

    def close(self) -> None:
        self.capture.close()
