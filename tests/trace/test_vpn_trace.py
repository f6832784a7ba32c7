"""VPN flows on a real bridge with a real tunnel port, for vxlan, gre and geneve.

The bridge is loaded (one bundle, no controller) with the base fabric plus
`compile_personality` for H1 with a `vpn_tunnel_config`; the tunnel port is
created over OVSDB by `controller.ovsdb` exactly as the hub creates it, and
its OpenFlow number given to the compiler.  A second bridge is the underlay:
its LOCAL port carries the local endpoint address (so Open vSwitch's route
table sends the tunnel there) and the remote endpoint's MAC is set in the
tunnel neighbour table, so `ofproto/trace` shows the whole encapsulation
(`tnl_push` with the type's header) without any host or packet.

Conntrack is simulated with `--ct-next` (see test_personality_trace).
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                            compile_personality, interface_zone)
from controller.features.personality.vpn import tunnel_port
from controller.core.hub import ROUTER_MAC
from controller.ovsdb import OvsdbClient, OvsdbSwitches, PortSpec
from controller.pipeline.ofctl import render_flows
from tests.trace.test_personality_trace import H1, H2, CtTrace, Loaded, fabric_flows

pytestmark = pytest.mark.trace

LOCAL_IP, REMOTE_IP = "198.18.72.1", "198.18.72.2"
REMOTE_MAC = "02:00:c6:12:48:02"
REMOTE_HOST = ("02:00:ac:10:05:0a", "172.16.5.10")
KEY = 5001
HEADERS = {  # what the encapsulation header of each type shows in the datapath actions
    "vxlan": f"udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni={KEY:#x})",
    "gre": f"gre((flags=0x2000,proto=0x6558),key={KEY:#x})",
    "geneve": f"udp(src=0,dst=6081,csum=0x0),geneve(vni={KEY:#x})",
}
SSH_ONLY_IN = {  # H1 may open anything; from outside only ssh; the VPN reaches 172.16.5.0/24
    "name": "ssh-only-in",
    "ip_addresses": [H1[1]],
    "firewall_rules": [{"protocol": "any", "direction": "egress", "action": "allow"},
                       {"protocol": "tcp", "port": 22, "direction": "ingress", "action": "allow"}],
    "default_action": "deny",
}


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def underlay(make_bridge):
    """The local tunnel endpoint: LOCAL_IP on a bridge's LOCAL port, REMOTE_IP's MAC known."""
    bridge = make_bridge(ports=[1])
    run("ip", "addr", "add", f"{LOCAL_IP}/24", "dev", bridge.name)
    run("ip", "link", "set", bridge.name, "up")
    deadline = time.monotonic() + 10
    while f"198.18.72.0/24 dev {bridge.name}" not in run("ovs-appctl", "ovs/route/show"):
        assert time.monotonic() < deadline, "Open vSwitch did not learn the underlay route"
        time.sleep(0.05)
    run("ovs-appctl", "tnl/neigh/set", bridge.name, REMOTE_IP, REMOTE_MAC)
    # Encapsulated packets leave by port 1; what comes in there is for the endpoint.
    bridge.add_flows("in_port=LOCAL,actions=output:1\nin_port=1,actions=LOCAL\n")
    return bridge


@pytest.fixture(scope="module")
def ovsdb():
    switches = OvsdbSwitches(OvsdbClient())
    yield switches
    switches.client.close()


@pytest.fixture(scope="module", params=["vxlan", "gre", "geneve"])
def vpn(request, make_bridge, underlay, ovsdb):
    """H1 (port 1) with a personality whose VPN of this type reaches 172.16.5.0/24."""
    kind = request.param
    body = {**SSH_ONLY_IN, "vpn_tunnel_config": {"type": kind, "remote_ip": REMOTE_IP, "key": KEY,
                                                 "remote_prefixes": ["172.16.5.0/24"]}}
    bridge = make_bridge(ports=2)
    interface = Interface(bridge.dpid, H1[2], H1[0])
    policy = PersonalityPolicy.from_body("vpn", body, revision=1)
    port = tunnel_port(interface, policy.vpn)
    ofport = ovsdb.ensure_port(ovsdb.bridge(bridge.dpid, bridge.name),
                               PortSpec(port.name, port.type, port.options, port.external_ids))
    ctx = Context(router_mac=ROUTER_MAC, macs={H1[1]: H1[0], H2[1]: H2[0]},
                  tunnel_ports={port.name: ofport})
    zone = interface_zone(interface)
    flows = fabric_flows(bridge.dpid) + compile_personality(interface, policy, zone, ctx)
    bridge.add_flows(render_flows(flows))
    assert len(bridge.dump_flows()) == len(flows)
    return kind, ofport, Loaded(bridge, zone, interface)


def to_remote(dst_ip: str = REMOTE_HOST[1], proto: str = "tcp", dport: int = 443) -> str:
    mac, ip, port = H1
    l4 = f"tcp_src=40000,tcp_dst={dport}" if proto == "tcp" else "icmp_type=8,icmp_code=0"
    return (f"in_port={port},{proto},dl_src={mac},dl_dst={ROUTER_MAC},nw_src={ip},nw_dst={dst_ip},"
            f"nw_ttl=64,{l4}")


def from_tunnel(ofport: int, src_ip: str = REMOTE_HOST[1], dst_ip: str = H1[1],
                sport: int = 50000, dport: int = 22) -> str:
    return (f"in_port={ofport},tun_id={KEY:#x},tun_src={REMOTE_IP},tun_dst={LOCAL_IP},tcp,"
            f"dl_src={REMOTE_HOST[0]},dl_dst={ROUTER_MAC},nw_src={src_ip},nw_dst={dst_ip},"
            f"nw_ttl=64,tcp_src={sport},tcp_dst={dport}")


def pushed(t: CtTrace) -> str:
    """The tnl_push action of the last pass ('' if the packet was not encapsulated)."""
    m = re.search(r"tnl_push\(.*\)\),out_port\(\d+\)\)", t.passes[-1])
    return m.group(0) if m else ""


def test_traffic_to_a_remote_prefix_is_encapsulated_to_the_remote_endpoint(vpn):
    kind, ofport, loaded = vpn
    t = loaded.trace(to_remote(), "new,trk")
    push = pushed(t)
    assert push, t
    assert f"ipv4(src={LOCAL_IP},dst={REMOTE_IP}," in push and f"dst={REMOTE_MAC}" in push, push
    assert HEADERS[kind] in push, push
    # The inner frame is routed: router MAC both ways, TTL decremented, after the firewall
    # committed the connection (conntrack first, then out).
    assert t.tracked and "ct(commit,zone=" in t.passes[-1], t
    inner = t.final_flow
    assert f"dl_src={ROUTER_MAC}" in inner and f"dl_dst={ROUTER_MAC}" in inner, inner
    assert "nw_ttl=63" in inner, inner
    assert f"output:{ofport}" in t.text


def test_traffic_outside_the_remote_prefixes_does_not_take_the_tunnel(vpn):
    kind, ofport, loaded = vpn
    for dst in ("172.16.6.1", "198.51.100.1"):
        t = loaded.trace(to_remote(dst), "new,trk")
        assert not pushed(t) and f"output:{ofport}" not in t.text, t
    t = loaded.trace(f"in_port=1,tcp,dl_src={H1[0]},dl_dst={H2[0]},nw_src={H1[1]},nw_dst={H2[1]},"
                     "nw_ttl=64,tcp_src=40000,tcp_dst=22", "new,trk")
    assert not pushed(t) and t.out_ports == [H2[2]], t


def test_spoofed_traffic_never_reaches_the_tunnel(vpn):
    kind, ofport, loaded = vpn
    t = loaded.trace(to_remote().replace(f"nw_src={H1[1]}", "nw_src=10.0.1.77"), "new,trk")
    assert not pushed(t) and t.dropped, t


def test_replies_from_the_tunnel_reach_the_interface_through_its_firewall(vpn):
    kind, ofport, loaded = vpn
    t = loaded.trace(from_tunnel(ofport, sport=443, dport=40000), "est,rpl,trk")
    assert t.tracked and t.out_ports == [H1[2]], t
    assert f"dl_src={ROUTER_MAC}" in t.final_flow and f"dl_dst={H1[0]}" in t.final_flow, t
    assert "nw_ttl=63" in t.final_flow, t
    assert {60, 61, 62} <= set(t.tables), t


def test_new_connections_from_the_tunnel_obey_the_ingress_rules(vpn):
    kind, ofport, loaded = vpn
    allowed = loaded.trace(from_tunnel(ofport, dport=22), "new,trk")
    assert allowed.out_ports == [H1[2]] and allowed.committed, allowed
    denied = loaded.trace(from_tunnel(ofport, dport=80), "new,trk")
    assert denied.dropped, denied


def test_nothing_else_from_the_tunnel_gets_anywhere(vpn):
    kind, ofport, loaded = vpn
    for packet in (from_tunnel(ofport, src_ip="172.16.6.1"),      # outside the remote prefixes
                   from_tunnel(ofport, dst_ip=H2[1]),             # to another host of the hub
                   f"in_port={ofport},arp,dl_src={REMOTE_HOST[0]},dl_dst=ff:ff:ff:ff:ff:ff,"
                   f"arp_op=1,arp_spa={REMOTE_HOST[1]},arp_tpa={H1[1]}"):
        t = loaded.trace(packet, "est,rpl,trk")
        assert t.dropped and not any("userspace(" in p for p in t.passes), t


def test_the_underlay_decapsulates_for_the_tunnel_port(vpn, underlay):
    kind, ofport, loaded = vpn
    mac = open(f"/sys/class/net/{underlay.name}/address").read().strip()
    head = f"in_port=1,dl_src={REMOTE_MAC},dl_dst={mac},nw_src={REMOTE_IP},nw_dst={LOCAL_IP}"
    packet = {"vxlan": f"udp,{head},udp_src=5000,udp_dst=4789",
              "geneve": f"udp,{head},udp_src=5000,udp_dst=6081",
              "gre": f"ip,{head},nw_proto=47"}[kind]
    out = run("ovs-appctl", "ofproto/trace", underlay.name, packet)
    dp_port = next(int(d) for o, d in _dp_ports(loaded.bridge.name).items() if o == ofport)
    assert f"Datapath actions: tnl_pop({dp_port})" in out, out


def _dp_ports(bridge: str) -> dict[int, int]:
    """OpenFlow port -> datapath port of one bridge (`dpif/show`)."""
    out, mapping, inside = run("ovs-appctl", "dpif/show"), {}, False
    for line in out.splitlines():
        if re.match(r"^  \S+:$", line):
            inside = line.strip()[:-1] == bridge
        elif inside and (m := re.match(r"^\s+\S+ (\d+)/(\d+):", line)):
            mapping[int(m.group(1))] = int(m.group(2))
    return mapping
