"""Usage math: totals across counter resets, rates over the last interval, threshold checks."""
from __future__ import annotations

import random

import pytest

from controller.features.persona.usage import (
    Counters,
    Crossing,
    Reading,
    Sample,
    Thresholds,
    Usage,
    check_thresholds,
    checked_kinds,
    expiry_warning_seconds,
    counted,
    update,
    usage_view,
)
from controller.features.persona import net


def single(at: float, counters: Counters, age: float | None = None) -> Sample:
    """A sample with one source (counters already summed by the switch)."""
    return Sample(at, (("total", Reading(counters, age)),))


class Clock:
    """An injected monotonic clock the test moves by hand."""

    def __init__(self, start: float = 500.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def fold(*samples: Sample, usage: Usage | None = None) -> Usage:
    for sample in samples:
        usage = update(usage, sample)
    assert usage is not None
    return usage


# -- totals and rates -----------------------------------------------------------

def test_first_sample_counts_everything_and_has_no_rate() -> None:
    c = Counters(bytes_out=1000, bytes_in=500, packets_out=10, packets_in=5, connections=2, denied=1)
    usage = update(None, single(10.0, c))
    assert usage.totals == c
    assert usage.rate_out_bps == usage.rate_in_bps == 0.0
    assert usage.at == 10.0


def test_rate_is_bits_per_second_over_the_last_interval() -> None:
    clock = Clock()
    usage = fold(single(clock.now, Counters(bytes_out=1_000, bytes_in=0)),
                 single(clock.advance(2.0), Counters(bytes_out=1_001_000, bytes_in=250_000)))
    assert usage.rate_out_bps == pytest.approx(4_000_000.0)
    assert usage.rate_in_bps == pytest.approx(1_000_000.0)
    assert usage.rate_bps == pytest.approx(4_000_000.0)
    # Only the last interval counts: a quiet second brings the rate to zero.
    usage = update(usage, single(clock.advance(1.0),
                                        Counters(bytes_out=1_001_000, bytes_in=250_000)))
    assert usage.rate_bps == 0.0
    assert usage.totals.bytes == 1_251_000


def test_a_reset_to_zero_never_takes_totals_back() -> None:
    clock = Clock()
    usage = fold(single(clock.now, Counters(bytes_out=5000, packets_out=50, denied=3)),
                 single(clock.advance(1), Counters(bytes_out=100, packets_out=1, denied=0)))
    # The flow was re-installed: what it counted since (100 bytes) is new traffic.
    assert usage.totals == Counters(bytes_out=5100, packets_out=51, denied=3)
    assert usage.rate_out_bps == pytest.approx(800.0)


def test_a_reset_counter_that_already_passed_its_old_value_is_caught_by_its_age() -> None:
    clock = Clock()
    usage = fold(single(clock.now, Counters(bytes_out=100), age=50.0),
                 single(clock.advance(1), Counters(bytes_out=300), age=0.4))
    assert usage.totals.bytes_out == 400
    # Installed after the last reading (age shorter than the interval), even when
    # the flow it replaced was younger still.
    usage = fold(single(clock.now, Counters(bytes_out=100), age=0.1),
                 single(clock.advance(1), Counters(bytes_out=300), age=0.5))
    assert usage.totals.bytes_out == 400
    # Kept counting (age grew by the interval, within the tolerance): an increase.
    usage = fold(single(clock.now, Counters(bytes_out=100), age=0.1),
                 single(clock.advance(1), Counters(bytes_out=300), age=0.9))
    assert usage.totals.bytes_out == 300
    # Without an age, an increase is an increase.
    usage = fold(single(clock.now, Counters(bytes_out=100)),
                 single(clock.advance(1), Counters(bytes_out=300)))
    assert usage.totals.bytes_out == 300


def test_one_of_several_sources_resetting_is_counted_exactly() -> None:
    clock = Clock()
    a, b = "flow-a", "flow-b"
    usage = fold(
        Sample.of(clock.now, {a: Counters(bytes_out=1000), b: Counters(bytes_out=9000)}),
        # b was re-installed and counted 200 since; a counted 500 more.
        Sample.of(clock.advance(1), {a: Counters(bytes_out=1500), b: Counters(bytes_out=200)}))
    assert usage.totals.bytes_out == 1000 + 9000 + 500 + 200
    assert usage.rate_out_bps == pytest.approx(700 * 8)


def test_a_source_that_disappears_keeps_what_it_counted_and_a_new_one_counts_from_zero() -> None:
    clock = Clock()
    usage = fold(Sample.of(clock.now, {"old": Counters(bytes_in=700)}),
                 Sample.of(clock.advance(1), {}),
                 Sample.of(clock.advance(1), {"new": Counters(bytes_in=30)}),
                 Sample.of(clock.advance(1), {"new": Counters(bytes_in=50), "old": Counters(bytes_in=5)}))
    assert usage.totals.bytes_in == 700 + 30 + 20 + 5


def test_a_sample_at_the_same_time_keeps_the_rate() -> None:
    clock = Clock()
    usage = fold(single(clock.now, Counters(bytes_out=0)),
                 single(clock.advance(1), Counters(bytes_out=1000)),
                 single(clock.now, Counters(bytes_out=1200)))
    assert usage.rate_out_bps == pytest.approx(8000.0)
    assert usage.totals.bytes_out == 1200


def test_totals_are_exact_and_monotonic_under_random_resets() -> None:
    """Simulated gateway flows: random traffic, random re-installs (counters and
    duration restart); the folded totals equal the traffic that really passed."""
    rng = random.Random(7)
    clock = Clock()
    flows = {f"f{i}": [Counters(), 0.0] for i in range(6)}
    truth = Counters()
    usage = None
    previous = Counters()
    for _ in range(400):
        elapsed = rng.choice([0.5, 1.0, 1.0, 2.0])
        clock.advance(elapsed)
        sample = {}
        for key, state in flows.items():
            counters, age = state
            if rng.random() < 0.1:                        # re-installed since the last poll
                counters, age = Counters(), rng.uniform(0, elapsed * 0.7)
            else:
                age += elapsed
            step = Counters(*(rng.randrange(0, 5000) for _ in range(6)))
            if rng.random() < 0.3:
                step = Counters()                         # idle this poll
            counters = counters + step
            truth = truth + step
            flows[key] = [counters, age]
            if rng.random() < 0.95:                       # sometimes a flow is missing
                sample[key] = Reading(counters, age)
            else:
                flows[key] = [Counters(), 0.0]            # and comes back as a new flow
        usage = update(usage, Sample.of(clock.now, sample))
        assert not usage.totals.any_below(previous)
        previous = usage.totals
    assert usage is not None
    # Missing flows lose only what they counted since their last reading.
    assert usage.totals.bytes <= truth.bytes
    assert usage.totals.bytes >= truth.bytes * 0.9


def test_totals_match_the_truth_exactly_when_every_flow_is_read_every_poll() -> None:
    rng = random.Random(11)
    clock = Clock()
    flows = {f"f{i}": (Counters(), 0.0) for i in range(4)}
    truth = Counters()
    usage = None
    for _ in range(300):
        clock.advance(1.0)
        for key, (counters, age) in list(flows.items()):
            step = Counters(*(rng.randrange(0, 3000) for _ in range(6)))
            if rng.random() < 0.15:     # re-installed since the last poll (not just after it)
                if rng.random() < 0.5:  # and already counted past its old values
                    step = step + counters
                counters, age = Counters(), rng.uniform(0, 0.7)
            else:
                age += 1.0
            flows[key] = (counters + step, age)
            truth = truth + step
        usage = update(usage, Sample.of(clock.now, {k: Reading(c, a) for k, (c, a) in flows.items()}))
    assert usage is not None and usage.totals == truth


def test_persisted_usage_resumes_without_double_counting() -> None:
    clock = Clock()
    usage = fold(single(clock.now, Counters(bytes_out=100, denied=1), age=10.0),
                 single(clock.advance(1), Counters(bytes_out=400, denied=2), age=11.0))
    restored = Usage.from_body(usage.to_body())
    assert restored.totals == usage.totals and restored.last == usage.last
    assert restored.at is None and restored.rate_bps == 0.0
    # The flows kept counting while the controller was down.
    after = update(restored, single(clock.advance(30), Counters(bytes_out=1000, denied=2),
                                           age=41.0))
    assert after.totals.bytes_out == 1000 and after.totals.denied == 2
    assert after.rate_bps == 0.0          # no interval known across the restart


def test_the_rest_view_says_in_and_out() -> None:
    usage = fold(single(0.0, Counters()),
                 single(1.0, Counters(bytes_out=10, bytes_in=20, packets_out=1, packets_in=2,
                                      connections=3, denied=4)))
    assert usage_view(usage, 7.0, 0.0042) == {
        "bytes": {"in": 20, "out": 10}, "packets": {"in": 2, "out": 1},
        "connections": 3, "denied": 4, "rate_bps": {"in": 160.0, "out": 80.0},
        "updated_at": 7.0, "latency_ms": 4.2}
    assert usage_view(usage, 7.0, None)["latency_ms"] is None


def test_a_counted_flow_counts_what_its_kind_says() -> None:
    assert counted(net.OUT, 2, 300) == Counters(bytes_out=300, packets_out=2)
    assert counted(net.IN, 2, 300) == Counters(bytes_in=300, packets_in=2)
    assert counted(net.CONNECTION, 5, 999) == Counters(connections=5)
    assert counted(net.DENIED, 1, 60) == Counters(denied=1)


# -- thresholds ------------------------------------------------------------------

NOW = 1_900_000_000.0
FAR = NOW + 86400


def usage_with(rate_out: float = 0.0, rate_in: float = 0.0, bytes_out: int = 0,
               denied: int = 0) -> Usage:
    return Usage(totals=Counters(bytes_out=bytes_out, denied=denied), rate_out_bps=rate_out,
                 rate_in_bps=rate_in, at=1.0)


def kinds(crossings: list[Crossing]) -> list[str]:
    return [c.kind for c in crossings]


def test_nothing_to_check_crosses_nothing() -> None:
    assert check_thresholds(usage_with(rate_out=1e12, bytes_out=10**15, denied=10**6), None,
                            None, None, None, NOW, None) == []


@pytest.mark.parametrize("rate_out, rate_in, crossed", [
    (100e6, 0, False), (100e6 + 1, 0, True), (0, 150e6, True), (99e6, 99e6, False)])
def test_bandwidth_is_the_busier_direction_above_the_threshold(rate_out: float, rate_in: float,
                                                               crossed: bool) -> None:
    got = check_thresholds(usage_with(rate_out, rate_in), Thresholds(bandwidth_bps=100e6),
                           None, None, FAR, NOW)
    assert got == ([Crossing("bandwidth", max(rate_out, rate_in), 100e6)] if crossed else [])


@pytest.mark.parametrize("total, crossed", [(1000, False), (1001, True)])
def test_bytes_exceed(total: int, crossed: bool) -> None:
    got = check_thresholds(usage_with(bytes_out=total), Thresholds(bytes=1000), None, None, FAR, NOW)
    assert got == ([Crossing("bytes", total, 1000)] if crossed else [])


@pytest.mark.parametrize("denied, crossed", [(4, False), (5, True), (6, True)])
def test_security_events_reach(denied: int, crossed: bool) -> None:
    got = check_thresholds(usage_with(denied=denied), Thresholds(security_events=5), None, None,
                           FAR, NOW)
    assert got == ([Crossing("security_events", denied, 5)] if crossed else [])


@pytest.mark.parametrize("measured, crossed", [(0.049, False), (0.050, False), (0.051, True),
                                               (None, False)])
def test_latency_misses_the_objective(measured: float | None, crossed: bool) -> None:
    got = check_thresholds(usage_with(), None, 0.050, measured, FAR, NOW)
    assert got == ([Crossing("latency", measured, 0.050)] if crossed else [])


@pytest.mark.parametrize("left, value", [(301, None), (300, 300), (12.5, 12.5), (0, 0), (-5, 0)])
def test_expiry_warning_before_the_deadline(left: float, value: float | None) -> None:
    got = check_thresholds(usage_with(), None, None, None, NOW + left, NOW, 300)
    assert got == ([] if value is None else [Crossing("expiry_warning", value, 300)])


def test_every_kind_at_once_in_order_and_as_plain_tuples() -> None:
    got = check_thresholds(usage_with(rate_out=2e6, bytes_out=5000, denied=3),
                           Thresholds(bandwidth_bps=1e6, bytes=4000, security_events=3),
                           0.05, 0.2, NOW + 10, NOW, 60)
    assert kinds(got) == ["bandwidth", "bytes", "security_events", "latency", "expiry_warning"]
    kind, value, threshold = got[1]
    assert (kind, value, threshold) == ("bytes", 5000, 4000)


def test_thresholds_from_a_stored_persona_body() -> None:
    """The normalized body controller.features.persona.document stores."""
    stored = {"bandwidth": "80Mbps", "bandwidth_kbps": 80000, "bytes": 10**9,
              "security_events": 5, "expiry_warning": "10m", "expiry_warning_s": 600}
    assert Thresholds.from_body(stored) == Thresholds(bandwidth_bps=80e6, bytes=10**9,
                                                      security_events=5)
    assert expiry_warning_seconds(stored) == 600
    assert Thresholds.from_body(None) == Thresholds()
    assert expiry_warning_seconds(None) == expiry_warning_seconds({}) == 300


def test_checked_kinds_follow_the_inputs() -> None:
    assert checked_kinds(None, None, None, None) == ()
    assert checked_kinds(Thresholds(bytes=1), 0.05, None, NOW) == ("bytes", "expiry_warning")
    assert checked_kinds(Thresholds(1, 2, 3), 0.05, 0.01, NOW, 60) == (
        "bandwidth", "bytes", "security_events", "latency", "expiry_warning")


def test_a_crossing_persists_across_polls_until_the_rate_drops() -> None:
    """The input check_thresholds sees over time; de-duplication is the alerts' job."""
    clock = Clock()
    t = Thresholds(bandwidth_bps=8000)
    usage = update(None, single(clock.now, Counters()))
    seen = []
    for sent in (2000, 4000, 6000, 6100, 6200, 9000):
        usage = update(usage, single(clock.advance(1), Counters(bytes_out=sent)))
        seen.append(kinds(check_thresholds(usage, t, None, None, None, NOW)))
    assert seen == [["bandwidth"], ["bandwidth"], ["bandwidth"], [], [], ["bandwidth"]]
