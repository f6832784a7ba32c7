"""Personality flows on a real bridge: anti-spoofing, the conntrack firewall, the
count tables, DNS redirection and the interface's own routes.

One switch, two hosts in one subnet.  The bridge is loaded (one bundle, no
controller) with the base fabric of `compile_fabric` plus the flows of
`compile_personality` for H1 (a "lockdown" personality, or a "resolver"
personality with DNS servers and routes via H2), or plus `compile_transition`
for H1.  `ofproto/trace` walks them; conntrack's answer after each
`ct(table=...)` is simulated with `--ct-next` (NAT included: the trace rewrites
the addresses of the resumed pass), so one trace shows both the pass that sends
the packet to the tracker and the pass that resumes with the given `ct_state`.
The trace suppresses side effects: the count tables' learn actions are shown,
not executed (table 63 stays empty).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import pytest

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition,
                                            connection_cookie, interface_zone)
from controller.core.hub import ROUTER_MAC
from controller.pipeline.ofctl import render_flows
from controller.core.topology import Host, Subnet

pytestmark = pytest.mark.trace

SUBNET = {"id": "net1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}
H1 = ("00:00:00:00:01:0a", "10.0.1.10", 1)   # the interface with a personality
H2 = ("00:00:00:00:01:14", "10.0.1.20", 2)
LOCKDOWN = {
    "name": "lockdown",
    "ip_addresses": [H1[1]],
    "firewall_rules": [
        {"protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"},
        {"protocol": "icmp", "direction": "egress", "action": "allow"},
    ],
    "default_action": "deny",
}
RESOLVER = {                     # DNS only via H2, 192.168.0.0/16 routed via H2
    "name": "resolver",
    "ip_addresses": [H1[1]],
    "dns_servers": [H2[1]],
    "routing_table": [{"destination": "192.168.0.0/16", "next_hop": H2[1]},
                      {"destination": "172.16.0.0/12", "next_hop": "10.0.1.99"}],
    "default_action": "allow",
}
NEW, EST, EST_REPLY = "new,trk", "est,trk", "est,rpl,trk"
# every commit stores COMMITTED in its table's ct_mark field (pipeline.ctmark)
MARK_OUT, MARK_IN = "mark=0x1/0x7", "mark=0x8/0x38"
EGRESS_PATH = [2, 3, 4, 5]       # personality_egress, _fw, _count, personality_routes
INGRESS_PATH = [60, 61, 62]      # personality_ingress, _fw, _count


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

    @property
    def tables(self) -> list[int]:
        """OpenFlow tables the packet visited, in order, over all passes."""
        return [int(m.group(1)) for m in re.finditer(r"^ ?(\d+)\. ", self.text, re.M)]

    @property
    def final_flow(self) -> str:
        """The last pass's final flow (its input flow when it changed nothing)."""
        lines = self.text.splitlines()
        final = [line for line in lines if line.startswith("Final flow:")][-1]
        if final.strip() == "Final flow: unchanged":
            return [line for line in lines if line.startswith("Flow:")][-1]
        return final

    def learned(self, cookie: int) -> list[str]:
        """The learn actions the trace met (shown, not executed) with this cookie."""
        return [line.strip() for line in self.text.splitlines()
                if line.strip().startswith("learn(table=63,") and f"cookie=0x{cookie:x}," in line]

    def __str__(self) -> str:
        return self.text


def ct_trace(bridge, packet: str, *ct_next: str) -> CtTrace:
    """`ofproto/trace` of `packet` on `bridge`, conntrack answering `ct_next` in turn."""
    cmd = ["ovs-appctl", "ofproto/trace", bridge.name, packet]
    for state in ct_next:
        cmd += ["--ct-next", state]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    passes = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
              if line.startswith("Datapath actions:")]
    assert passes, proc.stdout
    return CtTrace(proc.stdout, passes, bridge.dp_ports())


@dataclass
class Loaded:
    bridge: object
    zone: int
    interface: Interface

    @property
    def connection_cookie(self) -> int:
        return connection_cookie(self.interface, self.zone)

    def trace(self, packet: str, *ct_next: str) -> CtTrace:
        return ct_trace(self.bridge, packet, *ct_next)


