"""Learning on a real bridge with real traffic: the fabric plus `observe_flows` for one
member, two network namespaces sending real TCP and UDP through the userspace datapath
(real conntrack, real learn), the records read back with flow stats and decoded by
`records.seen_of`, as the runtime reads them.

    port 1  MEMBER  10.0.1.10 (namespace tp<pid>m), observed ("web")
    port 2  PEER    198.51.100.1 (namespace tp<pid>p), routed through the router MAC

The bridge has no controller at all: whatever reached a controller action would be
lost, and every flow that has one is checked to have counted nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_4

from controller.core.channel import FlowCounters
from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.policy import records
from controller.features.policy.observe import Member, observe_flows, record_cookie, zone_of
from controller.pipeline import ofcodec, tables
from controller.pipeline.flowspec import FlowSpec
from tests.trace.conftest import run, split_top, wait_until
from tests.trace.ofsession import OFSession

pytestmark = pytest.mark.trace

NAME = f"tp{os.getpid() % 100000}"
MEMBER = Host("02:00:0a:00:01:0a", ("10.0.1.10",), 0, 1)
PEER = Host("02:00:c6:33:64:01", ("198.51.100.1",), 0, 2)
SUBNETS = (("seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}),
           ("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"}))
INDEX, IFACE = 7, "if-web-1"
COOKIE = record_cookie("web")
ALL_BITS = (1 << 64) - 1

SERVE = r"""
import socket, sys, threading
def tcp(s):
    while True:
        c, _ = s.accept()
        with c:
            c.sendall(c.recv(64))
def udp(s):                      # answers only what asks for it
    while True:
        data, peer = s.recvfrom(64)
        if data.endswith(b"?"):
            s.sendto(data, peer)
for spec in sys.argv[1:]:
    proto, port = spec.split("/")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    if proto == "tcp":
        s.listen(16)
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

OPEN = r"""
import json, socket, sys, time
ip, proto, port, times = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ports = []
for _ in range(times):
    if proto == "tcp":
        with socket.create_connection((ip, port), timeout=5) as s:
            ports.append(s.getsockname()[1])
            s.sendall(b"hello")
            assert s.recv(64) == b"hello"
    else:     # a one-way start (the second datagram is +new again in conntrack), answered
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.connect((ip, port))
            ports.append(s.getsockname()[1])
            s.send(b"hello")
            time.sleep(0.05)      # not in the same receive batch (see observe: a burst)
            s.send(b"query?")
            assert s.recv(64) == b"query?"
print(json.dumps(ports))
"""


@dataclass
class Lab:
    bridge: str
    dpid: int
    member: Member
    servers: list[subprocess.Popen] = field(default_factory=list)

    def ns(self, host: Host) -> str:
        return f"{NAME}{'m' if host is MEMBER else 'p'}"

    def serve(self, host: Host, *specs: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), sys.executable, "-c",
                                 SERVE, *specs], stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def open(self, host: Host, ip: str, proto: str, port: int, times: int) -> list[int]:
        """Open `times` connections from `host`; the client ports they used."""
        out = run("ip", "netns", "exec", self.ns(host), sys.executable, "-c", OPEN, ip, proto,
                  str(port), str(times))
        return json.loads(out)

    def session(self, version: int = ofproto_v1_4.OFP_VERSION) -> OFSession:
        return OFSession(self.bridge, version)

    def records(self) -> list:
        """The records, read as `SwitchChannel.flow_counters(None, cookie, all bits)` answers
        and decoded by `records.seen_of`, as the runtime does."""
        with self.session() as of:
            counted = [FlowCounters(ofcodec.decode_flow(of.dp, s), s.packet_count, s.byte_count)
                       for s in of.flow_stats(COOKIE, ALL_BITS)]
        return records.seen_of({MEMBER.port: IFACE}, counted, time.time())

    def counts(self) -> dict[tuple, int]:
        return {(s.direction, s.protocol, s.port, s.peer_ip): s.connections
                for s in self.records()}

    def ofctl(self, *args: str) -> str:
        return run("ovs-ofctl", "-O", "OpenFlow14", *args)

    def trace(self, packet: str, *ct_next: str) -> list[str]:
        """The datapath actions of every pass of ofproto/trace (conntrack answering ct_next)."""
        args = [a for state in ct_next for a in ("--ct-next", state)]
        text = run("ovs-appctl", "ofproto/trace", self.bridge, packet, *args)
        return [l.split(":", 1)[1].strip() for l in text.splitlines()
                if l.startswith("Datapath actions:")]


