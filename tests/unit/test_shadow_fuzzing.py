"""Fuzzing in the shadow agent: the mutator (deterministic, every operator), the corpus
from synthetic segments, the settings, and the fuzzer against real servers on
127.0.0.1 (the "production address" here): a crash, a hang, an error answer, a
refused destination, and the crash's input named in the poll after the image's
process group is gone."""
from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest

from controller.agents.shadow import fuzzing, mutate
from controller.agents.shadow.capture import ACK, FIN, PSH, RST, SYN, Segment
from controller.agents.shadow.fuzzing import (CRASH_WINDOW, Fuzzer, FuzzingProfile, Settings,
                                              settings_from)
from controller.agents.shadow.local import Refused, open_socket
from controller.agents.shadow.mutate import BOUNDARIES, INTERESTING, Corpus, Mutator, Seed, Target
from controller.agents.shadow.profiles import ProfileContext
from controller.agents.shadow.protocol import FiveTuple
from tests.unit.shadowfakes import FakeCapture

LOCAL = IPv4Address("127.0.0.1")
CLIENT, SERVER, OTHER = IPv4Address("10.0.0.9"), IPv4Address("10.0.0.5"), IPv4Address("10.0.0.77")
WALL = 1_700_000_000.0
REQUEST = b"GET /item?id=42&page=7 HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n"
OTHER_REQUEST = b"POST /cart HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nqty=3"


# -- the mutator -----------------------------------------------------------------------

def test_the_mutator_is_deterministic_for_a_seed():
    def run(seed):
        mutator = Mutator(seed)
        return [mutator.mutate(REQUEST, [OTHER_REQUEST]) for _ in range(200)]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_every_operator_is_used_and_none_applies_where_it_cannot():
    mutator = Mutator(1)
    used = {mutator.mutate(REQUEST, [OTHER_REQUEST]).operator for _ in range(500)}
    assert used == set(mutate.OPERATORS)
    assert mutate.applicable(b"", None) == ["insert_chunk"]
    assert "splice" not in mutate.applicable(REQUEST, None)
    assert not {"repeat_token", "boundary_number"} & set(mutate.applicable(b"\x00\x01", b"x"))
    assert "boundary_number" not in mutate.applicable(b"abc", None)
    # only seeds other than the input itself are spliced in
    assert all(Mutator(i).mutate(REQUEST, [REQUEST]).operator != "splice" for i in range(200))


def _each(name, data=REQUEST, other=OTHER_REQUEST, runs=200):
    for i in range(runs):
        yield mutate.OPERATORS[name](data, other, random.Random(i))


def test_bit_flip_flips_one_bit():
    for out in _each("bit_flip"):
        diff = [(a ^ b) for a, b in zip(REQUEST, out) if a != b]
        assert len(out) == len(REQUEST) and len(diff) == 1 and bin(diff[0]).count("1") == 1


def test_interesting_byte_sets_one_byte_to_a_boundary_value():
    for out in _each("interesting_byte", data=b"\x00\xff\x7f\x80A"):
        diff = [i for i, (a, b) in enumerate(zip(b"\x00\xff\x7f\x80A", out)) if a != b]
        assert len(out) == 5 and len(diff) == 1 and out[diff[0]] in INTERESTING


def _split_by(short: bytes, long: bytes) -> tuple[int, int]:
    """`long` is `short` with one chunk inserted: where (start, end in `long`)."""
    start = next((i for i, (a, b) in enumerate(zip(short, long)) if a != b), len(short))
    end = start + len(long) - len(short)
    assert long[:start] + long[end:] == short
    return start, end


def test_insert_delete_and_duplicate_of_a_chunk():
    for out in _each("insert_chunk"):
        start, end = _split_by(REQUEST, out)
        assert 1 <= end - start <= mutate.CHUNK
    for out in _each("delete_chunk"):
        start, end = _split_by(out, REQUEST)
        assert 1 <= end - start <= mutate.CHUNK
    for out in _each("duplicate_chunk"):
        assert len(out) > len(REQUEST)
        n = len(out) - len(REQUEST)
        # some chunk of n bytes is followed by a copy of itself, the rest unchanged
        assert any(out[i:i + n] == out[i + n:i + 2 * n] and out[:i + n] + out[i + 2 * n:] == REQUEST
                   for i in range(len(REQUEST)))


