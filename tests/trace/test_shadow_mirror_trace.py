"""Shadow mirroring on a real bridge: the fabric plus `compile_mirror`'s flows for one
production host, traced with ofproto/trace and driven with real packet-outs (real
conntrack, real multipath), then counted with dump-flows and dump-conntrack.

    port 1  PROD    10.0.1.10, the appliance "web" (tcp 80)
    port 2  CLIENT  198.51.100.1, routed to PROD through the router MAC
    port 3  SH1     a shadow instance (ordinal 0), gateway 10.0.1.254
    port 4  SH2     a second instance (ordinal 1), for the split

Packets are sent over one OpenFlow session as packet-outs to the pipeline (output
TABLE, from the port they would come in by), thousands a second.
"""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_4
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, raw

from controller.core.hub import ROUTER_MAC
from controller.core.topology import Host, Subnet
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                                     compile_personality, interface_zone)
from controller.features.shadow.mirror import (AGENT_METER, ApplianceNet, Block, Endpoint,
                                               InstanceNet, MirrorInput, ServicePort,
                                               compile_mirror, instance_cookie)
from controller.features.shadow.mirror_net import ORDINAL_MASK, SAMPLED
from controller.pipeline import cookies, ofcodec, tables
from controller.pipeline.cookies import Feature
from controller.pipeline.ofctl import render_flows
from tests.trace.conftest import run, split_top
from tests.trace.ofsession import OFSession

pytestmark = pytest.mark.trace

PROD = Host("02:00:0a:00:01:0a", ("10.0.1.10",), 0, 1)
CLIENT = Host("02:00:c6:33:64:01", ("198.51.100.1",), 0, 2)
SH1 = Host("02:00:0a:00:01:1f", ("10.0.1.31",), 0, 3)
SH2 = Host("02:00:0a:00:01:20", ("10.0.1.32",), 0, 4)
GATEWAY, AGENT_PORT = "10.0.1.254", 6700
SUBNETS = (("seg1", {"cidr": "10.0.1.0/24", "gateway": GATEWAY}),
           ("ext", {"cidr": "198.51.100.0/24", "gateway": "198.51.100.254"}))
SHADOW = cookies.feature_mask(Feature.SHADOW)
INDEX, SNAPLEN = 3, 128
TUPLES = range(20000, 22000)          # client source ports: 2,000 connections


def instances(dpid: int, n: int) -> tuple[InstanceNet, ...]:
    return tuple(InstanceNet(f"slot-{k + 1}", dpid, h.port, h.mac, k, GATEWAY)
                 for k, h in enumerate((SH1, SH2)[:n]))


def web(dpid: int, permille: int = 100, n: int = 1, **kw) -> ApplianceNet:
    return ApplianceNet("web", INDEX, (Endpoint(dpid, PROD.port, PROD.mac),),
                        (ServicePort("tcp", 80),), permille, instances(dpid, n), SNAPLEN, **kw)


def fabric(dpid: int):
    hosts = tuple(replace(h, dpid=dpid) for h in (PROD, CLIENT, SH1, SH2))
    subnets = tuple(Subnet.from_body(i, b) for i, b in SUBNETS)
    return compile_fabric(FabricInput(frozenset({dpid}), frozenset(), hosts, subnets,
                                      ROUTER_MAC))[dpid]


def mirror(dpid: int, *apps: ApplianceNet):
    return compile_mirror(MirrorInput(frozenset({dpid}), ROUTER_MAC, {}, apps, AGENT_PORT))[dpid]


