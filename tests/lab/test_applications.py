"""Connection marks and the application access policy, with the real controller,
a Mininet hub and real traffic.

Hosts (10.0.s.i): h2_1 is a server (tcp/80, tcp/443, udp/7000 echo) that gets
an application policy; h1_2 is a server on tcp/80 that h2_1 connects to;
h1_1 is the client; h1_2 -> h2_2 carries a one-way UDP stream through a
personality switch of h1_2.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, wait_for
from tests.lab.test_personalities import iface, operation, personality, switch, wait_op

pytestmark = pytest.mark.lab
LAB_PREFIX = "ap"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
HTTP_ONLY = {
    "allow": [{"name": "http", "protocol": "tcp", "port": 80,
               "signature": "re:^(GET|POST|HEAD) "},
              {"name": "quiz", "protocol": "udp", "port": 7000, "signature": "QUIZ"}],
    "deny": [{"name": "ssh-banner", "protocol": "tcp", "port": 80, "signature": "SSH-"}],
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=2, spares=0)
    try:
        lab.net.pingAll(timeout=2)          # every host (and interface) discovered
        lab.bg(lab.host("h2_1"), f"{NETCHECK} serve 80 443")
        lab.bg(lab.host("h2_1"), f"{NETCHECK} udpecho 7000")
        lab.bg(lab.host("h1_2"), f"{NETCHECK} serve 80")
        wait_for("servers", lambda: "443" in lab.host("h2_1").cmd("ss -ltn")
                 and ":7000" in lab.host("h2_1").cmd("ss -lun")
                 and ":80" in lab.host("h1_2").cmd("ss -ltn"), 10)
        yield lab
    finally:
        stop_lab(lab)


def tcp_answered(lab, src, dst_ip, port, send="hello", lines=1, timeout=1.5) -> bool:
    out = lab.host(src).cmd(f"{NETCHECK} connect {dst_ip} {port} -t {timeout} "
                            f"--send '{send}' --lines {lines}; echo rc=$?")
    return "rc=0" in out


def udp_answered(lab, src, dst_ip, port, text, timeout=1.5) -> bool:
    out = lab.host(src).cmd(f"{NETCHECK} udpask {dst_ip} {port} '{text}' -t {timeout}; echo rc=$?")
    return "rc=0" in out and f"echo {text}" in out


def punts(lab) -> float:
    """Packets the firewall tables sent to the controller so far (inspection)."""
    total = 0.0
    for line in lab.controller.get("/metrics").splitlines():
        if line.startswith("hub_packet_in_total{") and re.search(
                r'reason="personality_(egress|ingress)_(fw|count)"', line):
            total += float(line.rsplit(" ", 1)[1])
    return total


LATENCY = """
import socket, statistics, sys, time
times = []
for _ in range(9):
    start = time.perf_counter()
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
        c.sendall(b"GET / HTTP/1.0\\n")
        c.recv(200)
    times.append((time.perf_counter() - start) * 1000)
print(statistics.median(times))
"""


def _median_ms(lab, port: int) -> float:
    """Connect, send an HTTP request line, get its answer: the median time of 9, in ms."""
    script = "/tmp/ap-latency.py"
    with open(script, "w") as f:
        f.write(LATENCY)
    return float(lab.host("h1_1").cmd(f"python3 {script} 10.0.2.1 {port}").strip().splitlines()[-1])


def ofctl(*args: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow14", *args], check=True,
                          capture_output=True, text=True).stdout


def activate(lab, host_name, pid, **body):
    personality(lab, pid, ip_addresses=[lab.host(host_name).IP()], **body)
    op = switch(lab, host_name, pid, drain={"max_seconds": 0})
    done = wait_op(lab, op["id"])
    assert done["state"] == "succeeded", done


# ---------------------------------------------------------------- scenarios
def test_one_way_udp_stream_keeps_flowing_through_a_transition(lab):
    """h1_2 streams UDP to h2_2, nothing ever comes back.  h1_2 switches personality
    with a 2 s drain: the transition refuses new connections, but the stream was
    committed by h1_2's personality (ct_mark COMMITTED), so it keeps flowing."""
    activate(lab, "h1_2", "ap-stream-a", default_action="allow")
    personality(lab, "ap-stream-b", ip_addresses=["10.0.1.2"], default_action="allow")
    sink, sender = lab.host("h2_2"), lab.host("h1_2")
    sink_log, sent_log = "/tmp/ap-udp-sink.log", "/tmp/ap-udp-sent.log"
    sink.cmd(f"rm -f {sink_log}")
    lab.bg(sink, f"{NETCHECK} udpsink 5999 {sink_log}")
    wait_for("udp sink", lambda: ":5999" in sink.cmd("ss -lun"), 5)
    sender.cmd(f"rm -f {sent_log}; {NETCHECK} udpstream 10.0.2.2 5999 6 200 > {sent_log} 2>&1 &")
    wait_for("stream flowing", lambda: "received" in sink.cmd(f"cat {sink_log}"), 5)

    op = switch(lab, "h1_2", "ap-stream-b", drain={"max_seconds": 2, "until": "timeout"})
    wait_op(lab, op["id"], ("draining",), 5)
    # During the transition: the stream's packets are +new (never answered) and
    # carry the mark; the transition's committed-new flow is what passes them.
    bridge = f"{LAB_PREFIX}a1"
    assert operation(lab, op["id"])["state"] == "draining"

    def marked_new_counted():
        for line in ofctl("dump-flows", bridge, "table=3").splitlines():
            if "priority=64002" in line and "ct_mark=0x1/0x1" in line:
                n = int(re.search(r"n_packets=(\d+)", line).group(1))
                if n > 20:
                    return n
        return None
    wait_for("one-way packets passing the transition by their mark", marked_new_counted, 2)
    conntrack = subprocess.run(["ovs-appctl", "dpctl/dump-conntrack"], capture_output=True,
                               text=True).stdout
    stream = [line for line in conntrack.splitlines()
              if "dst=10.0.2.2" in line and "dport=5999" in line and "udp" in line]
    assert stream and all("mark=1" in line for line in stream), stream

    done = wait_op(lab, op["id"])
    assert done["state"] == "succeeded", done
    wait_for("stream done", lambda: "sent" in sender.cmd(f"cat {sent_log}"), 10)
    sent = int(sender.cmd(f"cat {sent_log}").split()[-1])

    def received():
        text = sink.cmd(f"cat {sink_log}").split()
        return int(text[1]) if len(text) >= 2 and int(text[3]) == sent else None
    got = wait_for("the last datagram", received, 5)
    lost = sent - got
    print(f"one-way UDP through a 2 s transition: sent {sent}, lost {lost}")
    assert sent > 1000 and lost <= 2, (sent, got)