def test_truncation_and_splice():
    for out in _each("truncate"):
        assert len(out) < len(REQUEST) and REQUEST.startswith(out)
    for out in _each("splice"):
        assert any(out == REQUEST[:i] + OTHER_REQUEST[j:] for i in range(len(REQUEST) + 1)
                   for j in range(len(OTHER_REQUEST)))


def test_repeat_of_a_token():
    for out in _each("repeat_token", data=b"a=bc;d"):
        assert re.fullmatch(rb"(a{2,256}=bc;d|a=(bc){2,256};d|a=bc;d{2,256})", out), out


def test_numbers_in_ascii_become_boundary_values():
    seen = set()
    for out in _each("boundary_number", data=b"len=42&n=-7"):
        m = re.fullmatch(rb"len=(-?\d+)&n=(-?\d+)", out)
        assert m and (m.group(1) == b"42") != (m.group(2) == b"-7"), out   # exactly one changed
        seen.add(m.group(2) if m.group(1) == b"42" else m.group(1))
    assert seen == set(BOUNDARIES)
    assert {str(2 ** 31).encode(), str(2 ** 32 + 1).encode(), b"0", b"-1"} <= seen
    assert max(len(v) for v in seen) > 20                        # huge digit strings


def test_an_input_never_exceeds_max_input():
    big = b"x" * mutate.MAX_INPUT
    assert all(len(Mutator(i).mutate(big).data) <= mutate.MAX_INPUT for i in range(50))


# -- the corpus ------------------------------------------------------------------------

def tcp(data=b"", seq=0, flags=ACK | PSH, back=False, dst=SERVER, sport=40000, **kw):
    if back:
        return Segment("tcp", dst, 80, CLIENT, sport, flags, seq, data, **kw)
    return Segment("tcp", CLIENT, sport, dst, 80, flags, seq, data, **kw)


def corpus(**kw) -> Corpus:
    return Corpus({SERVER}, kw.pop("seed_bytes", 4096), kw.pop("size", 64), **kw)


def test_a_tcp_request_is_reassembled_in_order_and_ends_at_the_answer():
    c = corpus()
    assert c.feed(tcp(seq=999, flags=SYN), 0.0) == []
    assert c.feed(tcp(seq=5000, flags=SYN | ACK, back=True), 0.0) == []
    assert c.feed(tcp(b"HTTP/1.1\r\n\r\n", 1000 + 16), 0.0) == []      # ahead of a gap
    assert c.feed(tcp(b"GET /item?", 1000), 0.0) == []
    assert c.feed(tcp(b"id=42 ", 1010), 0.0) == []
    assert c.feed(tcp(b"GET /item?", 1000), 0.0) == []                  # a retransmission
    assert c.feed(tcp(seq=5001, back=True), 0.0) == []                  # the server's ACK
    [seed] = c.feed(tcp(b"HTTP/1.1 200 OK\r\n", 5001, back=True), 0.0)
    assert seed == Seed(Target("tcp", SERVER, 80), b"GET /item?id=42 HTTP/1.1\r\n\r\n")
    assert c.requests == {} and c.seeds == [seed]
    # the next request of the same connection is another seed; a copy of one is not
    assert c.feed(tcp(b"GET /other", 1028), 0.0) == []
    assert len(c.feed(tcp(seq=6000, flags=FIN | ACK, back=True), 0.0)) == 1
    assert c.feed(tcp(b"GET /other", 2000, sport=40001), 0.0) == []
    assert c.feed(tcp(seq=2010, flags=RST, sport=40001), 0.0) == [] and c.requests == {}
    assert len(c.seeds) == 2