class Loaded:
    """A bridge with the fabric, whose mirror flows can be replaced, and a session to it."""

    def __init__(self, bridge, of: OFSession) -> None:
        self.bridge, self.of, self.zone = bridge, of, 0xC000 + INDEX
        bridge.ofctl("add-meter", bridge.name, f"meter={AGENT_METER},kbps,band=type=drop,rate=256")
        bridge.add_flows(render_flows(fabric(bridge.dpid)))

    def load(self, *apps: ApplianceNet, extra=()) -> None:
        self.bridge.ofctl("del-flows", self.bridge.name, f"cookie={SHADOW.cookie:#x}/{SHADOW.mask:#x}")
        self.bridge.add_flows(render_flows([*mirror(self.bridge.dpid, *apps), *extra]))
        self.flush()

    def flush(self) -> None:
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={self.zone}")

    def send(self, frames: list[tuple[int, bytes]]) -> None:
        """Packet-outs into the pipeline, each from its port, then a barrier."""
        p, o = self.of.parser, self.of.ofp
        self.of.barrier([p.OFPPacketOut(self.of.dp, o.OFP_NO_BUFFER, port,
                                        [p.OFPActionOutput(o.OFPP_TABLE)], frame)
                         for port, frame in frames])

    def counts(self) -> dict[tuple[int, int, int, str], int]:
        """n_packets of every flow, by (table, priority, cookie, match text)."""
        out = {}
        for line in self.bridge.ofctl("dump-flows", self.bridge.name).splitlines():
            m = re.search(r"cookie=(0x[0-9a-f]+), .*table=(\d+), n_packets=(\d+), .*"
                          r"priority=(\d+),?(\S*) actions", line)
            if m:
                out[(int(m[2]), int(m[4]), int(m[1], 16), m[5])] = int(m[3])
        return out

    def packets(self, table: int, cookie: int) -> int:
        return sum(n for (t, _, c, _), n in self.counts().items() if t == table and c == cookie)

    def decided(self) -> dict[int, int]:
        """Client port -> ct_mark of its connection in the appliance's zone."""
        text = run("ovs-appctl", "dpctl/dump-conntrack", f"zone={self.zone}")
        return {int(m[1]): int(m[2]) for m in re.finditer(
            r"orig=\(src=198\.51\.100\.1,dst=10\.0\.1\.10,sport=(\d+),dport=80\).*?mark=(\d+)",
            text)}

    def trace(self, packet: str, *ct_next: str) -> list[str]:
        """The datapath actions of every pass of ofproto/trace (conntrack answering ct_next)."""
        args = [a for state in ct_next for a in ("--ct-next", state)]
        text = run("ovs-appctl", "ofproto/trace", self.bridge.name, packet, *args)
        return [l.split(":", 1)[1].strip() for l in text.splitlines()
                if l.startswith("Datapath actions:")]

    def dp(self, ofport: int) -> str:
        return str({v: k for k, v in self.bridge.dp_ports().items()}[ofport])


@pytest.fixture(scope="module")
def loaded(make_bridge):
    bridge = make_bridge(ports=4)
    with OFSession(bridge.name, ofproto_v1_4.OFP_VERSION) as of:
        lab = Loaded(bridge, of)
        yield lab
        lab.flush()


CLIENT_ISN, PROD_ISN = 1000, 5000     # conntrack checks sequence numbers: keep them right


def syn(sport: int, flags: str = "S", payload: bytes = b"", sent: int = 0,
        acked: int = 0) -> tuple[int, bytes]:
    """From the client: `sent` bytes after its SYN, `acked` of production's after its SYN."""
    seq = CLIENT_ISN + (1 if flags != "S" else 0) + sent
    ack = PROD_ISN + 1 + acked if "A" in flags else 0
    return CLIENT.port, raw(Ether(src=CLIENT.mac, dst=ROUTER_MAC) / IP(
        src=CLIENT.ips[0], dst=PROD.ips[0]) / TCP(sport=sport, dport=80, flags=flags, seq=seq,
                                                  ack=ack) / payload)


def answer(sport: int, flags: str = "SA", payload: bytes = b"", sent: int = 0,
           acked: int = 0) -> tuple[int, bytes]:
    """From production, likewise."""
    seq = PROD_ISN + (1 if flags != "SA" else 0) + sent
    return PROD.port, raw(Ether(src=PROD.mac, dst=ROUTER_MAC) / IP(
        src=PROD.ips[0], dst=CLIENT.ips[0]) / TCP(sport=80, dport=sport, flags=flags, seq=seq,
                                                  ack=CLIENT_ISN + 1 + acked) / payload)


def to_prod(sport: int) -> str:
    return (f"in_port={CLIENT.port},tcp,dl_src={CLIENT.mac},dl_dst={ROUTER_MAC},"
            f"nw_src={CLIENT.ips[0]},nw_dst={PROD.ips[0]},nw_ttl=64,tcp_src={sport},tcp_dst=80,"
            "tcp_flags=0x002")


def sampled_and_not(lab: Loaded) -> tuple[int, int]:
    """A client port whose connection the hash samples (at the loaded permille), one it does
    not: from the real packets' decisions."""
    lab.flush()
    lab.send([syn(p) for p in range(30000, 30100)])
    marks = lab.decided()
    lab.flush()
    return (next(p for p, m in sorted(marks.items()) if m & SAMPLED),
            next(p for p, m in sorted(marks.items()) if not m & SAMPLED))


