"""The shadow agent's capture (controller.agents.shadow.capture) and its IDS profile on a
real veth pair: frames sent with a packet socket on one end, read on the other.

Needs root (a veth pair, AF_PACKET); without it the test fails, it never skips.  The
pair has a unique name starting with "ids" and is deleted at the end.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from ipaddress import IPv4Address, IPv4Interface

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controller.agents.shadow.capture import ACK, PSH, Capture, Segment
from controller.agents.shadow.profiles import PROFILES, ProfileContext
from controller.agents.shadow.protocol import FiveTuple
from tests.trace.conftest import run

pytestmark = pytest.mark.trace

CLIENT, SERVER = "10.0.0.9", "10.0.0.5"
ISN = 1000
WALL = 1_700_000_000.0


@pytest.fixture
def veth():
    if os.geteuid() != 0:
        pytest.fail("a veth pair and a packet socket need root")
    name = "ids" + uuid.uuid4().hex[:6]
    a, b = name + "a", name + "b"
    run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    try:
        for end in (a, b):
            run("ip", "link", "set", end, "up")
        yield a, b
    finally:
        run("ip", "link", "del", a, check=False)


def frame(data: bytes = b"", seq: int = ISN + 1, flags: str = "PA") -> bytes:
    return bytes(Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:05")
                 / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=80, seq=seq, flags=flags)
                 / data)


def send(interface: str, *frames: bytes) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((interface, 0))
        for f in frames:
            raw.send(f)


def until(read, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = read()
        if got:
            return got
        time.sleep(0.01)
    return []


def test_the_capture_reads_a_tcp_frame_sent_on_the_other_end(veth):
    a, b = veth
    capture = Capture(b)
    try:
        send(a, frame(b"over the wire", seq=4242))
        got = until(lambda: [s for s in capture.read() if s.dport == 80])
        assert got == [Segment("tcp", IPv4Address(CLIENT), 40000, IPv4Address(SERVER), 80,
                               ACK | PSH, 4242, b"over the wire", 13)]
        assert capture.read() == [] and capture.drained and capture.lag_ms == 0.0
        send(b, frame(b"sent from this end"))           # outgoing: not the mirror's traffic
        time.sleep(0.1)
        assert [s for s in capture.read() if s.dport == 80] == []
    finally:
        capture.close()


def test_the_profile_finds_a_signature_split_over_two_segments(veth):
    a, b = veth
    profile = PROFILES["IDS_Signature_Scan"]()
    profile.start(ProfileContext(
        "web-shadow-1", b, (IPv4Interface(f"{SERVER}/24"),), None,
        {"signatures": [{"id": "passwd", "content": "/etc/passwd", "severity": "high"}]},
        812, lambda: WALL))
    try:
        send(a, frame(seq=ISN, flags="S"), frame(b"GET /etc/pa"), frame(b"sswd HTTP/1.1", ISN + 12))
        found = until(profile.poll)
        assert [(f.severity, f.five_tuple, f.at) for f in found] == [
            ("high", FiveTuple("tcp", IPv4Address(CLIENT), 40000, IPv4Address(SERVER), 80), WALL)]
        assert "GET /etc/passwd HTTP/1.1" in found[0].evidence
    finally:
        profile.stop()
