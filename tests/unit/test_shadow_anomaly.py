"""Anomaly_Detection in the shadow agent: the detector fed segments and a clock directly
(a quiet baseline then a port scan, ordinary traffic, a 20x burst of attempts or bytes,
the cooldown, failed handshakes, the floors of an idle baseline), its settings, and the
profile over a fake capture."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from controller.agents.shadow.anomaly import (AnomalyProfile, AnomalySettings, Baseline,
                                              Detector)
from controller.agents.shadow.capture import ACK, PSH, RST, SYN, Segment
from controller.agents.shadow.profiles import PROFILES, ProfileContext
from controller.agents.shadow.protocol import FiveTuple
from tests.unit.shadowfakes import FakeCapture

SERVER = IPv4Address("10.0.0.5")
CLIENTS = [IPv4Address(f"10.0.0.{i}") for i in (9, 10, 11)]
SCANNER = IPv4Address("10.0.0.66")
WALL = 1_700_000_000.0


def detector(**given) -> Detector:
    return Detector(AnomalySettings.read(given), {SERVER}, lambda: WALL, start=0.0)


class Traffic:
    """Segments of clients toward SERVER, fed at given times; findings collected."""

    def __init__(self, det: Detector) -> None:
        self.det, self.found, self.sport = det, [], 30000

    def feed(self, seg: Segment, now: float) -> None:
        self.found += self.det.feed(seg, now)

    def connection(self, client, now, port=80, data=1000, answered=True) -> None:
        """A handshake, a request, an answer of `data` bytes (or a RST to the SYN)."""
        self.sport += 1
        sport = self.sport
        self.feed(Segment("tcp", client, sport, SERVER, port, SYN, 1), now)
        if not answered:
            self.feed(Segment("tcp", SERVER, port, client, sport, RST | ACK, 0), now)
            return
        self.feed(Segment("tcp", SERVER, port, client, sport, SYN | ACK, 7), now)
        self.feed(Segment("tcp", client, sport, SERVER, port, ACK | PSH, 2, b"GET / HTTP/1.0\r\n"),
                  now)
        self.feed(Segment("tcp", SERVER, port, client, sport, ACK | PSH, 8, b"",
                          length=data), now)

    def ordinary(self, start, end, per_window=2) -> None:
        """Each client: `per_window` connections to port 80 every 5 s window."""
        t = start
        while t < end:
            for client in CLIENTS:
                for k in range(per_window):
                    self.connection(client, t + 0.1 + k)
            t += 5.0

    def until(self, now) -> list:
        self.found += self.det.expire(now)
        out, self.found = self.found, []
        return out


def test_a_port_scan_after_a_quiet_baseline_is_one_finding():
    traffic = Traffic(detector())
    traffic.ordinary(0.0, 30.0)
    assert traffic.until(30.0) == [] and traffic.det.baseline == Baseline(2, 2032, 1, 18)
    for port in range(1, 31):                                  # 30 ports, closed: RSTs
        traffic.connection(SCANNER, 31.0 + port * 0.01, port=port, answered=False)
    assert traffic.until(34.9) == []                           # scored when the window ends
    [found] = traffic.until(35.0)
    assert (found.profile, found.severity, found.at) == ("Anomaly_Detection", "high", WALL)
    assert found.five_tuple == FiveTuple("tcp", SCANNER, 0, SERVER, 1)
    assert found.evidence == ("port_scan: 30 distinct ports in 5 s (threshold 15); 30 connection "
                              "attempts, 30 failed; baseline median 1 ports per source")


def test_ordinary_traffic_is_no_finding():
    traffic = Traffic(detector())
    traffic.ordinary(0.0, 30.0, per_window=2)
    traffic.ordinary(30.0, 120.0, per_window=5)                # more, but not 20 times more
    for client in CLIENTS:                                     # a few ports each
        for port in (22, 443, 8080):
            traffic.connection(client, 60.0, port=port)
    assert traffic.until(125.0) == []


def test_a_20x_burst_of_connections_is_one_finding_and_the_cooldown_holds():
    traffic = Traffic(detector())
    traffic.ordinary(0.0, 30.0)                                # median 2 attempts
    for k in range(39):
        traffic.connection(CLIENTS[0], 31.0 + k * 0.01)
    assert traffic.until(35.0) == []                           # 39 < 20 x 2
    for k in range(40):
        traffic.connection(CLIENTS[0], 36.0 + k * 0.01)
    [found] = traffic.until(40.0)
    assert found.severity == "medium" and found.five_tuple == FiveTuple(
        "tcp", CLIENTS[0], 0, SERVER, 80)
    assert found.evidence == ("burst: 40 connection attempts (threshold 40, baseline median 2) "
                              "in 5 s, 20x the baseline per source")
    for window in range(11):                                   # 60 s of bursts: held back
        for k in range(40):
            traffic.connection(CLIENTS[0], 41.0 + window * 5 + k * 0.01)
    assert traffic.until(95.0) == []
    for k in range(40):
        traffic.connection(CLIENTS[0], 96.0 + k * 0.01)
    assert len(traffic.until(100.0)) == 1                     # 60 s after the first: again
    assert traffic.det.reported[(CLIENTS[0], "burst")] == 100.0


def test_a_burst_of_bytes_and_the_cooldown_is_per_source_and_kind():
    traffic = Traffic(detector(cooldown=30))
    traffic.ordinary(0.0, 30.0)                                # median 2032 bytes: floor 65536
    traffic.connection(CLIENTS[1], 31.0, data=20 * 65536 - 16)
    [found] = traffic.until(35.0)
    assert found.evidence == ("burst: 1310720 bytes (threshold 1.31072e+06, baseline median "
                              "2032) in 5 s, 20x the baseline per source")
    traffic.connection(CLIENTS[1], 36.0, data=2_000_000)       # the same source: held
    traffic.connection(CLIENTS[2], 36.0, data=2_000_000)       # another: reported
    for port in range(100, 120):                               # and a scan by the first
        traffic.connection(CLIENTS[1], 37.0, port=port)
    found = traffic.until(40.0)
    assert sorted((f.five_tuple.src, f.evidence.split(":")[0]) for f in found) == [
        (CLIENTS[1], "port_scan"), (CLIENTS[2], "burst")]


def test_an_idle_baseline_keeps_the_floors():
    traffic = Traffic(detector(baseline=10))
    assert traffic.until(10.0) == [] and traffic.det.baseline == Baseline()
    for k in range(19):
        traffic.connection(CLIENTS[0], 11.0 + k * 0.01)       # 19 < 20 x 1
    assert traffic.until(15.0) == []
    for k in range(20):
        traffic.connection(CLIENTS[0], 16.0 + k * 0.01)
    assert "20 connection attempts (threshold 20, baseline median 0)" in \
        traffic.until(20.0)[0].evidence
    for port in range(1, 31):                  # 30 attempts, but a scan's: not also a burst
        traffic.connection(SCANNER, 21.0, port=port)
    assert [f.evidence.split(":")[0] for f in traffic.until(25.0)] == ["port_scan"]


def test_failed_handshakes_are_rsts_or_syns_unanswered_in_their_window():
    det = detector(baseline=0)
    det.feed(Segment("tcp", SCANNER, 1000, SERVER, 80, SYN, 1), 0.0)
    det.feed(Segment("tcp", SCANNER, 1000, SERVER, 80, SYN, 1), 0.5)      # retransmitted
    det.feed(Segment("tcp", SCANNER, 1001, SERVER, 81, SYN, 1), 0.5)
    det.feed(Segment("tcp", SERVER, 81, SCANNER, 1001, RST | ACK, 0), 0.5)
    det.feed(Segment("tcp", SCANNER, 1002, SERVER, 82, SYN, 1), 0.5)
    det.feed(Segment("tcp", SERVER, 82, SCANNER, 1002, SYN | ACK, 0), 0.5)
    fig = det.figures[SCANNER]
    assert (fig.attempts, fig.failed, len(fig.waiting)) == (3, 1, 1)
    det.expire(5.0)
    assert fig.failed == 2                                     # port 80 never answered


def test_traffic_without_a_production_endpoint_is_not_counted():
    det = detector(baseline=0)
    hub = IPv4Address("10.0.0.1")
    for port in range(40):                                     # e.g. the agent's own channel
        det.feed(Segment("udp", hub, 6700, IPv4Address("10.0.0.200"), port, payload=b"x"), 0.1)
    assert det.figures == {} and det.expire(5.0) == []
    det.feed(Segment("udp", CLIENTS[0], 5353, SERVER, 53, payload=b"q" * 10), 5.1)
    assert det.figures[CLIENTS[0]].ports == {("udp", 53)} and det.figures[CLIENTS[0]].bytes == 10


def test_settings_are_checked_with_their_defaults():
    assert AnomalySettings.read({}) == AnomalySettings()
    assert AnomalySettings.read({"window": 2, "severity": "low", "p99_ms": None}).window == 2.0
    for bad, why in [({"window": 0}, "window: 0 is not a number above 0"),
                     ({"window": "5"}, "window"),
                     ({"baseline": -1}, "baseline: -1 is not a number at least 0"),
                     ({"scan_ports": 1.5}, "scan_ports: 1.5 is not a whole number from 2"),
                     ({"burst_factor": 0.5}, "burst_factor"),
                     ({"severity": "urgent"}, "severity: 'urgent' is not one of low"),
                     ({"scan_severity": "x"}, "scan_severity"),
                     ({"floor_bytes": float("inf")}, "floor_bytes"),
                     ({"threshold": 10}, "unknown setting threshold \\(known: baseline, ")]:
        with pytest.raises(ValueError, match=why):
            AnomalySettings.read(bad)


# -- the profile -----------------------------------------------------------------------



def context(settings) -> ProfileContext:
    return ProfileContext("web-shadow-1", "eth1", (IPv4Interface(f"{SERVER}/24"),), None,
                          settings, 812, lambda: WALL)


def test_the_profile_is_registered_and_scores_what_its_capture_reads():
    assert PROFILES["Anomaly_Detection"] is AnomalyProfile
    clock, made = [100.0], []
    profile = AnomalyProfile(lambda i: made.append(FakeCapture(i)) or made[-1],
                             now=lambda: clock[0])
    profile.start(context({"baseline": 5}))
    [capture] = made
    assert capture.interface == "eth1" and profile.poll() == []
    clock[0] = 106.0                                           # the baseline is over
    capture.waiting = [Segment("tcp", SCANNER, 2000 + p, SERVER, p, SYN, 1) for p in range(20)]
    assert profile.poll() == [] and profile.lag_ms == 0.0
    clock[0] = 110.0
    [found] = profile.poll()
    assert found.evidence.startswith("port_scan: 20 distinct ports")
    profile.stop()
    assert capture.closed and profile.lag_ms == 0.0


def test_bad_settings_keep_the_profile_from_starting():
    with pytest.raises(ValueError, match="scan_ports"):
        AnomalyProfile(FakeCapture).start(context({"scan_ports": 0}))
