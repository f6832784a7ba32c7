"""Shard services on a real bridge: the multipath, prefix and conntrack flows load, and
ofproto/trace follows them; the controller's pin (a packet-out committing the mark) takes
every later datagram of the flow to its resource in real conntrack.

Two resources (ports 1 and 2, leased 10.200.0.5 and .6) behind three services, and a
client `ext` (port 3):

    dns   udp 203.0.113.53:53    hashed over web-1, web-2
    web   tcp 203.0.113.80:80    hashed, and 198.51.100.0/25 routed to web-2
    game  udp 203.0.113.77:7777  pattern session=(\\w+): first datagrams to the controller
"""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_4

from controller.core.discovery import bootstrap_flows
from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.shard.services import (MARK_BITS, Service, ServiceNet, ServicesInput,
                                                compile_services, mark_of)
from controller.features.shard.translate import PUNT_METER, ResourceNet, ShardInput, compile_shards
from controller.pipeline import cookies, ofcodec, tables
from controller.pipeline.actions import Conntrack
from controller.pipeline.ofctl import render_action, render_flows
from controller.probes import udp_frame
from tests.trace.conftest import run
from tests.trace.ofsession import OFSession

pytestmark = pytest.mark.trace

RES1 = Host("02:00:0a:00:01:0a", ("10.0.1.10",), 0, 1)
RES2 = Host("02:00:0a:00:01:0b", ("10.0.1.11",), 0, 2)
EXT = Host("02:00:c6:33:64:01", ("198.51.100.1",), 0, 3)
ADDRESSES = {1: "10.200.0.5", 2: "10.200.0.6"}
DNS = Service("dns", "web", "203.0.113.53", "udp", 53, ("web-1", "web-2"), None, 600, 1)
WEB = Service("web", "web", "203.0.113.80", "tcp", 80, ("web-1", "web-2"), None, 600, 2)
GAME = Service("game", "web", "203.0.113.77", "udp", 7777, ("web-1", "web-2"),
               r"session=(\w+)", 600, 0)
NEW = ("--ct-next", "trk,new", "--ct-next", "trk,new")


def nets(dpid: int) -> tuple[ResourceNet, ResourceNet]:
    return tuple(ResourceNet(f"web-{p}", "web", dpid, p, h.mac, 0xA002 + p, f"203.0.113.{p}",
                             "10.0.1.254", 6699, ADDRESSES[p], (ADDRESSES[p],))
                 for p, h in ((1, RES1), (2, RES2)))


def load(bridge) -> None:
    hosts = tuple(Host(h.mac, h.ips, bridge.dpid, h.port) for h in (RES1, RES2, EXT))
    subnets = tuple(Subnet.from_body(i, b) for i, b in (
        ("seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}),
        ("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"})))
    switches = frozenset({bridge.dpid})
    fabric = compile_fabric(FabricInput(switches, frozenset(), hosts, subnets, ROUTER_MAC))
    resources = nets(bridge.dpid)
    shard = compile_shards(ShardInput(switches, ROUTER_MAC,
                                      (("web", IPv4Network("10.200.0.0/16")),), resources))
    services = compile_services(ServicesInput(switches, ROUTER_MAC, {}, (
        ServiceNet(DNS, resources), ServiceNet(GAME, resources),
        ServiceNet(WEB, resources, ((IPv4Network("198.51.100.0/25"), 1),)))))
    bridge.ofctl("add-meter", bridge.name, f"meter={PUNT_METER},kbps,band=type=drop,rate=512")
    bridge.add_flows(render_flows([*bootstrap_flows(), *fabric[bridge.dpid],
                                   *shard[bridge.dpid], *services[bridge.dpid]]))


def from_ext(dst: str, port: int, sport: int, proto: str = "udp", src: str = "198.51.100.1",
             extra: str = "") -> str:
    return (f"in_port=3,{proto},dl_src={EXT.mac},dl_dst={ROUTER_MAC},nw_src={src},"
            f"nw_dst={dst},nw_ttl=64,{proto}_src={sport},{proto}_dst={port}" + (f",{extra}" if extra else ""))


def last_actions(t) -> str:
    """The datapath actions of the last recirculation."""
    return [l.split(":", 1)[1] for l in t.text.splitlines()
            if l.startswith("Datapath actions:")][-1].strip()


def out_ports(t) -> list[int]:
    """The ports the packet finally leaves by."""
    return [t.dp_to_ofport.get(int(a), -int(a)) for a in last_actions(t).split(",") if a.isdigit()]


@pytest.fixture(scope="module")
def bridge(make_bridge):
    b = make_bridge(ports=3)
    load(b)
    yield b
    for zone in (GAME.zone, 0xA003, 0xA004):    # what the packet-outs committed
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}", check=False)


def test_the_multipath_flows_are_accepted_as_written(bridge):
    route = [l for l in bridge.dump_flows() if "table=40" in l and "multipath" in l]
    assert len(route) == 2, "\n".join(bridge.dump_flows())    # dns and web
    assert all("multipath(symmetric_l3l4+udp,0,modulo_n,2,0,NXM_NX_REG1[0..15])" in l
               for l in route), route


