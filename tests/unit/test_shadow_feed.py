"""A profile's poll of the capture keeps to its budget however slow its `take` is: each
read takes only the frames the time left allows at what a segment has cost so far."""
from __future__ import annotations

from ipaddress import IPv4Address

from controller.agents.shadow import feed
from controller.agents.shadow.capture import ACK, Segment
from controller.agents.shadow.feed import CaptureFeed, SegmentCost
from tests.unit.shadowfakes import FakeCapture


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorded(FakeCapture):
    def __init__(self, waiting: int) -> None:
        super().__init__("eth1")
        self.limits: list[int] = []
        self.waiting = [Segment("tcp", IPv4Address("10.0.0.9"), 40000 + i,
                                IPv4Address("10.0.0.5"), 80, ACK, i, b"x") for i in range(waiting)]

    def read(self, limit):
        self.limits.append(limit)
        return super().read(limit)


def slow_take(clock: Clock, seconds: float):
    def take(seg, now):
        clock.now += seconds
        return [seg]
    return take


def test_a_slow_take_keeps_the_poll_within_its_budget():
    clock, capture = Clock(), Recorded(5000)
    reader = CaptureFeed(capture, clock)
    for _ in range(5):
        start = clock.now
        taken = reader.drain(slow_take(clock, 0.02)).out          # 20 ms a segment
        assert 1 <= len(taken) <= feed.FIRST_READ
        assert clock.now - start <= feed.BUDGET + 0.02 * feed.FIRST_READ
    # once a segment was timed, a poll takes what fits in its budget, one at least
    assert capture.limits[-1] <= 3 and max(capture.limits) <= feed.FIRST_READ
    assert not capture.drained and capture.lag_ms > 0


def test_a_cheap_take_reads_whole_chunks_and_drains_the_capture():
    clock, capture = Clock(), Recorded(feed.CHUNK * 3)
    reader = CaptureFeed(capture, clock)
    assert len(reader.drain(slow_take(clock, 0.0)).out) == feed.CHUNK * 3
    assert capture.drained and capture.limits[0] == feed.FIRST_READ
    assert feed.CHUNK in capture.limits


def test_the_cost_follows_the_latest_readings():
    cost = SegmentCost(0.01)
    assert cost.within(0.05, 256) == 5
    cost.add(0.0, 0)                                           # nothing read: unchanged
    assert cost.within(0.05, 256) == 5
    for _ in range(20):
        cost.add(0.001, 100)                                   # 10 us a segment now
    assert cost.within(0.05, 256) == 256
    cost.add(1.0, 10)                                          # a burst of slow ones
    assert cost.within(0.05, 256) == 1
