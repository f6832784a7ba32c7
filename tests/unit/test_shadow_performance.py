"""Performance_Profiling in the shadow agent: mirrored connections made into requests
(segments fed directly), replays against real local TCP and UDP servers on 127.0.0.1
(threads of the test), a slow server's p99 finding, the worker's queue and pace, the
figures and the metrics over a fake capture and a fake /proc."""
from __future__ import annotations

import os
import socket
import threading
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest

from controller.agents.shadow.capture import ACK, FIN, PSH, RST, SYN, Segment
from controller.agents.shadow.ids import Endpoint
from controller.agents.shadow.performance import (MAX_REQUEST, PerformanceProfile,
                                                  PerformanceSettings, Profiler, Requests,
                                                  percentile)
from controller.agents.shadow.replay import Answer, Pacer, Replayer, Request, replay
from controller.agents.shadow.profiles import PROFILES, ProfileContext
from tests.unit.shadowfakes import FakeCapture

LOCAL = IPv4Address("127.0.0.1")
CLIENT = IPv4Address("10.0.0.9")
WALL = 1_700_000_000.0
C_ISN, S_ISN = 5000, 0xFFFFFFF0


def tcp(server, data=b"", seq=0, flags=ACK | PSH, back=False, sport=40000, **kw) -> Segment:
    address, port = server
    if back:
        return Segment("tcp", address, port, CLIENT, sport, flags, seq, data, **kw)
    return Segment("tcp", CLIENT, sport, address, port, flags, seq, data, **kw)