# ------------------------------------------------------------------ (a), (b): one connection
def test_the_first_packet_goes_to_production_and_its_copy_through_the_decision(loaded):
    loaded.load(web(loaded.bridge.dpid))
    yes, no = sampled_and_not(loaded)
    prod, sh1 = loaded.dp(PROD.port), loaded.dp(SH1.port)
    for sport, copied in ((yes, True), (no, False)):
        first, copy = loaded.trace(to_prod(sport), "trk,new")
        # the packet: out to production, as without a mirror; its copy recirculated
        assert split_top(first)[-1] == prod, first
        assert f"clone(ct(zone={loaded.zone}),recirc(" in first, first
        commit = f"ct(commit,zone={loaded.zone},mark="
        assert copy.startswith(commit), copy
        if copied:
            assert copy.endswith(f"trunc({SNAPLEN}),set(eth(dst={SH1.mac})),{sh1}"), copy
        else:
            assert sh1 not in split_top(copy)[1:] and "trunc(" not in copy, copy


def test_every_packet_of_a_sampled_connection_both_ways_is_copied_and_none_of_another(loaded):
    loaded.load(web(loaded.bridge.dpid))
    yes, no = sampled_and_not(loaded)
    c = instance_cookie("web", "slot-1")
    to_client = (tables.L2.id, 100, cookies.make(Feature.FABRIC, f"host:{CLIENT.mac}"),
                 f"dl_dst={CLIENT.mac}")
    for sport, copied in ((yes, True), (no, False)):
        before = loaded.counts()
        loaded.send([syn(sport), answer(sport), syn(sport, "A"),
                     syn(sport, "PA", b"GET /"), answer(sport, "PA", b"200 OK", acked=5),
                     answer(sport, "FA", sent=6, acked=5)])
        after = loaded.counts()
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        copies = {t: sum(n for (tt, _, cc, _), n in delta.items() if tt == t and cc == c)
                  for t in (tables.SHADOW_TO.id, tables.SHADOW_TO_DECIDE.id,
                            tables.SHADOW_FROM.id, tables.SHADOW_FROM_DECIDE.id)}
        # to production: the SYN decided (and copied) in shadow_to_decide, 2 later ones
        # copied in shadow_to; from it: all 3 copied in shadow_from
        assert copies == ({80: 2, 81: 1, 7: 3, 8: 0} if copied else {80: 0, 81: 0, 7: 0, 8: 0}), \
            (sport, delta)
        assert delta[to_client] == 3, delta   # production's answers went on to the client
    loaded.flush()


# ------------------------------------------------------------------ (c): many connections
def shares(lab: Loaded, app: ApplianceNet) -> dict[int, int]:
    """Client port -> instance ordinal, for the sampled ones of 2,000 real connections."""
    lab.load(app)
    lab.send([syn(p) for p in TUPLES])
    marks = lab.decided()
    assert set(marks) == set(TUPLES), "every connection was decided"
    return {p: (m & ORDINAL_MASK) >> 9 for p, m in marks.items() if m & SAMPLED}


def test_the_sampled_share_is_the_percentage_nested_and_split_in_whole_connections(loaded):
    dpid = loaded.bridge.dpid
    ten = shares(loaded, web(dpid, 100, n=2))
    loaded.flush()
    five = shares(loaded, web(dpid, 50, n=2))
    print(f"sampled: {len(ten) / len(TUPLES):.2%} at 10%, {len(five) / len(TUPLES):.2%} at 5%;"
          f" instance 0 got {sum(o == 0 for o in ten.values())} of {len(ten)}")
    assert abs(len(ten) / len(TUPLES) - 0.10) <= 0.01, len(ten)
    assert abs(len(five) / len(TUPLES) - 0.05) <= 0.01, len(five)
    assert set(five) <= set(ten), "a connection sampled at 5% is sampled at 10%"
    assert all(five[p] == ten[p] for p in five), "the instance does not depend on the share"
    split = [sum(o == k for o in ten.values()) for k in (0, 1)]
    assert min(split) >= 0.35 * len(ten), split
    # Both directions: every answer of a connection sampled at 5% is copied to the instance
    # its mark names, none of the others' (2,000 answers, counted per instance's cookie).
    cookies_ = {k: instance_cookie("web", f"slot-{k + 1}") for k in (0, 1)}
    before = {k: loaded.packets(tables.SHADOW_FROM.id, c) for k, c in cookies_.items()}
    loaded.send([answer(p) for p in TUPLES])
    got = {k: loaded.packets(tables.SHADOW_FROM.id, c) - before[k] for k, c in cookies_.items()}
    assert got == {k: sum(o == k for o in five.values()) for k in (0, 1)}, got
    # and one by one, for a few: exactly its instance's copy flow counts it
    for p in sorted(five)[:6]:
        before = {k: loaded.packets(tables.SHADOW_FROM.id, c) for k, c in cookies_.items()}
        loaded.send([answer(p, "A", b"x")])
        after = {k: loaded.packets(tables.SHADOW_FROM.id, c) for k, c in cookies_.items()}
        assert {k: after[k] - before[k] for k in after} == {k: int(k == five[p]) for k in after}
    loaded.flush()