def fabric_flows(dpid: int):
    hosts = tuple(Host(mac, (ip,), dpid, port, 1.0) for mac, ip, port in (H1, H2))
    subnet = Subnet.from_body(SUBNET["id"], SUBNET)
    return compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, (subnet,),
                                      ROUTER_MAC))[dpid]


def load(make_bridge, extra, epoch: int = 0) -> Loaded:
    bridge = make_bridge(ports=2)
    interface = Interface(bridge.dpid, H1[2], H1[0])
    zone = interface_zone(interface, epoch)
    flows = fabric_flows(bridge.dpid) + extra(interface, zone)
    bridge.add_flows(render_flows(flows))
    assert len(bridge.dump_flows()) == len(flows)
    return Loaded(bridge, zone, interface)


# H1's MAC and H2's, as the hub knows them from discovery
CTX = Context(router_mac=ROUTER_MAC, macs={H1[1]: H1[0], H2[1]: H2[0]})


@pytest.fixture(scope="module")
def lockdown(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("lockdown", LOCKDOWN, revision=4)
    return load(make_bridge, lambda i, zone: compile_personality(i, policy, zone, CTX))


@pytest.fixture(scope="module")
def transition(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("lockdown", LOCKDOWN, revision=4)
    return load(make_bridge, lambda i, zone: compile_transition(i, policy, zone, CTX), epoch=1)


@pytest.fixture(scope="module")
def resolver(make_bridge) -> Loaded:
    policy = PersonalityPolicy.from_body("resolver", RESOLVER, revision=1)
    return load(make_bridge, lambda i, zone: compile_personality(i, policy, zone, CTX))


def tcp(src, dst, sport: int, dport: int) -> str:
    (s_mac, s_ip, s_port), (d_mac, d_ip, _) = src, dst
    return (f"in_port={s_port},tcp,dl_src={s_mac},dl_dst={d_mac},nw_src={s_ip},nw_dst={d_ip},"
            f"nw_ttl=64,tcp_src={sport},tcp_dst={dport}")


def routed_udp(src, dst_ip: str, sport: int, dport: int) -> str:
    """A UDP packet from `src` sent to the router MAC (off its subnet, or to a resolver)."""
    s_mac, s_ip, s_port = src
    return (f"in_port={s_port},udp,dl_src={s_mac},dl_dst={ROUTER_MAC},nw_src={s_ip},"
            f"nw_dst={dst_ip},nw_ttl=64,udp_src={sport},udp_dst={dport}")


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


def assert_counted(t: CtTrace, loaded: Loaded, path: list[int], n: int = 1) -> None:
    """The packet went through the personality's tables in order, learning its connection."""
    visited = [table for table in t.tables if table in path]
    assert visited == path * n, f"expected tables {path * n}, visited {t.tables}:\n{t}"
    counts = sum(table in (4, 62) for table in path) * n
    assert len(t.learned(loaded.connection_cookie)) == counts, t


def assert_dropped_after_tracking(t: CtTrace) -> None:
    assert t.tracked, f"expected a conntrack pass first:\n{t}"
    assert t.dropped, t


# ------------------------------------------------------------ lockdown: ingress
def test_new_https_connection_in_is_committed_and_delivered(lockdown):
    t = lockdown.trace(tcp(H2, H1, 40000, 443), NEW)
    assert_passes(t, H1[2], commit=True)
    assert f"ct(zone={lockdown.zone})" in t.passes[0], t
    assert f"ct(commit,zone={lockdown.zone},{MARK_IN})" in t.final, t
    assert_counted(t, lockdown, INGRESS_PATH)
    # the learn keys H1's side first: local = the packet's destination, peer = its source
    (learn,) = t.learned(lockdown.connection_cookie)
    assert ("NXM_NX_REG0[]=NXM_OF_IP_DST[],NXM_NX_REG1[]=NXM_OF_IP_SRC[]" in learn
            and "NXM_NX_REG2[0..15]=NXM_OF_TCP_DST[],NXM_NX_REG2[16..31]=NXM_OF_TCP_SRC[]" in learn
            and f"reg4=0x{H1[2]:x}" in learn and "hard_timeout=3" in learn), t
    assert "learn action ignored" in t.text, "ofproto/trace must not have executed the learn"
    assert not [f for f in lockdown.bridge.dump_flows()
                if "table=63," in f.split("actions=")[0]], "nothing learned"


def test_new_http_connection_in_is_dropped(lockdown):
    assert_dropped_after_tracking(lockdown.trace(tcp(H2, H1, 40000, 80), NEW))


def test_established_packets_in_pass_without_commit(lockdown):
    # the client's next segments of an accepted connection, and replies to H1's pings
    t = lockdown.trace(tcp(H2, H1, 40000, 443), EST)
    assert_passes(t, H1[2], commit=False)
    assert_counted(t, lockdown, INGRESS_PATH)
    t = lockdown.trace(ping(H2, H1, reply=True), EST_REPLY)
    assert_passes(t, H1[2], commit=False)
    assert_counted(t, lockdown, INGRESS_PATH)
    assert "NXM_NX_REG2" not in t.learned(lockdown.connection_cookie)[0], "ICMP has no ports"


def test_invalid_packets_in_are_dropped(lockdown):
    t = lockdown.trace(tcp(H2, H1, 40000, 443), "inv,trk")
    assert_dropped_after_tracking(t)
    assert 62 not in t.tables and not t.learned(lockdown.connection_cookie), "not counted"


# ------------------------------------------------------------- lockdown: egress
def test_established_reply_out_passes(lockdown):
    t = lockdown.trace(tcp(H1, H2, 443, 40000), EST_REPLY)
    assert_passes(t, H2[2], commit=False)
    assert_counted(t, lockdown, EGRESS_PATH)
    (learn,) = t.learned(lockdown.connection_cookie)
    assert ("NXM_NX_REG0[]=NXM_OF_IP_SRC[],NXM_NX_REG1[]=NXM_OF_IP_DST[]" in learn
            and "NXM_NX_REG2[0..15]=NXM_OF_TCP_SRC[],NXM_NX_REG2[16..31]=NXM_OF_TCP_DST[]"
            in learn), t


def test_new_connection_out_is_dropped_by_default(lockdown):
    t = lockdown.trace(tcp(H1, H2, 50000, 443), NEW)
    assert_dropped_after_tracking(t)
    assert 4 not in t.tables and not t.learned(lockdown.connection_cookie), "not counted"


def test_ping_out_is_allowed_by_the_icmp_rule_and_committed(lockdown):
    t = lockdown.trace(ping(H1, H2), NEW)
    assert_passes(t, H2[2], commit=True)
    assert_counted(t, lockdown, EGRESS_PATH)


def test_ping_to_the_gateway_is_answered_through_the_ingress_firewall(lockdown):
    """The gateway's echo responder hands its reply to l2, so H1's ingress firewall sees it
    (the reply of the echo H1's egress committed) before it goes back out of H1's port."""
    mac, ip, port = H1
    t = lockdown.trace(f"in_port={port},icmp,dl_src={mac},dl_dst={ROUTER_MAC},nw_src={ip},"
                       f"nw_dst={SUBNET['gateway']},nw_ttl=64,icmp_type=8,icmp_code=0",
                       NEW, EST_REPLY)
    assert len(t.passes) == 3 and t.tracked, t
    assert f"ct(commit,zone={lockdown.zone},{MARK_OUT})" in t.passes[1], t
    assert f"ct(zone={lockdown.zone})" in t.passes[1] and "recirc(" in t.passes[1], t
    assert t.out_ports == [port], t
    assert f"set(ipv4(src={SUBNET['gateway']},dst={ip}))" in t.passes[1], t
    assert "set(icmp(type=0" in t.passes[1], t
    assert "icmp_type=0" in t.final_flow and f"nw_src={SUBNET['gateway']}" in t.final_flow, t
    assert_counted(t, lockdown, EGRESS_PATH + INGRESS_PATH)


def test_other_host_is_not_affected(lockdown):
    """H2 has no personality: its own traffic never meets conntrack."""
    mac, ip, port = H2
    t = lockdown.trace(f"in_port={port},icmp,dl_src={mac},dl_dst={ROUTER_MAC},nw_src={ip},"
                       f"nw_dst={SUBNET['gateway']},nw_ttl=64,icmp_type=8,icmp_code=0")
    assert len(t.passes) == 1 and "ct(" not in t.passes[0], t
    assert t.out_ports == [port], t
    assert not set(t.tables) & set(EGRESS_PATH + INGRESS_PATH), t
    # H1 -> H2: H1's egress tracks it once; H2's side is plain l2 output.
    t = lockdown.trace(ping(H1, H2, reply=True), EST_REPLY)
    assert len(t.passes) == 2 and t.out_ports == [H2[2]], t
    assert not set(t.tables) & set(INGRESS_PATH), t


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
    t = transition.trace(packet, NEW)
    assert_dropped_after_tracking(t)
    assert f"ct(zone={transition.zone})" in t.passes[0], t
    assert not set(t.tables) & {4, 62}, "dropped before counting"


@pytest.mark.parametrize("packet, port, state", [
    (tcp(H2, H1, 40000, 443), H1[2], EST),
    (tcp(H1, H2, 443, 40000), H2[2], EST_REPLY),
    (ping(H2, H1, reply=True), H1[2], EST_REPLY),
    (tcp(H1, H2, 50000, 22), H2[2], EST),
    (ping(H1, H2), H2[2], "rel,trk"),
], ids=["in-est", "out-reply", "in-ping-reply", "out-est", "out-related"])
def test_transition_passes_established_and_related(transition, packet, port, state):
    t = transition.trace(packet, state)
    assert_passes(t, port, commit=False)
    assert transition.zone == interface_zone(transition.interface, 1)
    assert_counted(t, transition, EGRESS_PATH if packet.startswith(f"in_port={H1[2]},")
                   else INGRESS_PATH)


def test_transition_keeps_anti_spoofing(transition):
    t = transition.trace(ping(H1, H2, src_ip="10.0.1.99"), EST)
    assert t.dropped and len(t.passes) == 1, t


# ------------------------------------------------------------ DNS and routes
def test_dns_query_to_another_resolver_is_redirected_to_the_listed_server(resolver):
    """H1 asks 8.8.8.8: committed with a DNAT to H2:53, and delivered to H2."""
    t = resolver.trace(routed_udp(H1, "8.8.8.8", 5353, 53), NEW, NEW)
    zone = resolver.zone
    assert f"ct(zone={zone},nat)" in t.passes[0], t
    assert f"ct(commit,zone={zone},{MARK_OUT},nat(dst={H2[1]}:53))" in t.passes[1], t
    assert "recirc(" in t.passes[1], "resumed in the count table after the translation"
    assert "Modified flow: " in t.text and f"nw_dst={H2[1]},tp_dst=53" in t.text, t
    # after the translation: counted, then the fabric routes it to the server
    assert_counted(t, resolver, EGRESS_PATH)
    assert t.out_ports == [H2[2]], t
    assert f"nw_dst={H2[1]}" in t.final_flow and f"dl_dst={H2[0]}" in t.final_flow, t


def test_dns_query_to_the_listed_server_is_not_translated(resolver):
    t = resolver.trace(routed_udp(H1, H2[1], 5353, 53), NEW)
    assert f"ct(commit,zone={resolver.zone},{MARK_OUT})" in t.passes[1], t
    assert "nat(dst=" not in t.text.split("Datapath actions:")[-1], t
    assert t.out_ports == [H2[2]], t


def test_routed_packet_takes_the_interfaces_route_to_its_next_hop(resolver):
    """192.168.0.0/16 via H2: MACs rewritten toward H2, TTL decremented, out of H2's port."""
    t = resolver.trace(routed_udp(H1, "192.168.7.9", 40000, 5000), NEW)
    assert_passes(t, H2[2], commit=True)
    assert_counted(t, resolver, EGRESS_PATH)
    final = t.final_flow
    assert f"dl_src={ROUTER_MAC}" in final and f"dl_dst={H2[0]}" in final, t
    assert "nw_dst=192.168.7.9" in final and "nw_ttl=63" in final, t
    assert f"set(eth(src={ROUTER_MAC},dst={H2[0]}))" in t.passes[-1], t
    # the route flow, not the fabric's routing table, sent it on
    assert 40 not in t.tables and t.tables[-1] == 50, t


def test_route_via_an_unknown_next_hop_asks_the_controller(resolver):
    t = resolver.trace(routed_udp(H1, "172.16.1.1", 40000, 5000), NEW)
    assert "userspace(" in t.passes[-1] and "controller(" in t.passes[-1], t
    assert t.out_ports == [], t