def test_only_requests_toward_a_production_address_are_seeds():
    c = corpus()
    assert c.feed(tcp(b"GET / HTTP/1.0\r\n\r\n", 1, dst=OTHER, flags=FIN | ACK), 0.0) == []
    assert c.feed(tcp(b"banner", 7, back=True, flags=FIN | ACK), 0.0) == []   # the server's
    udp = lambda data, src, dst, dport=53: Segment("udp", src, 5353, dst, dport, payload=data)
    assert c.feed(udp(b"answer", SERVER, CLIENT), 0.0) == []
    assert c.feed(udp(b"query", CLIENT, OTHER), 0.0) == []
    [seed] = c.feed(udp(b"query", CLIENT, SERVER), 0.0)
    assert seed == Seed(Target("udp", SERVER, 53), b"query")
    assert c.feed(udp(b"query", CLIENT, SERVER), 0.0) == []            # each once
    assert len(c.feed(udp(b"query", CLIENT, SERVER, 54), 0.0)) == 1    # another port
    assert c.feed(udp(b"", CLIENT, SERVER), 0.0) == []                 # nothing to mutate


def test_a_request_ends_at_seed_bytes_a_fin_a_truncated_copy_or_when_idle():
    c = corpus(seed_bytes=8, settle=2.0)
    [seed] = c.feed(tcp(b"0123456789", 1), 0.0)
    assert seed.data == b"01234567"
    [seed] = c.feed(tcp(b"abc", 1, sport=40001, flags=FIN | ACK | PSH), 0.0)
    assert seed.data == b"abc"
    [seed] = c.feed(tcp(b"xy", 1, sport=40002, length=30), 0.0)         # cut by the snaplen
    assert seed.data == b"xy"
    assert c.feed(tcp(b"idle", 1, sport=40003), 10.0) == []
    assert c.expire(11.9) == []
    assert c.expire(12.0) == [Seed(Target("tcp", SERVER, 80), b"idle")]


def test_the_corpus_keeps_at_most_its_size():
    c = corpus(size=2)
    for i in range(4):
        c.feed(Segment("udp", CLIENT, 5353, SERVER, 53, payload=b"q%d" % i), 0.0)
    assert [s.data for s in c.seeds] == [b"q0", b"q1"] and c.full
    assert c.feed(tcp(b"GET", 1, flags=SYN), 0.0) == [] and c.requests == {}


# -- settings --------------------------------------------------------------------------

def test_settings_defaults_and_values():
    assert settings_from({}) == Settings()
    assert (Settings().seed_bytes, Settings().corpus, Settings().rate, Settings().timeout,
            Settings().mutations_per_seed, Settings().max_findings, Settings().crash_severity) \
        == (4096, 64, 20.0, 1.0, 50, 20, "high")
    s = settings_from({"seed": 9, "rate": 5, "timeout": 0.5, "crash_severity": "critical",
                       "error_pattern": r"^HTTP/1\.[01] 5"})
    assert (s.seed, s.rate, s.timeout, s.crash_severity) == (9, 5, 0.5, "critical")
    assert s.error_pattern.search(b"HTTP/1.1 503 Busy") and not s.error_pattern.search(b"HTTP/1.1 200")


@pytest.mark.parametrize("settings, named", [
    ({"seed_bytes": 0}, "seed_bytes"), ({"corpus": "many"}, "corpus"), ({"rate": 0}, "rate"),
    ({"timeout": -1}, "timeout"), ({"mutations_per_seed": 1.5}, "mutations_per_seed"),
    ({"max_findings": True}, "max_findings"), ({"crash_severity": "fatal"}, "crash_severity"),
    ({"error_pattern": "("}, "error_pattern"), ({"error_pattern": 5}, "error_pattern"),
    ({"error_pattern": ""}, "error_pattern"),
    ({"seed": -1}, "seed"), ({"rates": 3}, "rates")])
def test_a_bad_setting_is_named(settings, named):
    with pytest.raises(ValueError, match=named):
        settings_from(settings)


# -- real servers on 127.0.0.1 ---------------------------------------------------------

CRASH, OK = object(), b"OK\r\n"