def test_two_client_ports_land_on_different_resources_and_each_is_translated(bridge):
    landed: dict[int, set[int]] = {}
    for sport in range(40000, 40020):
        t = bridge.trace(from_ext(DNS.external_ip, 53, sport), *NEW)
        (port,) = out_ports(t)
        assert f"nat(dst={ADDRESSES[port]})" in t.text, t.text
        landed.setdefault(port, set()).add(sport)
    assert set(landed) == {1, 2}, landed
    # Flow-consistent: the same client port lands on the same resource every time.
    for port, sports in landed.items():
        t = bridge.trace(from_ext(DNS.external_ip, 53, min(sports)), *NEW)
        assert out_ports(t) == [port], t.text


def test_a_tcp_client_prefix_route_wins_over_the_hash(bridge):
    routed = {out_ports(bridge.trace(from_ext(WEB.external_ip, 80, s, "tcp",
                                               extra="tcp_flags=0x002"), *NEW))[0]
              for s in range(40000, 40010)}
    assert routed == {2}
    hashed = {out_ports(bridge.trace(from_ext(WEB.external_ip, 80, s, "tcp", "198.51.100.200",
                                              "tcp_flags=0x002"), *NEW))[0]
              for s in range(40000, 40020)}
    assert hashed == {1, 2}


def test_the_first_datagram_of_a_patterned_flow_goes_to_the_controller(bridge):
    t = bridge.trace(from_ext(GAME.external_ip, 7777, 40000), "--ct-next", "trk,new")
    assert t.datapath_actions.startswith(f"ct(zone={GAME.zone})"), t.text
    assert f"Resuming from table {tables.SHARD_SERVICE.id}" in t.text, t.text
    assert last_actions(t).startswith("meter(") and "controller(" in last_actions(t), t.text


def n_packets(bridge, *parts: str) -> int:
    """Packets counted by the one flow whose dump line holds every part."""
    lines = [l for l in bridge.ofctl("dump-flows", bridge.name).splitlines()
             if all(p in l for p in parts)]
    assert len(lines) == 1, lines
    return int(lines[0].split("n_packets=")[1].split(",")[0])


def send(bridge, frame: bytes, actions: str) -> None:
    bridge.ofctl("packet-out", bridge.name, f"in_port=3 packet={frame.hex()} actions={actions}")


def test_the_controllers_pin_takes_this_and_every_later_datagram_to_its_resource(bridge):
    frame = udp_frame(EXT.mac, ROUTER_MAC, "198.51.100.1", GAME.external_ip, 41000, 7777,
                      b"hello session=alice")
    pin = Conntrack(commit=True, zone=GAME.zone, mark=mark_of(1), mark_mask=MARK_BITS.mask,
                    table=tables.SHARD_SERVICE.id)
    marked = (" table=90,", "ct_mark=0x20000/0xf0000")        # to web-2
    translated = (" table=93,", f"dl_dst={RES2.mac}")          # the first: NATed, then out
    # The later ones: one-way UDP stays +new in web-2's zone, already NATed by ct(nat);
    # they are delivered and record their connection (so its address does not drain).
    known = (" table=92,", "priority=201,ct_state=+new+trk,udp", f"nw_dst={ADDRESSES[2]}",
             "learn(")
    punted = (" table=90,", "ct_state=+new+trk", "CONTROLLER")
    counted = (marked, translated, known, punted)
    before = [n_packets(bridge, *p) for p in counted]
    send(bridge, frame, render_action(pin))                   # what the router answers
    for _ in range(2):
        send(bridge, frame, "resubmit(,0)")                   # the flow's next datagrams
    after = [n_packets(bridge, *p) for p in counted]
    assert [a - b for a, b in zip(after, before)] == [3, 1, 2, 0], (before, after)


@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_service_flows_read_back_exactly_as_written(make_bridge, version):
    """What the reconciler sees: flows written by the codec (multipath, conntrack with a
    zone and a masked mark) decode back from the switch's flow stats to the same FlowSpecs."""
    b = make_bridge(ports=3)
    b.ofctl("add-meter", b.name, f"meter={PUNT_METER},kbps,band=type=drop,rate=512")
    resources = nets(b.dpid)
    flows = compile_services(ServicesInput(frozenset({b.dpid}), ROUTER_MAC, {}, (
        ServiceNet(DNS, resources), ServiceNet(GAME, resources),
        ServiceNet(WEB, resources, ((IPv4Network("198.51.100.0/25"), 1),)))))[b.dpid]
    with OFSession(b.name, version) as of:
        of.barrier([ofcodec.flow_add(of.dp, f) for f in flows])
        back = {f.key: f for f in (ofcodec.decode_flow(of.dp, s) for s in
                                   of.flow_stats(*cookies.hub_mask()))}
    want = {f.key: f for f in flows}
    assert set(back) == set(want)
    for key, spec in want.items():
        assert back[key] == spec, (spec, back[key])