def mirrored(server, request=b"GET / HTTP/1.0\r\n\r\n", answer=b"HTTP/1.0 200 OK\r\n",
             sport=40000, parts=1) -> list[Segment]:
    """The mirrored segments of one connection: handshake, the request (in `parts`, the
    last first), the answer, FINs."""
    size = -(-len(request) // parts)
    chunks = [(i, request[i:i + size]) for i in range(0, len(request), size)]
    segs = [tcp(server, seq=C_ISN, flags=SYN, sport=sport),
            tcp(server, seq=S_ISN, flags=SYN | ACK, back=True, sport=sport)]
    segs += [tcp(server, chunk, C_ISN + 1 + offset, sport=sport) for offset, chunk in
             reversed(chunks)]
    segs += [tcp(server, answer, (S_ISN + 1) & 0xFFFFFFFF, back=True, sport=sport),
             tcp(server, seq=C_ISN + 1 + len(request), flags=FIN | ACK, sport=sport),
             tcp(server, seq=(S_ISN + 1 + len(answer)) & 0xFFFFFFFF, flags=FIN | ACK, back=True,
                 sport=sport)]
    return segs


def fed(requests: Requests, segs, now=0.0) -> list[Request]:
    return [r for seg in segs for r in requests.feed(seg, now)]


# -- local servers ---------------------------------------------------------------------

class EchoServer:
    """A TCP server on 127.0.0.1 that reads to the end, waits `delay` s and echoes."""

    def __init__(self, delay: float = 0.0, banner: bytes = b"") -> None:
        self.delay, self.banner = delay, banner
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = (LOCAL, self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.banner)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                time.sleep(self.delay)
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


class UdpEcho:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = (LOCAL, self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            time.sleep(self.delay)
            self.sock.sendto(data.upper(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


# -- requests ----------------------------------------------------------------------------

def test_a_mirrored_connection_is_its_request_once_production_answers():
    server = (LOCAL, 8080)
    requests = Requests({LOCAL})
    segs = mirrored(server, b"GET /a/long/path HTTP/1.1\r\nHost: x\r\n\r\n", parts=3)
    out = fed(requests, segs[:-3])
    assert out == []                                           # no answer yet
    [request] = fed(requests, segs[-3:])
    assert request == Request("tcp", Endpoint(*server),
                              b"GET /a/long/path HTTP/1.1\r\nHost: x\r\n\r\n")
    assert requests.exchanges == {}                            # FIN both ways: forgotten


def test_what_is_not_replayed():
    server = (LOCAL, 8080)
    requests = Requests({LOCAL})
    assert fed(requests, mirrored(server)[2:]) == []           # joined without the SYN
    other = (IPv4Address("10.0.0.77"), 80)                     # not a production address
    assert fed(requests, mirrored(other)) == []
    cut = mirrored(server, sport=40001)
    cut[2] = tcp(server, b"GET /", C_ISN + 1, sport=40001, length=18)    # snaplen cut it
    assert fed(requests, cut) == [] and requests.skipped == 1
    big = mirrored(server, b"x" * (MAX_REQUEST + 1), sport=40002, parts=2)
    assert fed(requests, big) == [] and requests.skipped == 2
    unanswered = mirrored(server, sport=40003)
    del unanswered[3]                                          # production said nothing
    assert fed(requests, unanswered) == []
    reset = mirrored(server, sport=40004)[:3] + [tcp(server, seq=C_ISN + 1, flags=RST,
                                                     sport=40004)]
    assert fed(requests, reset) == [] and requests.exchanges == {}


def test_a_banner_before_the_request_is_noted_and_idle_connections_are_forgotten():
    server = (LOCAL, 25)
    requests = Requests({LOCAL}, idle=60.0)
    segs = mirrored(server, b"HELO me\r\n", b"250 ok\r\n")
    segs.insert(2, tcp(server, b"220 hi\r\n", (S_ISN + 1) & 0xFFFFFFFF, back=True))
    [request] = fed(requests, segs[:5])
    assert request.payload == b"HELO me\r\n" and request.server_first
    fed(requests, mirrored(server, sport=40001)[:3], now=10.0)
    requests.expire(59.9)
    assert len(requests.exchanges) == 2
    requests.expire(60.0)
    assert [k.client.port for k in requests.exchanges] == [40001]


def test_the_same_ports_with_a_new_syn_are_a_new_connection():
    server = (LOCAL, 8080)
    requests = Requests({LOCAL})
    assert fed(requests, mirrored(server, b"old request")[:3]) == []     # its end never seen
    again = [tcp(server, seq=C_ISN + 1, flags=SYN)]                        # retransmitted SYN?
    assert fed(requests, again) == []                                     # no: another ISN
    segs = mirrored(server, b"new")
    segs = [s if not s.flags & SYN or s.seq != C_ISN else tcp(server, seq=9000, flags=SYN)
            for s in segs]
    segs[2] = tcp(server, b"new", 9001)
    [request] = fed(requests, segs)
    assert request.payload == b"new"


def test_udp_requests_are_client_datagrams_production_answered():
    server = (LOCAL, 53)
    requests = Requests({LOCAL})
    ask = lambda data, sport=5353: Segment("udp", CLIENT, sport, LOCAL, 53, payload=data)
    tell = lambda data, sport=5353: Segment("udp", LOCAL, 53, CLIENT, sport, payload=data)
    assert fed(requests, [tell(b"unasked")]) == []
    assert fed(requests, [ask(b"q1"), ask(b"q2")]) == []
    assert fed(requests, [tell(b"a2"), tell(b"a2 again")]) == [
        Request("udp", Endpoint(*server), b"q2")]
    assert fed(requests, [ask(b"q3"), tell(b"a3")]) == [Request("udp", Endpoint(*server), b"q3")]


# -- replays over loopback -----------------------------------------------------------------

def test_a_tcp_replay_against_a_local_echo_server_times_the_answer(echo):
    answer = replay(Request("tcp", Endpoint(*echo.address), b"ping" * 1000), 2.0)
    assert answer.error is None and answer.size == 4000
    assert 0 <= answer.latency_ms < 1000 and answer.seconds >= answer.latency_ms / 1000


def test_a_banner_is_waited_for_before_the_request_is_sent():
    server = EchoServer(delay=0.2, banner=b"220 hi\r\n")
    try:
        answer = replay(Request("tcp", Endpoint(*server.address), b"HELO\r\n", True), 2.0)
    finally:
        server.close()
    assert answer.size == 6 and 180 <= answer.latency_ms < 1500    # the echo, not the banner


def test_a_banner_that_never_comes_is_a_latency_of_the_time_waited(echo):
    answer = replay(Request("tcp", Endpoint(*echo.address), b"HELO\r\n", True), 0.3)
    assert answer.error is None and answer.size == 0 and 250 <= answer.latency_ms <= 350


def test_a_server_too_slow_is_a_latency_of_the_time_waited_and_errors_are_no_latency():
    slow = EchoServer(delay=1.0)
    try:
        answer = replay(Request("tcp", Endpoint(*slow.address), b"x"), 0.3)
    finally:
        slow.close()
    assert answer.error is None and answer.size == 0 and 250 <= answer.latency_ms <= 350
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    refused = replay(Request("tcp", Endpoint(LOCAL, port), b"x"), 0.5)
    assert refused.latency_ms is None and "refused" in refused.error


def test_a_udp_replay_waits_for_one_answer():
    server = UdpEcho(delay=0.05)
    try:
        answer = replay(Request("udp", Endpoint(*server.address), b"query"), 2.0)
    finally:
        server.close()
    assert answer.error is None and answer.size == 5 and 40 <= answer.latency_ms < 1000


def test_the_worker_paces_replays_and_a_full_queue_drops():
    gate, done = threading.Event(), []

    def fake(request, timeout):
        gate.wait(5)
        done.append(request.payload)
        return Answer(1.0, 1, 0.001)

    replayer = Replayer(rate=1000, timeout=0.1, replay=fake, size=2)
    try:
        for i in range(6):
            replayer.submit(Request("tcp", Endpoint(LOCAL, 1), bytes([i])))
            time.sleep(0.02)                   # the worker takes the first one and waits
        assert replayer.drops == 3             # one taken, two queued, three dropped
        gate.set()
        deadline = time.monotonic() + 5
        while len(done) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done == [b"\x00", b"\x01", b"\x02"] and len(replayer.take()) == 3
    finally:
        replayer.stop()
    slept, clock = [], [10.0]
    pacer = Pacer(4, lambda: clock[0], slept.append)
    for t in (10.0, 10.0, 10.1, 11.0):
        clock[0] = t
        pacer.wait()
    assert slept == [pytest.approx(0.25), pytest.approx(0.4)]


# -- figures and findings ---------------------------------------------------------------------

def profiler(**given) -> Profiler:
    return Profiler(PerformanceSettings.read(given), lambda: WALL)


def test_percentiles_throughput_and_a_p99_finding_once_per_cooldown():
    assert [percentile(list(range(1, 101)), q) for q in (50, 99, 100)] == [50, 99, 100]
    assert percentile([7.0], 99) == 7.0
    prof = profiler(p99_ms_max=100, min_samples=20, window=50)
    assert prof.latencies() is None and prof.throughput() == 0.0
    prof.add([Answer(10.0, 1000, 0.5)] * 19 + [Answer(None, error="refused")])
    assert prof.check(0.0) == [] and prof.errors == 1 and prof.replays == 20
    prof.add([Answer(500.0, 1000, 0.5)])                       # 20 answers, p99 500
    [found] = prof.check(1.0)
    assert (found.profile, found.severity, found.five_tuple, found.at) == (
        "Performance_Profiling", "low", None, WALL)
    assert found.evidence == ("latency p99 500.0 ms > p99_ms_max 100 over the last 20 answers "
                              "(p50 10.0 ms, p99 500.0 ms)")
    assert prof.throughput() == pytest.approx(2000.0)
    assert prof.check(60.9) == [] and len(prof.check(61.0)) == 1
    prof.add([Answer(10.0, 1000, 0.5)] * 50)                   # the slow one slides out
    assert prof.latencies() == (10.0, 10.0) and prof.check(200.0) == []


def test_p50_and_settings():
    prof = profiler(p50_ms_max=5, severity="medium", min_samples=1)
    prof.add([Answer(10.0)])
    [found] = prof.check(0.0)
    assert found.severity == "medium" and found.evidence.startswith("latency p50 10.0 ms > ")
    assert PerformanceSettings.read({"p99_ms_max": None}) == PerformanceSettings()
    for bad, why in [({"rate": 0}, "rate: 0 is not a number above 0"),
                     ({"timeout": 100}, "timeout: 100 is not a number above 0 and at most 60"),
                     ({"window": 0}, "window"), ({"min_samples": 300}, "min_samples: 300 is"
                                                                       " above window"),
                     ({"p99_ms_max": -1}, "p99_ms_max"), ({"severity": "bad"}, "severity"),
                     ({"p99_ms": 100}, "unknown setting p99_ms")]:
        with pytest.raises(ValueError, match=why):
            PerformanceSettings.read(bad)


# -- the profile --------------------------------------------------------------------------------



def fake_proc(root, pgid, ticks, rss_pages):
    """A /proc with one process of group `pgid` and one of another group."""
    for pid, pgrp in ((pgid, pgid), (pgid + 1, 1)):
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        fields = ["S", "1", str(pgrp)] + ["0"] * 8 + [str(ticks), "0", "0", "0"] + ["0"] * 6 \
            + [str(rss_pages)] + ["0"] * 20
        (root / str(pid) / "stat").write_text(f"{pid} (web) " + " ".join(fields) + "\n")


def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_profile_replays_mirrored_connections_and_reports_metrics(tmp_path):
    assert PROFILES["Performance_Profiling"] is PerformanceProfile
    slow = EchoServer(delay=0.15)
    clock, made = [100.0], []
    fake_proc(tmp_path, 812, ticks=0, rss_pages=10)
    profile = PerformanceProfile(lambda i: made.append(FakeCapture(i)) or made[-1],
                                 now=lambda: clock[0], proc_root=str(tmp_path))
    ctx = ProfileContext("web-shadow-1", "eth1", (IPv4Interface("127.0.0.1/8"),), None,
                         {"p99_ms_max": 100, "min_samples": 3, "rate": 100}, 812,
                         lambda: WALL)
    profile.start(ctx)
    try:
        [capture] = made
        first = profile.metrics()
        assert "latency_p99_ms" not in first and first["replays"] == 0.0
        assert first["memory_bytes"] == 10 * os.sysconf("SC_PAGE_SIZE")
        capture.waiting = [s for port in range(3) for s in mirrored(slow.address, b"hello",
                                                                    sport=41000 + port)]
        assert profile.poll() == []
        found = []
        until(lambda: found.extend(profile.poll()) or profile.profiler.replays == 3)
        [finding] = found
        assert finding.evidence.startswith("latency p99 1") and "> p99_ms_max 100" in finding.evidence
        fake_proc(tmp_path, 812, ticks=os.sysconf("SC_CLK_TCK") // 2, rss_pages=20)
        clock[0] = 101.0                                       # half a CPU second in 1 s
        metrics = profile.metrics()
        assert set(metrics) == {"latency_p50_ms", "latency_p99_ms", "throughput_bps", "replays",
                                "replay_drops", "cpu_percent", "memory_bytes"}
        assert 140 <= metrics["latency_p50_ms"] <= metrics["latency_p99_ms"] < 2000
        assert metrics["replays"] == 3.0 and metrics["replay_drops"] == 0.0
        assert metrics["cpu_percent"] == pytest.approx(50.0, abs=1)
        assert 0 < metrics["throughput_bps"] <= 5 / 0.15       # 5 bytes, 0.15 s at least
    finally:
        replayer = profile.replayer
        profile.stop()
        slow.close()
    assert capture.closed and profile.replayer is None and not replayer._thread.is_alive()


def test_bad_settings_keep_the_profile_from_starting():
    ctx = ProfileContext("i", "eth1", (), None, {"rate": -5}, 1, lambda: WALL)
    with pytest.raises(ValueError, match="rate"):
        PerformanceProfile(FakeCapture).start(ctx)