def test_a_held_source_is_sampled_whole_and_a_blocked_one_never_reaches_production(loaded):
    dpid = loaded.bridge.dpid
    block = Block("198.51.100.66", cookies.make(Feature.SHADOW, "finding:f-1"))
    loaded.load(web(dpid, 0, held_sources=(CLIENT.ips[0],), blocks=(block,)))
    loaded.send([syn(p) for p in range(40000, 40100)])
    marks = loaded.decided()
    assert len(marks) == 100 and all(m & SAMPLED for m in marks.values())
    blocked = (f"in_port={CLIENT.port},tcp,dl_src={CLIENT.mac},dl_dst={ROUTER_MAC},"
               f"nw_src=198.51.100.66,nw_dst={PROD.ips[0]},nw_ttl=64,tcp_src=1000,tcp_dst=80")
    assert loaded.trace(blocked, "trk,new") == ["drop"]
    loaded.flush()


# ------------------------------------------------------------------ (d): the shadow's port
@pytest.mark.parametrize("packet, fate", [
    ("tcp,nw_src=10.0.1.10,nw_dst=198.51.100.1,tcp_src=80,tcp_dst=20000,tcp_flags=0x004", "drop"),
    ("tcp,nw_src=10.0.1.10,nw_dst=198.51.100.1,tcp_src=80,tcp_dst=20000,tcp_flags=0x012",
     "drop"),
    ("icmp,nw_src=10.0.1.10,nw_dst=198.51.100.1,icmp_type=3,icmp_code=3", "drop"),
    (f"udp,nw_src=10.0.1.10,nw_dst=198.51.100.1,udp_src=5000,udp_dst={AGENT_PORT}", "drop"),
    (f"udp,nw_src=10.0.1.10,nw_dst={GATEWAY},udp_src=5000,udp_dst=53", "drop"),
    ("arp,arp_op=1,arp_spa=10.0.1.10,arp_tpa=10.0.1.20,dl_dst=ff:ff:ff:ff:ff:ff", "drop"),
    ("arp,arp_op=2,arp_spa=10.0.1.10,arp_tpa=10.0.1.20,dl_dst=ff:ff:ff:ff:ff:ff", "drop"),
    (f"udp,nw_src=10.0.1.10,nw_dst={GATEWAY},udp_src=5000,udp_dst={AGENT_PORT}", "punt"),
    (f"arp,arp_op=1,arp_spa=10.0.1.10,arp_tpa={GATEWAY},dl_dst=ff:ff:ff:ff:ff:ff", "answer"),
])
def test_nothing_leaves_a_shadow_but_its_agents_datagrams_to_the_gateway(loaded, packet, fate):
    loaded.load(web(loaded.bridge.dpid))
    eth = f"in_port={SH1.port},dl_src={SH1.mac}" + ("" if "dl_dst" in packet
                                                     else f",dl_dst={ROUTER_MAC}")
    (actions,) = loaded.trace(f"{eth},{packet}")
    if fate == "drop":
        assert actions == "drop", actions
    elif fate == "punt":
        assert re.fullmatch(r"meter\(\d+\),userspace\(pid=\d+,controller\(.*\)\)", actions), \
            actions
    else:
        assert actions.endswith(f",{loaded.dp(SH1.port)}") and "arp(" in actions, actions


def test_the_guard_counts_what_a_shadow_sent(loaded):
    loaded.load(web(loaded.bridge.dpid))
    rst = (SH1.port, raw(Ether(src=SH1.mac, dst=ROUTER_MAC) / IP(src=PROD.ips[0],
                                                                 dst=CLIENT.ips[0])
                         / TCP(sport=80, dport=20000, flags="R")))
    arp = (SH1.port, raw(Ether(src=SH1.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=SH1.mac, psrc=PROD.ips[0], pdst=CLIENT.ips[0])))
    ping = (SH1.port, raw(Ether(src=SH1.mac, dst=ROUTER_MAC) / IP(src=PROD.ips[0],
                                                                  dst=CLIENT.ips[0]) / ICMP()))
    agent = (SH1.port, raw(Ether(src=SH1.mac, dst=ROUTER_MAC) / IP(src=PROD.ips[0], dst=GATEWAY)
                           / UDP(sport=5000, dport=AGENT_PORT) / b"SA"))
    guard = cookies.make(Feature.SHADOW, "guard:slot-1")
    before = loaded.counts()
    loaded.send([rst, arp, ping, agent])
    after = loaded.counts()
    drop = next(k for k in after if k[:3] == (0, 65150, guard))
    assert after[drop] - before.get(drop, 0) == 3
    punt = next(k for k in after if k[0] == tables.SHADOW_AGENT.id and "udp" in k[3])
    assert after[punt] - before.get(punt, 0) == 1


