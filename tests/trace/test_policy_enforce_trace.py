"""Enforcement on a real bridge with real traffic: the fabric plus `enforce_flows` for one
member, two network namespaces opening real TCP through the userspace datapath (real
conntrack, real learn), the refused records read back with flow stats and decoded by
`enforce.decode_refused`, as the runtime reads them.

    port 1  MEMBER  10.0.1.10 (namespace tq<pid>m), enforced ("new-web")
    port 2  PEER    198.51.100.1 (namespace tq<pid>p), routed through the router MAC

Each test installs its own policy (rules and mode) after removing the last one's flows,
its refused records and the member zone's connections.  The bridge has no controller:
whatever reached a controller action would be lost, and no flow that has one may count.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from controller.core.channel import FlowCounters
from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.policy.enforce import (EffectiveRule, Enforced, Infrastructure,
                                                decode_refused, enforce_flows, review_cookie)
from controller.features.policy.observe import Member, zone_of
from controller.features.policy.rules import Peer, RuleKey
from controller.pipeline import ofcodec, tables
from tests.trace.conftest import run, wait_until
from tests.trace.ofsession import OFSession

pytestmark = pytest.mark.trace

NAME = f"tp{os.getpid() % 100000}e"
MEMBER = Host("02:00:0a:00:01:0a", ("10.0.1.10",), 0, 1)
PEER = Host("02:00:c6:33:64:01", ("198.51.100.1",), 0, 2)
SUBNETS = (("seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}),
           ("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"}))
INDEX, IFACE = 9, "if-new-web-1"
COOKIE = review_cookie("new-web")
ALL_BITS = (1 << 64) - 1
INFRA = Infrastructure(("10.0.1.254",), ())
HTTP = EffectiveRule(RuleKey("egress", "tcp", 80, Peer("address", PEER.ips[0])), "allow",
                     (f"{PEER.ips[0]}/32",))

SERVE = r"""
import socket, sys, threading
def tcp(s):
    while True:
        c, _ = s.accept()
        with c:
            c.sendall(c.recv(64))
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(16)
    threading.Thread(target=tcp, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

TRY = r"""
import socket, sys
ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(b"hello")
        print("ok" if s.recv(64) == b"hello" else "garbled")
except OSError as e:
    print(type(e).__name__)
"""


@dataclass
class Lab:
    bridge: str
    dpid: int
    member: Member
    servers: list[subprocess.Popen] = field(default_factory=list)

    def ns(self, host: Host) -> str:
        return f"{NAME}{'m' if host is MEMBER else 'p'}"

    def serve(self, host: Host, *ports: int) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), sys.executable, "-c",
                                 SERVE, *map(str, ports)], stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, host: Host, ip: str, port: int, timeout: float = 2.5) -> str:
        """"ok" when a TCP connection echoed, else the error's name (a timeout)."""
        return run("ip", "netns", "exec", self.ns(host), sys.executable, "-c", TRY, ip,
                   str(port), str(timeout)).strip()

    def ping(self, ip: str) -> bool:
        out = run("ip", "netns", "exec", self.ns(MEMBER), "ping", "-c", "1", "-W", "2", ip,
                  check=False)
        return " 0% packet loss" in out

    def enforce(self, rules: tuple[EffectiveRule, ...], mode: str) -> None:
        """Replace the member's enforcement (and forget its records and connections)."""
        run("ovs-ofctl", "-O", "OpenFlow14", "del-flows", self.bridge, f"cookie={COOKIE:#x}/-1")
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={zone_of(INDEX)}", check=False)
        flows = enforce_flows(Enforced(self.member, INDEX, rules, mode, INFRA,  # type: ignore
                                       COOKIE))
        with OFSession(self.bridge, 5) as of:
            of.barrier([ofcodec.flow_add(of.dp, f) for f in flows])

    def refused(self) -> dict[tuple, int]:
        with OFSession(self.bridge, 5) as of:
            counted = [FlowCounters(ofcodec.decode_flow(of.dp, s), s.packet_count, s.byte_count)
                       for s in of.flow_stats(COOKIE, ALL_BITS)]
        return {(s.direction, s.protocol, s.port, s.peer_ip): s.connections
                for s in decode_refused({MEMBER.port: IFACE}, counted, time.time())}

    def settled_refused(self) -> dict[tuple, int]:
        for _ in range(2):                   # stats the datapath still held
            run("ovs-appctl", "revalidator/wait")
        return self.refused()


def _cleanup() -> None:
    run("ovs-vsctl", "--timeout=20", "--if-exists", "del-br", f"{NAME}br", check=False)
    for ns in ("m", "p"):
        run("ip", "netns", "del", f"{NAME}{ns}", check=False)
        run("ip", "link", "del", f"{NAME}{ns}h", check=False)