def _dp_port(bridge: str, name: str) -> str:
    """The datapath port number of interface `name` (what ofproto/trace prints)."""
    for line in run("ovs-appctl", "dpif/show").splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == name:
            return parts[1].split("/")[1].rstrip(":")
    raise AssertionError(f"{name} not in dpif/show")


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


def _flows(dpid: int, member: Member) -> list[FlowSpec]:
    hosts = tuple(Host(h.mac, h.ips, dpid, h.port) for h in (MEMBER, PEER))
    subnets = tuple(Subnet.from_body(i, b) for i, b in SUBNETS)
    fabric = compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, subnets,
                                        ROUTER_MAC))[dpid]
    return [*fabric, *observe_flows(member, INDEX, COOKIE)]


@pytest.fixture(scope="module")
def lab(ovs):
    _cleanup()
    bridge, dpid = f"{NAME}br", (0xB5 << 40) | (os.getpid() << 8) | 0x7F
    member = Member(IFACE, dpid, MEMBER.port, MEMBER.mac, MEMBER.ips, tables.ARP.id, None)
    lab = Lab(bridge, dpid, member)
    try:
        run("ovs-vsctl", "--timeout=20", "add-br", bridge, "--", "set", "bridge", bridge,
            "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14",
            f"other-config:datapath-id={dpid:016x}", "other-config:disable-in-band=true")
        _plug(bridge, MEMBER, f"{NAME}m", SUBNETS[0][1]["gateway"])
        _plug(bridge, PEER, f"{NAME}p", SUBNETS[1][1]["gateway"])
        with lab.session() as of:
            of.barrier([ofcodec.flow_add(of.dp, f) for f in _flows(dpid, member)])
        yield lab
    finally:
        for proc in lab.servers:
            proc.kill()
            proc.wait(timeout=10)
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={zone_of(INDEX)}", check=False)
        _cleanup()


def _controller_packets(lab: Lab) -> dict[str, int]:
    """n_packets of every flow that sends to the controller, by its text."""
    out = {}
    for line in lab.ofctl("dump-flows", lab.bridge).splitlines():
        if "CONTROLLER" in line:
            packets = next(p for p in line.split(", ") if p.startswith("n_packets="))
            out[line.split("actions=")[0].split("priority=")[-1]] = int(packets.split("=")[1])
    return out


# ------------------------------------------------------------------ (1) counts
def test_records_count_each_connection_once_by_who_opened_it_and_its_server_port(lab):
    lab.serve(PEER, "tcp/80", "udp/53")
    lab.serve(MEMBER, "tcp/8080")
    member, peer = MEMBER.ips[0], PEER.ips[0]
    clients = {"tcp 80": lab.open(MEMBER, peer, "tcp", 80, 3),
               "udp 53": lab.open(MEMBER, peer, "udp", 53, 3),
               "tcp 8080": lab.open(PEER, member, "tcp", 8080, 2)}
    assert all(len(set(p)) == len(p) for p in clients.values()), clients
    want = {("egress", "tcp", 80, peer): 3, ("egress", "udp", 53, peer): 3,
            ("ingress", "tcp", 8080, peer): 2}
    began = time.monotonic()
    wait_until(lambda: lab.counts() == want, 10, "the records to count every connection",
               diagnose=lambda: f"records: {lab.counts()}; clients: {clients}")
    print(f"records complete {time.monotonic() - began:.2f} s after the last connection")
    for _ in range(2):                   # stats the datapath still held: none is missing
        run("ovs-appctl", "revalidator/wait")
    got = lab.records()
    assert {(s.direction, s.protocol, s.port, s.peer_ip): s.connections for s in got} == want
    assert {s.member for s in got} == {IFACE}
    ephemeral = {p for ports in clients.values() for p in ports}
    assert not ephemeral & {s.port for s in got}
    with lab.session() as of:                 # nor in any field of any learned flow
        learned = [ofcodec.decode_flow(of.dp, s) for s in of.flow_stats(COOKIE, ALL_BITS)]
    values = {v for f in learned if f.table == tables.POLICY_RECORDS.id for _, v in f.match}
    assert len([f for f in learned if f.table == tables.POLICY_RECORDS.id]) == 3
    assert not ephemeral & values, values
    # nothing went to a controller: the bridge has none, and no flow that punts counted
    assert run("ovs-vsctl", "get-controller", lab.bridge).strip() == ""
    punts = _controller_packets(lab)
    assert punts and not any(punts.values()), punts