# ------------------------------------------------------------------ a personality's path
def test_a_personality_interface_keeps_its_firewall_and_the_copy_still_goes(loaded):
    dpid = loaded.bridge.dpid
    interface = Interface(dpid, PROD.port, PROD.mac)
    zone = interface_zone(interface, 0)
    policy = PersonalityPolicy.from_body("locked", {
        "name": "locked", "ip_addresses": [PROD.ips[0]], "default_action": "deny",
        "firewall_rules": [{"protocol": "tcp", "port": 80, "direction": "ingress",
                            "action": "allow"}]})
    personality = compile_personality(interface, policy, zone, Context(router_mac=ROUTER_MAC))
    app = web(dpid, 1000)
    app = replace(app, production=(Endpoint(dpid, PROD.port, PROD.mac,
                                            tables.PERSONALITY_EGRESS.id,
                                            tables.PERSONALITY_INGRESS.id),))
    loaded.load(app, extra=personality)
    ct = re.compile(rf"ct\((commit,)?zone={zone}\b")
    try:
        passes = loaded.trace(to_prod(20000), "trk,new", "trk,new")
        text = " | ".join(passes)
        assert ct.search(passes[0]) and f"clone(ct(zone={loaded.zone})" in passes[0], text
        # the personality's pass: committed in its own zone, out to production
        fw = next(p for p in passes[1:] if ct.search(p))
        assert fw.startswith("ct(commit,") and split_top(fw)[-1] == loaded.dp(PROD.port), text
        copy = next(p for p in passes[1:] if f"zone={loaded.zone}," in p)
        assert copy.endswith(f",{loaded.dp(SH1.port)}"), text
        # what production sends still goes through its personality's egress tables
        out = loaded.trace(f"in_port={PROD.port},tcp,dl_src={PROD.mac},dl_dst={ROUTER_MAC},"
                           f"nw_src={PROD.ips[0]},nw_dst={CLIENT.ips[0]},nw_ttl=64,tcp_src=80,"
                           "tcp_dst=20000", "trk,est,rpl", "trk,est,rpl")
        assert ct.search(out[0]) and f"clone(ct(zone={loaded.zone})" in out[0], out
    finally:
        mask = cookies.feature_mask(Feature.PERSONALITY)
        loaded.bridge.ofctl("del-flows", loaded.bridge.name, f"cookie={mask.cookie:#x}/{mask.mask:#x}")
        run("ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}")


# ------------------------------------------------------------------ (e): read back
@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_mirror_flows_read_back_exactly_as_written(make_bridge, version):
    """What the reconciler sees: clone with a nested ct, truncated outputs, two multipaths,
    masked reg0 and ct_mark matches, tcp_flags, a metered punt and the guard's ARP answer
    decode back from the switch's flow stats to the same FlowSpecs."""
    b = make_bridge(ports=4)
    b.ofctl("add-meter", b.name, f"meter={AGENT_METER},kbps,band=type=drop,rate=256")
    block = Block("198.51.100.66", cookies.make(Feature.SHADOW, "finding:f-1"))
    app = web(b.dpid, 333, n=2, held_sources=("198.51.100.7",), blocks=(block,))
    personal = replace(app, id="db", index=4, snaplen=None, blocks=(), held_sources=(),
                       production=(Endpoint(b.dpid, 9, "02:00:0a:00:01:09",
                                            tables.PERSONALITY_EGRESS.id,
                                            tables.PERSONALITY_INGRESS.id),),
                       instances=(InstanceNet("slot-9", b.dpid, 5, "02:00:0a:00:01:2f", 0,
                                              GATEWAY),))
    flows = mirror(b.dpid, app, personal)
    with OFSession(b.name, version) as of:
        of.barrier([ofcodec.flow_add(of.dp, f) for f in flows])
        back = {f.key: f for f in (ofcodec.decode_flow(of.dp, s) for s in
                                   of.flow_stats(*cookies.hub_mask()))}
    want = {f.key: f for f in flows}
    assert set(back) == set(want)
    for key, spec in want.items():
        assert back[key] == spec, (spec, back[key])