def _plug(bridge: str, host: Host, ns: str, gateway: str) -> None:
    outside, inside = f"{ns}h", f"{ns}i"
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
    run("ip", "link", "set", inside, "netns", ns)
    run("ip", "link", "set", outside, "up")
    run("ethtool", "-K", outside, "tx", "off")     # TCP through a netdev bridge needs it
    run("ovs-vsctl", "add-port", bridge, outside, "--", "set", "interface", outside,
        f"ofport_request={host.port}")
    inns = ("ip", "netns", "exec", ns)
    run(*inns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    run(*inns, "ip", "link", "set", inside, "address", host.mac)
    run(*inns, "ip", "addr", "add", f"{host.ips[0]}/24", "dev", inside)
    run(*inns, "ip", "link", "set", inside, "up")
    run(*inns, "ip", "link", "set", "lo", "up")
    run(*inns, "ethtool", "-K", inside, "tx", "off")
    run(*inns, "ip", "route", "add", "default", "via", gateway)


@pytest.fixture(scope="module")
def lab(ovs):
    _cleanup()
    bridge, dpid = f"{NAME}br", (0xB5 << 40) | (os.getpid() << 8) | 0x7E
    member = Member(IFACE, dpid, MEMBER.port, MEMBER.mac, MEMBER.ips, tables.ARP.id, None)
    lab = Lab(bridge, dpid, member)
    try:
        run("ovs-vsctl", "--timeout=20", "add-br", bridge, "--", "set", "bridge", bridge,
            "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14",
            f"other-config:datapath-id={dpid:016x}", "other-config:disable-in-band=true")
        _plug(bridge, MEMBER, f"{NAME}m", SUBNETS[0][1]["gateway"])
        _plug(bridge, PEER, f"{NAME}p", SUBNETS[1][1]["gateway"])
        hosts = tuple(Host(h.mac, h.ips, dpid, h.port) for h in (MEMBER, PEER))
        subnets = tuple(Subnet.from_body(i, b) for i, b in SUBNETS)
        fabric = compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, subnets,
                                            ROUTER_MAC))[dpid]
        with OFSession(bridge, 5) as of:
            of.barrier([ofcodec.flow_add(of.dp, f) for f in fabric])
        lab.serve(PEER, 80, 22)
        lab.serve(MEMBER, 8080)
        yield lab
    finally:
        for proc in lab.servers:
            proc.kill()
            proc.wait(timeout=10)
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={zone_of(INDEX)}", check=False)
        _cleanup()


def _no_controller_packets(lab: Lab) -> None:
    assert run("ovs-vsctl", "get-controller", lab.bridge).strip() == ""
    lines = [l for l in run("ovs-ofctl", "-O", "OpenFlow14", "dump-flows",
                            lab.bridge).splitlines() if "CONTROLLER" in l]
    assert lines and all(" n_packets=0," in l for l in lines), lines


def test_enforce_allows_the_rule_refuses_and_records_the_rest(lab):
    lab.enforce((HTTP,), "enforce")
    member, peer = MEMBER.ips[0], PEER.ips[0]
    assert lab.connect(MEMBER, peer, 80) == "ok"          # and its replies came back
    assert lab.connect(MEMBER, peer, 22) != "ok"
    assert lab.connect(MEMBER, peer, 22) != "ok"          # a second attempt: counted again
    assert lab.connect(PEER, member, 8080) != "ok"        # no ingress rule
    want = {("egress", "tcp", 22, peer): 2, ("ingress", "tcp", 8080, peer): 1}
    wait_until(lambda: lab.refused() == want, 10, "the refused connections recorded",
               diagnose=lambda: f"refused: {lab.refused()}")
    # each attempt retransmitted its SYN within the timeout: counted once all the same
    assert lab.settled_refused() == want
    assert lab.connect(MEMBER, peer, 80) == "ok"          # the allowed one, again
    assert lab.settled_refused() == want                  # never recorded
    _no_controller_packets(lab)


def test_audit_passes_and_records_what_it_would_refuse(lab):
    lab.enforce((HTTP,), "audit")
    member, peer = MEMBER.ips[0], PEER.ips[0]
    assert lab.connect(MEMBER, peer, 22) == "ok"
    assert lab.connect(PEER, member, 8080) == "ok"
    assert lab.connect(MEMBER, peer, 80) == "ok"
    want = {("egress", "tcp", 22, peer): 1, ("ingress", "tcp", 8080, peer): 1}
    wait_until(lambda: lab.refused() == want, 10, "the would-deny connections recorded",
               diagnose=lambda: f"refused: {lab.refused()}")
    assert lab.connect(MEMBER, peer, 22) == "ok"
    wait_until(lambda: lab.refused()[("egress", "tcp", 22, peer)] == 2, 10,
               "the second would-deny connection counted",
               diagnose=lambda: f"refused: {lab.refused()}")
    assert lab.settled_refused() == {**want, ("egress", "tcp", 22, peer): 2}
    _no_controller_packets(lab)


def test_no_rules_fail_closed_with_the_infrastructure_only(lab):
    lab.enforce((), "enforce")
    peer = PEER.ips[0]
    assert lab.ping(SUBNETS[0][1]["gateway"])             # the gateway answers a ping
    assert lab.connect(MEMBER, peer, 80, timeout=1.5) != "ok"
    assert not lab.ping(peer)                             # ICMP elsewhere: refused
    assert lab.connect(PEER, MEMBER.ips[0], 8080, timeout=1.5) != "ok"
    want = {("egress", "tcp", 80, peer): 1, ("egress", "icmp", None, peer): 1,
            ("ingress", "tcp", 8080, peer): 1}
    wait_until(lambda: lab.refused() == want, 10, "the refused connections recorded",
               diagnose=lambda: f"refused: {lab.refused()}")
    _no_controller_packets(lab)


def test_enforcement_flows_read_back_exactly_as_written(lab):
    """What the reconciler compares: every enforcement flow (learn, commit with a mark,
    a clone resuming in policy_refused, masked marks) decodes from flow stats as written."""
    for mode in ("enforce", "audit"):
        lab.enforce((HTTP,), mode)
        want = {f.key: f for f in enforce_flows(Enforced(lab.member, INDEX, (HTTP,), mode,
                                                         INFRA, COOKIE))}  # type: ignore
        with OFSession(lab.bridge, 5) as of:
            back = {f.key: f for f in (ofcodec.decode_flow(of.dp, s)
                                       for s in of.flow_stats(COOKIE, ALL_BITS))
                    if f.table not in tables.LEARNED}
        assert set(back) == set(want)
        for key, spec in want.items():
            assert back[key] == spec, (spec, back[key])