# ------------------------------------------------------------------ (2) the paths
def _tcp(src: Host, dst: Host, sport: int, dport: int, flags: str) -> str:
    return (f"in_port={src.port},tcp,dl_src={src.mac},dl_dst={ROUTER_MAC},"
            f"nw_src={src.ips[0]},nw_dst={dst.ips[0]},nw_ttl=64,tp_src={sport},tp_dst={dport},"
            f"tcp_flags={flags}")


def _udp(src: Host, dst: Host, sport: int, dport: int) -> str:
    return (f"in_port={src.port},udp,dl_src={src.mac},dl_dst={ROUTER_MAC},"
            f"nw_src={src.ips[0]},nw_dst={dst.ips[0]},nw_ttl=64,udp_src={sport},udp_dst={dport}")


@pytest.mark.parametrize("packet, ct_next, copied", [
    (_tcp(MEMBER, PEER, 41000, 80, "0x002"), ("trk,new",), True),
    (_tcp(MEMBER, PEER, 41000, 80, "0x010"), (), False),          # established TCP
    (_tcp(PEER, MEMBER, 80, 41000, "0x012"), ("trk,est,rpl",), True),
    (_udp(MEMBER, PEER, 41000, 53), ("trk,new",), True),
    (_udp(PEER, MEMBER, 53, 41000), ("trk,est,rpl",), True),
    (_tcp(PEER, MEMBER, 42000, 8080, "0x002"), ("trk,new",), True),
], ids=["syn-out", "ack-out", "synack-in", "udp-out", "udp-reply-in", "syn-in"])
def test_every_packet_goes_where_the_fabric_sends_it_and_nothing_to_a_controller(
        lab, packet, ct_next, copied):
    passes = lab.trace(packet, *ct_next)
    to = PEER if f"in_port={MEMBER.port}," in packet else MEMBER
    first = split_top(passes[0])
    assert first[-1] == _dp_port(lab.bridge, f"{NAME}{'m' if to is MEMBER else 'p'}h"), passes
    assert not any("userspace(" in p for p in passes), passes
    zone = zone_of(INDEX)
    assert (f"clone(ct(zone={zone}),recirc(" in passes[0]) == copied, passes
    if copied and "trk,new" in ct_next:      # the copy's pass: committed, recorded
        assert any(p.startswith(f"ct(commit,zone={zone},mark=") for p in passes[1:]), passes
    elif copied:                              # a reply's copy: dropped in policy_*
        assert passes[1:] == ["drop"], passes


# ------------------------------------------------------------------ (3) read back
@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_observation_flows_read_back_exactly_as_written(lab, version):
    """What the reconciler compares: the clone of a register load and a resuming ct, the
    masked ct_mark and tcp_flags matches, learn with immediate values and a commit that
    resumes with a mark decode from the switch's flow stats to the same FlowSpecs."""
    want = {f.key: f for f in observe_flows(lab.member, INDEX, COOKIE)}
    with lab.session(version) as of:
        back = {f.key: f for f in (ofcodec.decode_flow(of.dp, s)
                                   for s in of.flow_stats(COOKIE, ALL_BITS))
                if f.table not in tables.LEARNED}
    assert set(back) == set(want)
    for key, spec in want.items():
        assert back[key] == spec, (spec, back[key])
