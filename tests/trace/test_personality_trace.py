"""Personality flows on a real bridge: anti-spoofing and the conntrack firewall.

One switch, two hosts in one subnet.  The bridge is loaded (one bundle, no
controller) with the base fabric of `compile_fabric` plus the flows of
`compile_personality` for H1 (a "lockdown" personality), or plus
`compile_transition` for H1.  `ofproto/trace` walks them; conntrack's answer
after each `ct(table=...)` is simulated with `--ct-next`, so one trace shows
both the pass that sends the packet to the tracker and the pass that resumes
with the given `ct_state`.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import pytest

from controller.compile.fabric import FabricInput, compile_fabric
from controller.compile.personality import (Interface, PersonalityPolicy, compile_personality,
                                            compile_transition, interface_zone)
from controller.hub import ROUTER_MAC
from controller.pipeline.ofctl import render_flows
from controller.topology import Host, Subnet

pytestmark = pytest.mark.trace

SUBNET = {"id": "net1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}
H1 = ("00:00:00:00:01:0a", "10.0.1.10", 1)   # the interface with a personality
H2 = ("00:00:00:00:01:14", "10.0.1.20", 2)
LOCKDOWN = {
    "ip_addresses": [H1[1]],
    "firewall_rules": [
        {"protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"},
        {"protocol": "icmp", "direction": "egress", "action": "allow"},
    ],
    "default_action": "deny",
}
NEW, EST, EST_REPLY = "new,trk", "est,trk", "est,rpl,trk"


@dataclass
class CtTrace:
    """`ofproto/trace` across recirculations: the datapath actions of every pass."""
    text: str
    passes: list[str]
    dp_to_ofport: dict[int, int]

    @property
    def final(self) -> list[str]:
        return [a.strip() for a in re.split(r",(?![^(]*\))", self.passes[-1]) if a.strip()]

    @property
    def out_ports(self) -> list[int]:
        return [self.dp_to_ofport.get(int(a), -int(a)) for a in self.final if a.isdigit()]

    @property
    def committed(self) -> bool:
        return any(a.startswith("ct(commit") for a in self.final)

    @property
    def tracked(self) -> bool:
        """The first pass sent the packet to conntrack (and recirculated it)."""
        return "recirc(" in self.passes[0] and "ct(zone=" in self.passes[0]

    @property
    def dropped(self) -> bool:
        return self.passes[-1] == "drop"

    def __str__(self) -> str:
        return self.text


@dataclass
class Loaded:
    bridge: object
    zone: int

    def trace(self, packet: str, *ct_next: str) -> CtTrace:
        cmd = ["ovs-appctl", "ofproto/trace", self.bridge.name, packet]
        for state in ct_next:
            cmd += ["--ct-next", state]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        passes = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
                  if line.startswith("Datapath actions:")]
        assert passes, proc.stdout
        return CtTrace(proc.stdout, passes, self.bridge.dp_ports())


def fabric_flows(dpid: int):
    hosts = tuple(Host(mac, (ip,), dpid, port, 1.0) for mac, ip, port in (H1, H2))
    subnet = Subnet.from_body(SUBNET["id"], SUBNET)
    return compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, (subnet,),
                                      ROUTER_MAC))[dpid]


def load(make_bridge, extra) -> Loaded:
    bridge = make_bridge(ports=2)
    interface = Interface(bridge.dpid, H1[2], H1[0])
    zone = interface_zone(interface)
    flows = fabric_flows(bridge.dpid) + extra(interface, zone)
    bridge.add_flows(render_flows(flows))
    assert len(bridge.dump_flows()) == len(flows)
    return Loaded(bridge, zone)


@pytest.fixture(scope="module")
def lockdown(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("lockdown", LOCKDOWN, revision=4)
    return load(make_bridge, lambda i, zone: compile_personality(i, policy, zone=zone))


@pytest.fixture(scope="module")
def transition(make_bridge) -> Loaded:
    return load(make_bridge, lambda i, zone: compile_transition(i, zone, [H1[1]]))


def tcp(src, dst, sport: int, dport: int) -> str:
    (s_mac, s_ip, s_port), (d_mac, d_ip, _) = src, dst
    return (f"in_port={s_port},tcp,dl_src={s_mac},dl_dst={d_mac},nw_src={s_ip},nw_dst={d_ip},"
            f"nw_ttl=64,tcp_src={sport},tcp_dst={dport}")


def ping(src, dst, reply: bool = False, src_ip: str | None = None) -> str:
    (s_mac, s_ip, s_port), (d_mac, d_ip, _) = src, dst
    return (f"in_port={s_port},icmp,dl_src={s_mac},dl_dst={d_mac},nw_src={src_ip or s_ip},"
            f"nw_dst={d_ip},nw_ttl=64,icmp_type={0 if reply else 8},icmp_code=0")


def arp_request(src, spa: str, target_ip: str) -> str:
    mac, _, port = src
    return (f"in_port={port},arp,dl_src={mac},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_sha={mac},"
            f"arp_spa={spa},arp_tha=00:00:00:00:00:00,arp_tpa={target_ip}")


def assert_passes(t: CtTrace, port: int, commit: bool) -> None:
    assert t.tracked, f"expected a conntrack pass first:\n{t}"
    assert t.out_ports == [port], t
    assert t.committed is commit, t


def assert_dropped_after_tracking(t: CtTrace) -> None:
    assert t.tracked, f"expected a conntrack pass first:\n{t}"
    assert t.dropped, t


# ------------------------------------------------------------ lockdown: ingress
def test_new_https_connection_in_is_committed_and_delivered(lockdown):
    t = lockdown.trace(tcp(H2, H1, 40000, 443), NEW)
    assert_passes(t, H1[2], commit=True)
    assert f"ct(zone={lockdown.zone})" in t.passes[0], t
    assert f"ct(commit,zone={lockdown.zone})" in t.final, t


def test_new_http_connection_in_is_dropped(lockdown):
    assert_dropped_after_tracking(lockdown.trace(tcp(H2, H1, 40000, 80), NEW))


def test_established_packets_in_pass_without_commit(lockdown):
    # the client's next segments of an accepted connection, and replies to H1's pings
    assert_passes(lockdown.trace(tcp(H2, H1, 40000, 443), EST), H1[2], commit=False)
    assert_passes(lockdown.trace(ping(H2, H1, reply=True), EST_REPLY), H1[2], commit=False)


def test_invalid_packets_in_are_dropped(lockdown):
    assert_dropped_after_tracking(lockdown.trace(tcp(H2, H1, 40000, 443), "inv,trk"))


# ------------------------------------------------------------- lockdown: egress
def test_established_reply_out_passes(lockdown):
    assert_passes(lockdown.trace(tcp(H1, H2, 443, 40000), EST_REPLY), H2[2], commit=False)


def test_new_connection_out_is_dropped_by_default(lockdown):
    assert_dropped_after_tracking(lockdown.trace(tcp(H1, H2, 50000, 443), NEW))


def test_ping_out_is_allowed_by_the_icmp_rule_and_committed(lockdown):
    assert_passes(lockdown.trace(ping(H1, H2), NEW), H2[2], commit=True)


def test_other_host_is_not_affected(lockdown):
    """H2 has no personality: its own traffic never meets conntrack."""
    mac, ip, port = H2
    t = lockdown.trace(f"in_port={port},icmp,dl_src={mac},dl_dst={ROUTER_MAC},nw_src={ip},"
                       f"nw_dst={SUBNET['gateway']},nw_ttl=64,icmp_type=8,icmp_code=0")
    assert len(t.passes) == 1 and "ct(" not in t.passes[0], t
    assert t.out_ports == [port], t
    # H1 -> H2: H1's egress tracks it once; H2's side is plain l2 output.
    t = lockdown.trace(ping(H1, H2, reply=True), EST_REPLY)
    assert len(t.passes) == 2 and t.out_ports == [H2[2]], t


# -------------------------------------------------------------- anti-spoofing
def test_spoofed_source_ip_is_dropped_before_conntrack(lockdown):
    t = lockdown.trace(ping(H1, H2, src_ip="10.0.1.99"), NEW)
    assert t.dropped and len(t.passes) == 1, t
    t = lockdown.trace(tcp(H1, H2, 443, 40000).replace(H1[1], H2[1], 1), EST_REPLY)
    assert t.dropped and len(t.passes) == 1, t


def test_arp_from_own_address_is_answered(lockdown):
    t = lockdown.trace(arp_request(H1, H1[1], H2[1]), NEW)
    assert [lockdown.bridge.dp_ports().get(int(a)) for a in t.final if a.isdigit()] == [H1[2]], t
    assert "set(arp(" in t.passes[-1], t


def test_arp_with_spoofed_sender_address_is_dropped(lockdown):
    t = lockdown.trace(arp_request(H1, "10.0.1.99", H2[1]))
    assert t.dropped and len(t.passes) == 1, t


# ----------------------------------------------------------------- transition
@pytest.mark.parametrize("packet", [tcp(H2, H1, 40000, 443), tcp(H2, H1, 40000, 80),
                                    tcp(H1, H2, 50000, 22), ping(H1, H2)],
                         ids=["in-443", "in-80", "out-22", "out-ping"])
def test_transition_drops_new_connections_both_ways(transition, packet):
    assert_dropped_after_tracking(transition.trace(packet, NEW))


@pytest.mark.parametrize("packet, port, state", [
    (tcp(H2, H1, 40000, 443), H1[2], EST),
    (tcp(H1, H2, 443, 40000), H2[2], EST_REPLY),
    (ping(H2, H1, reply=True), H1[2], EST_REPLY),
    (tcp(H1, H2, 50000, 22), H2[2], EST),
    (ping(H1, H2), H2[2], "rel,trk"),
], ids=["in-est", "out-reply", "in-ping-reply", "out-est", "out-related"])
def test_transition_passes_established_and_related(transition, packet, port, state):
    assert_passes(transition.trace(packet, state), port, commit=False)


def test_transition_keeps_anti_spoofing(transition):
    t = transition.trace(ping(H1, H2, src_ip="10.0.1.99"), EST)
    assert t.dropped and len(t.passes) == 1, t
