"""The lab DNS responder and its client, on 127.0.0.1 with unprivileged ports."""
from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.dns import DNS

from topologies import dnsd

DNSD = Path(__file__).resolve().parents[2] / "topologies" / "dnsd.py"
ANSWER = "192.0.2.10"


class Responder:
    """A responder thread on 127.0.0.1:<free port>, logging into `log`."""

    def __init__(self) -> None:
        self.sock = dnsd.bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.stopping, self.log = threading.Event(), io.StringIO()
        self.thread = threading.Thread(target=dnsd.serve,
                                       args=(self.sock, ANSWER, self.stopping, self.log),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> str:
        """Stop the thread (it logs a query after answering it); its log."""
        self.stopping.set()
        self.thread.join(timeout=2)
        assert not self.thread.is_alive()
        self.sock.close()
        return self.log.getvalue()


@pytest.fixture
def server():
    responder = Responder()
    yield responder
    responder.stop()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_query_gets_the_answer(server):
    assert dnsd.query("hubshift-health.example.", "127.0.0.1", server.port, timeout=2) == \
        (0, [ANSWER])
    assert dnsd.query("anything.at.all", "127.0.0.1", server.port, timeout=2) == (0, [ANSWER])
    lines = server.stop().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("127.0.0.1:") and "hubshift-health.example. A -> 192.0.2.10" in lines[0]


def test_response_wire_format():
    query = dnsd.build_query("www.example.org", 0x4242)
    reply, line = dnsd.respond(query, ANSWER)
    dns = DNS(reply)
    assert (dns.id, dns.qr, dns.opcode, dns.rd, dns.ra, dns.rcode) == (0x4242, 1, 0, 1, 1, 0)
    assert (dns.qdcount, dns.ancount, dns.nscount, dns.arcount) == (1, 1, 0, 0)
    assert (dns.qd[0].qname, dns.qd[0].qtype, dns.qd[0].qclass) == (b"www.example.org.", 1, 1)
    an = dns.an[0]
    assert (an.rrname, an.type, an.rclass, an.ttl, an.rdata) == (b"www.example.org.", 1, 1, 5, ANSWER)
    assert reply[12:12 + len(query) - 12] == query[12:]  # question echoed byte for byte
    assert line == "www.example.org. A -> 192.0.2.10"


def test_other_types_get_empty_noerror():
    reply, line = dnsd.respond(dnsd.build_query("www.example.org", 7, qtype=28), ANSWER)
    dns = DNS(reply)
    assert (dns.id, dns.qr, dns.ra, dns.rcode, dns.qdcount, dns.ancount) == (7, 1, 1, 0, 1, 0)
    assert dns.qd[0].qtype == 28
    assert line.endswith("AAAA -> NOERROR (empty)")


def test_rd_copied_and_edns_query_tolerated():
    # RD clear, plus an EDNS OPT record in the additional section
    query = struct.pack("!HHHHHH", 9, 0x0000, 1, 0, 0, 1) + dnsd.encode_name("a.example") \
        + struct.pack("!HH", 1, 1) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    dns = DNS(dnsd.respond(query, ANSWER)[0])
    assert (dns.id, dns.rd, dns.ra, dns.ancount, dns.arcount) == (9, 0, 1, 1, 0)
    assert dns.an[0].rdata == ANSWER


def test_malformed_queries():
    assert dnsd.respond(b"\x00\x01", ANSWER)[0] is None
    response = struct.pack("!HHHHHH", 1, 0x8180, 0, 0, 0, 0)
    assert dnsd.respond(response, ANSWER)[0] is None  # never answer a response
    truncated = dnsd.build_query("www.example.org", 3)[:20]
    assert DNS(dnsd.respond(truncated, ANSWER)[0]).rcode == 1  # FORMERR
    notify = struct.pack("!HHHHHH", 4, 4 << 11, 0, 0, 0, 0)
    assert DNS(dnsd.respond(notify, ANSWER)[0]).rcode == 4  # NOTIMP
    loop = struct.pack("!HHHHHH", 5, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c"
    assert DNS(dnsd.respond(loop, ANSWER)[0]).rcode == 1


class SilentSocket:
    """A UDP socket nobody answers, on a clock that moves only while it waits."""

    def __init__(self, clock: SimpleNamespace) -> None:
        self.clock = clock
        self.sent: list[tuple[float, tuple[str, int]]] = []
        self.timeout: float | None = None

    def __enter__(self) -> SilentSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((self.clock.now, address))

    def settimeout(self, seconds: float) -> None:
        self.timeout = seconds

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        assert self.timeout is not None, "recvfrom without a timeout would block for ever"
        self.clock.now += self.timeout
        raise TimeoutError


def test_query_resends_every_second_and_gives_up_at_its_timeout(monkeypatch):
    clock = SimpleNamespace(now=100.0)
    silent = SilentSocket(clock)
    monkeypatch.setattr(dnsd, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(dnsd, "socket", SimpleNamespace(
        AF_INET=socket.AF_INET, SOCK_DGRAM=socket.SOCK_DGRAM, socket=lambda *args: silent))
    assert dnsd.query("x.example", "127.0.0.1", 5353, timeout=2.5) is None
    assert silent.sent == [(100.0, ("127.0.0.1", 5353)), (101.0, ("127.0.0.1", 5353)),
                           (102.0, ("127.0.0.1", 5353))]
    assert clock.now == 102.5          # waited exactly until the timeout, not a moment longer


def test_cli_server_and_client():
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, str(DNSD), "--listen", "127.0.0.1", "--answer", ANSWER,
                             "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = [sys.executable, str(DNSD), "--query", "hubshift-health.example.",
                  "--server", "127.0.0.1", "--port", str(port), "--timeout", "5"]
        done = subprocess.run(client, capture_output=True, text=True, timeout=20, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ANSWER + "\n"
        line = proc.stdout.readline()  # flushed per query, so readable while it runs
        assert "hubshift-health.example. A -> 192.0.2.10" in line
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_cli_client_timeout_exit_1():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        done = subprocess.run([sys.executable, str(DNSD), "--query", "x.example", "--server",
                               "127.0.0.1", "--port", str(silent.getsockname()[1]),
                               "--timeout", "0.3"],
                              capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 1 and done.stdout == "" and "timeout" in done.stderr


def test_cli_usage_errors():
    def run(*args: str) -> int:
        return subprocess.run([sys.executable, str(DNSD), *args], capture_output=True,
                              check=False).returncode
    assert run() == 2
    assert run("--listen", "127.0.0.1", "--answer", "nope") == 2
    assert run("--query", "x.example") == 2


def test_cli_client_no_a_record_exit_3():
    """A server answering NXDOMAIN: answered, but nothing to print."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind(("127.0.0.1", 0))
        fake.settimeout(10)

        def nxdomain() -> None:
            data, peer = fake.recvfrom(512)
            fake.sendto(data[:2] + struct.pack("!H", 0x8183) + data[4:], peer)

        thread = threading.Thread(target=nxdomain, daemon=True)
        thread.start()
        done = subprocess.run([sys.executable, str(DNSD), "--query", "x.example", "--server",
                               "127.0.0.1", "--port", str(fake.getsockname()[1])],
                              capture_output=True, text=True, timeout=20, check=False)
        thread.join(timeout=5)
    assert done.returncode == 3 and done.stdout == "" and "NXDOMAIN" in done.stderr
