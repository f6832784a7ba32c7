"""A profile's poll of the mirrored traffic: the capture read for a bounded time.

Python standard library only.  `CaptureFeed.drain(take)` reads what waits in the
capture, `CHUNK` frames at a time, hands every segment to `take(segment, now)` and
stops once the capture is drained or `BUDGET` s have passed (the rest waits for the
next poll, and `lag_ms` says how far behind that leaves the profile).  The profiles
that read the slot's interface (Anomaly_Detection, Performance_Profiling) poll
through it; its `take` is the profile's pure part.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, Protocol, TypeVar

from controller.agents.shadow.capture import Segment

BUDGET = 0.05               # s of reading per poll at most
CHUNK = 256                 # frames read at a time

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


class CaptureFeed:
    def __init__(self, capture: Source, now: Callable[[], float], budget: float = BUDGET,
                 chunk: int = CHUNK) -> None:
        self.capture, self.now, self.budget, self.chunk = capture, now, budget, chunk

    @property
    def lag_ms(self) -> float:
        return self.capture.lag_ms

    def drain(self, take: Callable[[Segment, float], list[T]]) -> Drained[T]:
        out: list[T] = []
        deadline = self.now() + self.budget
        while True:
            segments = self.capture.read(self.chunk)
            now = self.now()
            for seg in segments:
                out += take(seg, now)
            if self.capture.drained or now >= deadline:
                return Drained(out, now)

    def close(self) -> None:
        self.capture.close()