def test_http_only_port_80_by_first_payload(lab):
    """tcp/80 of h2_1 admits only requests that start with an HTTP method; an SSH
    banner or any other first payload is cut, both ways; tcp/443 is not governed."""
    activate(lab, "h2_1", "ap-web", default_action="allow", application_access_policy=HTTP_ONLY)
    before = punts(lab)
    assert tcp_answered(lab, "h1_1", "10.0.2.1", 80, "GET / HTTP/1.0")
    assert tcp_answered(lab, "h1_1", "10.0.2.1", 80, "HEAD /index.html HTTP/1.1", lines=20)
    first_two = punts(lab) - before
    # A pinned verdict ends the inspection: 20 lines cost no more packet-ins than one
    # (per connection: the handshake's ACK and the first payload).
    print(f"packet-ins for two inspected connections (1 and 20 lines): {first_two:g}")
    assert 2 <= first_two <= 6, first_two
    assert not tcp_answered(lab, "h1_1", "10.0.2.1", 80, "hello")
    assert not tcp_answered(lab, "h1_1", "10.0.2.1", 80, "SSH-2.0-OpenSSH_9.2")
    assert not tcp_answered(lab, "h1_1", "10.0.2.1", 80, "get / lowercase")
    assert tcp_answered(lab, "h1_1", "10.0.2.1", 443, "hello")      # not in the policy
    print(f"connect + first answer, median of 9: inspected tcp/80 {_median_ms(lab, 80):.1f} ms,"
          f" tcp/443 {_median_ms(lab, 443):.1f} ms")
    # The policy applies to connections h2_1 opens too.
    assert tcp_answered(lab, "h2_1", "10.0.1.2", 80, "POST /form HTTP/1.1")
    assert not tcp_answered(lab, "h2_1", "10.0.1.2", 80, "SSH-2.0-x")


def test_udp_signature(lab):
    activate(lab, "h2_1", "ap-web-udp", default_action="allow",
             application_access_policy=HTTP_ONLY)
    assert udp_answered(lab, "h1_1", "10.0.2.1", 7000, "QUIZ 1")
    assert not udp_answered(lab, "h1_1", "10.0.2.1", 7000, "quiz 2")
    assert not udp_answered(lab, "h1_1", "10.0.2.1", 7000, "hello")
    assert udp_answered(lab, "h1_1", "10.0.2.1", 7000, "QUIZ 3")


def test_switch_back_removes_the_policy(lab):
    activate(lab, "h2_1", "ap-web-2", default_action="allow", application_access_policy=HTTP_ONLY)
    assert not tcp_answered(lab, "h1_1", "10.0.2.1", 80, "hello")
    activate(lab, "h2_1", "ap-plain", default_action="allow")
    assert tcp_answered(lab, "h1_1", "10.0.2.1", 80, "hello")
    record = iface(lab, "h2_1")
    history = api(lab, "GET", f"/v1/interfaces/{record['id']}/history", expect=200)
    assert [h["to"] for h in history][-2:] == ["ap-web-2", "ap-plain"]