class TcpServer(threading.Thread):
    """Reads each connection to its end, then does what `handle(data)` says: answer
    bytes, sleep that many seconds and answer OK, None (close without answering) or
    CRASH (close without answering and stop listening)."""

    def __init__(self, handle, address="127.0.0.1"):
        super().__init__(daemon=True)
        self.listener = socket.create_server((address, 0))
        self.listener.settimeout(0.05)
        self.port, self.handle = self.listener.getsockname()[1], handle
        self.received: list[tuple[bytes, int]] = []       # (data, the client's port)
        self.stopping = threading.Event()
        self.start()

    def run(self):
        with self.listener:
            while not self.stopping.is_set():
                try:
                    conn, peer = self.listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(5)
                    data = b"".join(iter(lambda: conn.recv(65536), b""))
                    self.received.append((data, peer[1]))
                    action = self.handle(data)
                    if action is CRASH:
                        return
                    if isinstance(action, float):
                        time.sleep(action)
                        action = OK
                    try:
                        conn.sendall(action or b"")
                    except OSError:
                        pass

    def close(self):
        self.stopping.set()
        self.join(5)


@pytest.fixture
def servers():
    made = []
    yield lambda *a, **kw: made.append(TcpServer(*a, **kw)) or made[-1]
    for s in made:
        s.close()


def inputs(n, seed=7, data=REQUEST):
    m = Mutator(seed)
    return [m.mutate(data, []).data for _ in range(n)]


def fuzzer(**settings) -> Fuzzer:
    base = {"seed": 7, "mutations_per_seed": 8, "rate": 1000, "timeout": 0.3}
    return Fuzzer(settings_from({**base, **settings}), {LOCAL}, lambda: WALL)


def _check_names(finding, data, server_port, client_port, protocol="tcp"):
    assert finding.five_tuple == FiveTuple(protocol, LOCAL, client_port, LOCAL, server_port)
    assert f"input of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}" \
        in finding.evidence
    assert data[:fuzzing.SHOWN].hex() in finding.evidence
    assert finding.profile == "Fuzzing" and finding.at == WALL


def test_a_crash_names_the_input_that_closed_the_service(servers):
    magic = inputs(8)[3]
    assert magic not in inputs(3)
    server = servers(lambda data: CRASH if data == magic else OK)
    f = fuzzer()
    f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))
    [found] = f.take()
    assert found.severity == "high"
    assert found.evidence.startswith("crash: the connection was closed without an answer and "
                                     "the service then refused connections; ")
    assert [d for d, _ in server.received] == inputs(4)          # the rest of the seed set aside
    _check_names(found, magic, server.port, server.received[3][1])
    assert f.take() == []


def test_a_service_closing_without_an_answer_but_still_listening_is_no_crash(servers):
    server = servers(lambda data: None)
    f = fuzzer(crash_severity="critical")
    f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))
    assert f.take() == [] and f.sent == 8
    time.sleep(0.3)                                               # the last probe taken
    assert sum(1 for d, _ in server.received if d) == 8           # and 8 empty probes
    assert len(server.received) == 16


def test_a_hang_is_no_answer_in_time_while_the_service_still_accepts(servers):
    slow = inputs(8)[2]
    server = servers(lambda data: 1.0 if data == slow else OK)
    f = fuzzer()
    f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))
    [found] = f.take()
    assert found.severity == "medium"
    assert found.evidence.startswith("hang: no answer in 0.3 s; the service still accepts "
                                     "connections; ")
    peer = next(p for d, p in server.received if d == slow)
    _check_names(found, slow, server.port, peer)
    # after it answered the seed again, the other inputs went on, answered in time
    assert [d for d, _ in server.received if d and d != REQUEST] == inputs(8)


def test_an_error_answer_matches_the_error_pattern(servers):
    bad = inputs(8)[1]
    server = servers(lambda data: b"ERR 500 no\r\n" if data == bad else OK)
    f = fuzzer(error_pattern="^ERR")
    f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))
    [found] = f.take()
    assert found.severity == "low"
    assert found.evidence.startswith("error answer: the answer matches '^ERR': b'ERR 500 no\\r\\n'; ")
    _check_names(found, bad, server.port, server.received[1][1])
    f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))  # the same inputs again
    assert f.take() == []                                     # one finding per input


def test_a_udp_crash(servers):
    query = b"QUERY name=shop id=1"
    magic = inputs(6, data=query)[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve():
        with sock:
            while True:
                data, peer = sock.recvfrom(65536)
                if data == magic:
                    return                                    # the port closes, no answer
                sock.sendto(b"ANSWER", peer)
    threading.Thread(target=serve, daemon=True).start()
    f = fuzzer(mutations_per_seed=6)
    f.fuzz(Seed(Target("udp", LOCAL, port), query))
    [found] = f.take()
    assert found.evidence.startswith("crash: no answer in 0.3 s and the service then refused")
    assert found.five_tuple.protocol == "udp" and found.five_tuple.dport == port
    assert magic.hex()[:2 * fuzzing.SHOWN] in found.evidence


def test_a_destination_the_instance_does_not_hold_is_refused(servers):
    server = servers(lambda data: OK, address="127.0.0.2")   # local, not the instance's
    f = fuzzer()
    f.fuzz(Seed(Target("tcp", IPv4Address("127.0.0.2"), server.port), REQUEST))
    time.sleep(0.2)
    assert server.received == [] and f.refused == 1 and f.sent == 0 and f.take() == []
    with pytest.raises(Refused, match="is not an address of the instance"):
        open_socket(Target("udp", IPv4Address("127.0.0.2"), 53), {LOCAL})


def test_the_image_ending_names_the_last_input_only_soon_after_it(servers):
    server = servers(lambda data: OK)
    for after, crashes in [(1.0, True), (CRASH_WINDOW + 1, False)]:
        clock = [100.0]
        f = Fuzzer(settings_from({"mutations_per_seed": 1, "timeout": 0.3}), {LOCAL},
                   lambda: WALL, now=lambda: clock[0])
        f.fuzz(Seed(Target("tcp", LOCAL, server.port), REQUEST))
        clock[0] += after
        f.image_gone()
        found = f.take()
        assert len(found) == int(crashes) and f.stopping.is_set()
        if crashes:
            assert found[0].evidence.startswith(
                "crash: the image's process group ended 1.0 s after the input; ")


# -- the profile -----------------------------------------------------------------------



def context(settings) -> ProfileContext:
    return ProfileContext("web-shadow-1", "eth1", (IPv4Interface("127.0.0.1/8"),), None,
                          settings, 4242, lambda: WALL)


def test_the_poll_after_the_image_is_gone_names_the_input_in_flight(servers):
    got, release = threading.Event(), threading.Event()

    def hold(data):                   # the input takes the service down; nothing answers
        if data:
            got.set()
            release.wait(5)
        return None
    server = servers(hold)
    groups = {4242: True}
    made = []
    profile = FuzzingProfile(lambda i: made.append(FakeCapture(i)) or made[-1],
                             alive=lambda pgid: groups[pgid])
    profile.start(context({"seed": 7, "timeout": 5, "rate": 100}))
    client = lambda data, seq, flags=ACK | PSH: Segment("tcp", CLIENT, 40000, LOCAL, server.port,
                                                        flags, seq, data)
    made[0].waiting = [client(b"", 99, SYN), client(REQUEST, 100),
                       Segment("tcp", LOCAL, server.port, CLIENT, 40000, ACK | PSH, 1, OK)]
    try:
        assert profile.poll() == [] and profile.lag_ms == 0.0
        assert got.wait(5)                                   # the first input is in flight
        started = time.monotonic()
        assert profile.poll() == []                          # the group is still there
        groups[4242] = False
        [found] = profile.poll()
        assert time.monotonic() - started < 0.2              # polls never wait for the worker
        data, peer = server.received[0]
        assert data == inputs(1)[0]
        assert found.severity == "high"
        assert found.evidence.startswith(
            "crash: the image's process group ended with the input in flight; ")
        _check_names(found, data, server.port, peer)
        assert profile.poll() == []
        started = time.monotonic()
        profile.stop()
        assert time.monotonic() - started < 1.0 and made[0].closed and profile.lag_ms == 0.0
    finally:
        release.set()


def test_bad_settings_keep_the_profile_from_starting():
    made = []
    with pytest.raises(ValueError, match="rate"):
        FuzzingProfile(lambda i: made.append(FakeCapture(i)) or made[-1]).start(
            context({"rate": "fast"}))
    assert made == []
