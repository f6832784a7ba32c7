"""The direct FlowMod/BundleAdd encoder of ofcodec, byte for byte against os-ken.

The reference is what the hub sent before the direct encoder existed: the
OFPFlowMod of `ofcodec.flow_add` / `ofcodec.flow_delete`, on OpenFlow 1.4
wrapped in an OFPBundleAddMsg, with the same xids, serialized by os-ken.
"""
from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4, ofproto_v1_5

from apps.channel import OsKenChannel
from controller.compile.fabric import FabricInput, compile_fabric
from controller.pipeline import cookies, ofcodec, wire
from controller.pipeline.actions import (CONTROLLER, IN_PORT, LOCAL, TABLE, Conntrack, DecTtl,
                                         Learn, LearnMatch, Move, Nat, Opaque, Output, SetField)
from controller.pipeline.flowspec import FlowSpec, flow
from controller.reconcile import ApplyError, FlowDiff
from controller.topology import Host, Link, Subnet

ROUTER = "02:b5:00:00:00:01"
XID = 0x80012345
BUNDLE_ID = 0x80012300
BUNDLE_FLAGS = 3  # ORDERED | ATOMIC
COOKIE = cookies.make(cookies.Feature.POLICY, "fast", 7)
VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]


@pytest.fixture(params=VERSIONS, ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


# ------------------------------------------------------------------ reference
def ref_flow_mod(dp, spec: FlowSpec, xid: int, delete: bool = False) -> bytes:
    msg = (ofcodec.flow_delete if delete else ofcodec.flow_add)(dp, spec)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def ref_bundle_add(dp, bundle_id: int, flags: int, spec: FlowSpec, xid: int,
                   delete: bool = False) -> bytes:
    mod = (ofcodec.flow_delete if delete else ofcodec.flow_add)(dp, spec)
    msg = dp.ofproto_parser.OFPBundleAddMsg(dp, bundle_id, flags, mod, [])
    msg.set_xid(xid)
    mod.xid = xid
    msg.serialize()
    return bytes(msg.buf)


def check(dp, spec: FlowSpec, fast: bool = True) -> None:
    """Fast (or, with fast=False, fallback) encoding equals os-ken's, add and delete."""
    for delete in (False, True):
        body = wire.fast_flow_mod_body(dp, spec, delete)
        assert (body is not None) == fast, (spec, delete)
        got = wire.flow_mod_wire(dp, spec, XID, delete)
        assert got == ref_flow_mod(dp, spec, XID, delete), (spec, delete)
        if fast:
            assert got[8:] == body
        if dp.ofproto.OFP_VERSION >= ofproto_v1_4.OFP_VERSION:
            got = wire.bundle_add_wire(dp, BUNDLE_ID, BUNDLE_FLAGS, spec, XID, delete)
            assert got == ref_bundle_add(dp, BUNDLE_ID, BUNDLE_FLAGS, spec, XID, delete), \
                (spec, delete)


# --------------------------------------------------------- compiled fabric
def fabric_flows() -> list[FlowSpec]:
    """A 3-switch fabric (core + 2 leaves) with hosts in two subnets."""
    subnets = (Subnet.from_body("blue", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}, 3),
               Subnet.from_body("red", {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"}),
               Subnet.from_body("green", {"cidr": "192.168.7.0/24",
                                          "gateway": "192.168.7.254"}, 65537))
    hosts = (Host("00:00:00:00:01:0a", ("10.0.1.10",), 2, 3),
             Host("00:00:00:00:02:0b", ("10.0.2.11", "10.0.2.12"), 3, 4),
             Host("0a:bc:de:f0:12:34", ("192.168.7.1",), 1, 7),
             Host("02:00:00:00:01:0c", ("10.0.1.12",), 2, 65000))
    links = frozenset({Link.of(1, 1, 2, 1), Link.of(1, 2, 3, 1), Link.of(2, 9, 3, 9)})
    compiled = compile_fabric(FabricInput(frozenset({1, 2, 3}), links, hosts, subnets, ROUTER))
    assert set(compiled) == {1, 2, 3}
    return [f for dpid in sorted(compiled) for f in compiled[dpid]]


def test_every_compiled_flow_encodes_as_os_ken_does(dp):
    flows = fabric_flows()
    assert len(flows) >= 90
    assert {type(a) for f in flows for a in f.actions} == {Output, SetField, Move, DecTtl}
    assert any(f.goto is not None and f.actions for f in flows)
    for spec in flows:
        check(dp, spec)


# --------------------------------------------------------- synthetic flows
MATCHES = [
    {},
    {"in_port": 1},
    {"in_port": 0xFFFFFF00},
    {"metadata": 0},
    {"metadata": 0xFEDCBA9876543210},
    {"metadata": (0x1234_0000_0000_5678, 0xFFFF_0000_0000_00F0)},  # value & mask on the wire
    {"eth_dst": "00:11:22:33:44:55"},
    {"eth_src": "FF:ee:Dd:cc:BB:aa"},  # case is not normalized by a raw FlowSpec
    {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
    {"eth_src": ("02:13:57:9b:df:ff", "ff:ff:ff:00:00:00")},  # host bits masked off
    {"eth_type": 0x0800}, {"eth_type": 0x88CC}, {"eth_type": 0xFFFF},
    {"vlan_vid": 0x1000 | 42}, {"vlan_vid": 0}, {"vlan_vid": (0x1000, 0x1000)},
    {"eth_type": 0x0800, "ip_proto": 6, "tcp_src": 1234, "tcp_dst": 80},
    {"eth_type": 0x0800, "ip_proto": 17, "udp_src": 0, "udp_dst": 65535},
    {"eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0},
    {"eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 3, "icmpv4_code": 255},
    {"eth_type": 0x0800, "ipv4_src": "10.0.0.1", "ipv4_dst": "255.255.255.255"},
    {"eth_type": 0x0800, "ipv4_dst": "0.0.0.0"},
    {"eth_type": 0x0800, "ipv4_dst": "10.9.0.0/16"},
    {"eth_type": 0x0800, "ipv4_dst": "10.9.8.7/16"},  # host bits masked off
    {"eth_type": 0x0800, "ipv4_src": "10.9.8.7/32"},  # still a (full) mask on the wire
    {"eth_type": 0x0800, "ipv4_src": "10.9.8.7/0"},
    {"eth_type": 0x0800, "ipv4_src": "172.16.5.4/12", "ipv4_dst": "192.168.1.0/24"},
    {"eth_type": 0x0800, "ipv4_dst": ("10.1.2.0", "255.255.255.0")},
    {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": "10.0.1.1"},
    {"eth_type": 0x0806, "arp_op": 2, "arp_spa": "10.0.1.10", "arp_tpa": ("10.0.0.0", "255.0.0.0")},
    {"eth_type": 0x0806, "arp_spa": "10.0.0.0/8"},
    {"eth_type": 0x0806, "arp_sha": "00:00:00:00:01:0a", "arp_tha": "00:00:00:00:00:00"},
    {"eth_type": 0x0806, "arp_sha": ("00:00:00:00:01:0a", "ff:ff:ff:ff:ff:00"),
     "arp_tha": ("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:00")},
    # every field at once (os-ken orders them by OXM type)
    {"in_port": 3, "metadata": (5, 0xFF), "eth_dst": "02:00:00:00:00:02",
     "eth_src": ("02:00:00:00:00:00", "ff:ff:00:00:00:00"), "eth_type": 0x0800,
     "vlan_vid": 0x1005, "ip_proto": 17, "ipv4_src": "10.0.0.0/8", "ipv4_dst": "10.1.1.1",
     "udp_src": 68, "udp_dst": 67},
]

ACTIONS = [
    (),
    (Output(1),),
    (Output(0xFFFFFF00),),
    (Output(IN_PORT),), (Output(TABLE),), (Output(LOCAL),),
    (Output.controller(),), (Output(CONTROLLER, 128),),
    (DecTtl(),),
    (SetField("eth_src", ROUTER), SetField("eth_dst", "00:00:00:00:01:0A"), DecTtl(), Output(2)),
    (SetField("in_port", 7),), (SetField("metadata", 0xFFFFFFFFFFFFFFFF),),
    (SetField("eth_type", 0x86DD),), (SetField("vlan_vid", 0x1000 | 100),),
    (SetField("ip_proto", 6),),
    (SetField("ipv4_src", "10.0.0.1"), SetField("ipv4_dst", "0.0.0.0")),
    (SetField("tcp_src", 1), SetField("tcp_dst", 65535)),
    (SetField("udp_src", 53), SetField("udp_dst", 5353)),
    (SetField("icmpv4_type", 0), SetField("icmpv4_code", 3)),
    (SetField("arp_op", 2), SetField("arp_spa", "10.0.1.1"), SetField("arp_tpa", "10.0.1.10"),
     SetField("arp_sha", ROUTER), SetField("arp_tha", "ff:ff:ff:ff:ff:ff")),
    (Move("eth_src", "eth_dst", 48), Move("arp_sha", "arp_tha", 48),
     Move("arp_spa", "arp_tpa", 32), Move("ipv4_src", "ipv4_dst", 32), Output(IN_PORT)),
    (Move("eth_src_nxm", "eth_dst_nxm", 48), Move("arp_spa_nxm", "arp_tpa_nxm", 32)),
    (Move("reg0", "reg1", 32), Move("tunnel_id", "metadata", 64), Move("in_port", "reg2", 16)),
    (Move("eth_src", "eth_dst", 0),),
]


# Values make_match would not produce (nor accept), in FlowSpecs built directly.
RAW_MATCHES = [
    {"eth_type": 0x0800, "ipv4_src": ("10.1.2.3", "255.255.0.255")},  # any mask, as given
    {"eth_type": 0x0800, "ipv4_dst": ("10.1.2.3", "0.0.0.0")},
    {"eth_src": ("FF:FF:FF:FF:FF:FF", "0F:F0:00:00:00:01")},
    {"in_port": 1, "eth_type": 0x0800, "metadata": 1},                 # in no particular order
]


@pytest.mark.parametrize("match", MATCHES, ids=range(len(MATCHES)))
def test_match_fields(dp, match):
    for spec in (flow(40, 7, match, [Output(5)], goto=50, cookie=COOKIE),
                 FlowSpec(0, 0, tuple(match.items())),         # raw, in the given order
                 FlowSpec(255, 65535, tuple(reversed(match.items())), cookie=(1 << 64) - 1)):
        check(dp, spec)


@pytest.mark.parametrize("match", RAW_MATCHES, ids=range(len(RAW_MATCHES)))
def test_raw_match_values(dp, match):
    check(dp, FlowSpec(1, 2, tuple(match.items()), (Output(1),), cookie=COOKIE))
    check(dp, FlowSpec(1, 2, tuple(reversed(match.items())), (Output(1),), cookie=COOKIE))


@pytest.mark.parametrize("actions", ACTIONS, ids=range(len(ACTIONS)))
@pytest.mark.parametrize("goto", [None, 0, 60, 255])
def test_actions_and_goto(dp, actions, goto):
    check(dp, flow(10, 300, {"eth_type": 0x0806, "arp_op": 1}, actions, goto=goto,
                   cookie=COOKIE))
    check(dp, FlowSpec(200, 1, (), actions, goto))


# ---------------------------------------------------------------- fallback
FALLBACK_MATCHES = [
    {"ipv6_src": "fe80::1"},                                  # field outside the fast set
    {"tunnel_id": 5},
    {"eth_src_nxm": "00:00:00:00:00:01"},
    {"eth_dst": "02-00-00-00-00-01"},                         # other MAC spellings
    {"eth_dst": "2:0:0:0:0:1"},
    {"eth_dst": 0x020000000001},
    {"ipv4_dst": 0x0A000001},                                 # an integer address
    {"ipv4_dst": "10.0.0.0/255.255.0.0"},                     # netmask after the slash
    {"ipv4_dst": "10.0.0.0/08"}, {"ipv4_dst": "10.0.0.0/+8"}, {"ipv4_dst": "1.2.3.4/ 8"},
    {"ipv4_dst": ["10.0.0.0", "255.0.0.0"]},                  # a list, not a tuple
    {"eth_type": 0x10806},                                    # os-ken truncates silently
    {"in_port": -1},
    {"vlan_vid": True},
]
FALLBACK_SPECS = [
    FlowSpec(10, 1, (("in_port", 1),), (SetField("ipv4_src", "10.0.0.0/8"),)),  # masked set
    FlowSpec(10, 1, (("in_port", 1),), (SetField("ipv6_dst", "fe80::1"),)),
    FlowSpec(10, 1, (("in_port", 1),), (SetField("eth_dst", "02-00-00-00-00-01"),)),
    FlowSpec(10, 1, (("in_port", 1),), (Output(True),)),
    # learn and conntrack (with or without nat) are left to os-ken
    FlowSpec(4, 10, (("eth_type", 0x0800), ("ip_proto", 6)),
             (Learn(63, 0xABC, 3, 0, 100, (LearnMatch("reg0", 32, src="ipv4_src"),
                                           LearnMatch("reg2", 16, src="tcp_src"),
                                           LearnMatch("reg4", 32, value=5))),), 10, COOKIE),
    FlowSpec(3, 10, (("eth_type", 0x0800), ("ip_proto", 17)),
             (Conntrack(True, 5, 3, Nat("10.0.0.53", 53)),), None, COOKIE),
    FlowSpec(3, 11, (("eth_type", 0x0800),), (Conntrack(False, 5, 61, Nat()), Output(1))),
    FlowSpec(3, 12, (("eth_type", 0x0800),), (Output(1), Conntrack(True, 5))),
]


@pytest.mark.parametrize("match", FALLBACK_MATCHES, ids=range(len(FALLBACK_MATCHES)))
def test_unsupported_match_falls_back_to_os_ken(dp, match):
    check(dp, FlowSpec(30, 2, tuple(match.items()), (Output(1),), 40, COOKIE), fast=False)


@pytest.mark.parametrize("spec", FALLBACK_SPECS, ids=range(len(FALLBACK_SPECS)))
def test_unsupported_action_falls_back_to_os_ken(dp, spec):
    assert wire.fast_flow_mod_body(dp, spec) is None
    assert wire.flow_mod_wire(dp, spec, XID) == ref_flow_mod(dp, spec, XID)
    # a strict delete does not carry actions: the fast encoder writes it
    assert wire.flow_mod_wire(dp, spec, XID, True) == ref_flow_mod(dp, spec, XID, True)
    assert wire.fast_flow_mod_body(dp, spec, True) is not None


@pytest.mark.parametrize("spec", [
    FlowSpec(10, 1, (("eth_dst", "zz:00:00:00:00:01"),)),   # invalid values
    FlowSpec(10, 1, (("ipv4_dst", "10.0.0.256"),)),
    FlowSpec(10, 1, (("ipv4_dst", "10.0.0.0/33"),)),
    FlowSpec(10, 1, (("ipv4_dst", "10.0.0.0/8/8"),)),
    FlowSpec(10, 1, (("ipv4_dst", "010.0.0.1"),)),          # no shorthand, no octal
    FlowSpec(10, 1, (("arp_tpa", "10.1"),)),
    FlowSpec(10, 1, (("arp_spa", "10.0.0.1 "),)),
    FlowSpec(10, 1, (("eth_src", ("00:00:00:00:00:01", "ff:ff")),)),
    FlowSpec(10, 1, (("no_such_field", 1),)),
    FlowSpec(10, 1, (), (Opaque("x"),)),                    # cannot be encoded
    FlowSpec(10, 1, (), (Output(1 << 32),)),
    FlowSpec(10, 1, (), (Move("eth_src", "eth_dst", 48.0),)),
    FlowSpec(10, 1, (), (Move("tun_id", "metadata", 64),)),  # unknown to os-ken
    FlowSpec(256, 1, ()),                                   # out of range
    FlowSpec(10, 1 << 16, ()),
    FlowSpec(10, 1, (), goto=256),
    FlowSpec(10, 1, (), cookie=1 << 64),
    FlowSpec(10, 1, (), cookie=-1),
], ids=range(18))
def test_what_os_ken_refuses_is_refused(dp, spec):
    assert wire.fast_flow_mod_body(dp, spec) is None
    with pytest.raises(Exception) as reference:
        ref_flow_mod(dp, spec, XID)
    with pytest.raises(type(reference.value)):
        wire.flow_mod_wire(dp, spec, XID)


def test_other_openflow_versions_use_os_ken():
    dp15 = ofproto_protocol.ProtocolDesc(ofproto_v1_5.OFP_VERSION)
    spec = flow(10, 1, {"eth_dst": ROUTER}, [Output(1)], cookie=COOKIE)
    assert wire.fast_flow_mod_body(dp15, spec) is None
    assert wire.bundle_add_wire(dp15, BUNDLE_ID, BUNDLE_FLAGS, spec, XID) == \
        ref_bundle_add(dp15, BUNDLE_ID, BUNDLE_FLAGS, spec, XID)


def test_wire_message_behaves_like_an_os_ken_message():
    msg = wire.WireMessage(None, b"\x04\x00\x00\x08\x00\x00\x00\x00")
    msg.set_xid(9)
    msg.serialize()
    assert (msg.xid, msg.buf) == (9, b"\x04\x00\x00\x08\x00\x00\x00\x00")
    with pytest.raises(AssertionError):
        msg.set_xid(10)


# ------------------------------------------------- the channel's apply, end to end
class FakeDatapath(ofproto_protocol.ProtocolDesc):
    """Records what the channel sends; answers barriers (and errors, on request)."""

    id = 0xB5

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.channel: OsKenChannel | None = None
        self.sent = bytearray()
        self.refuse_xids: set[int] = set()

    def send(self, buf: bytes) -> bool:
        self.sent += buf
        for msg_type, xid in headers(bytes(buf)):
            if xid in self.refuse_xids:
                self.channel.on_reply(Reply(xid, type=4, code=9), is_error=True)
            if msg_type == self.ofproto.OFPT_BARRIER_REQUEST:
                self.channel.on_reply(Reply(xid))
        return True


class Reply:
    def __init__(self, xid: int, **attrs) -> None:
        self.xid = xid
        self.__dict__.update(attrs)


def headers(stream: bytes) -> list[tuple[int, int]]:
    out, offset = [], 0
    while offset < len(stream):
        _, msg_type, length, xid = struct.unpack_from("!BBHI", stream, offset)
        out.append((msg_type, xid))
        offset += length
    assert offset == len(stream)
    return out


def connected(version: int) -> tuple[FakeDatapath, OsKenChannel]:
    dp = FakeDatapath(version)
    dp.channel = OsKenChannel(dp, timeout=5)
    return dp, dp.channel


def reference_stream(dp, diff: FlowDiff, xids: list[int]) -> bytes:
    """What apply sent before the direct encoder: os-ken objects all the way."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    mods = [ofcodec.flow_delete(dp, f) for f in diff.delete] + \
           [ofcodec.flow_add(dp, f) for f in diff.add]
    if ofp.OFP_VERSION < ofproto_v1_4.OFP_VERSION:
        msgs = mods + [parser.OFPBarrierRequest(dp)]
    else:
        bundle_id, flags = xids[0] - 1, ofp.OFPBF_ORDERED | ofp.OFPBF_ATOMIC
        msgs = [parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_OPEN_REQUEST, flags, [])]
        for mod, xid in zip(mods, xids[1:]):
            mod.xid = xid  # a bundled message carries its BundleAdd's xid
            msgs.append(parser.OFPBundleAddMsg(dp, bundle_id, flags, mod, []))
        msgs.append(parser.OFPBundleCtrlMsg(dp, bundle_id, ofp.OFPBCT_COMMIT_REQUEST, flags, []))
        msgs.append(parser.OFPBarrierRequest(dp))
    assert len(msgs) == len(xids)
    out = bytearray()
    for msg, xid in zip(msgs, xids):
        msg.set_xid(xid)
        msg.serialize()
        out += msg.buf
    return bytes(out)


def sample_diff() -> FlowDiff:
    flows = fabric_flows()
    odd = FlowSpec(30, 2, (("ipv6_src", "fe80::1"),), (Output(1),), cookie=COOKIE)  # os-ken path
    return FlowDiff(add=tuple(flows[:60]) + (odd,) + tuple(flows[60:]),
                    delete=tuple(flows[::7]) + (odd,))


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_sends_what_os_ken_would(version):
    dp, channel = connected(version)
    diff = sample_diff()
    channel.apply(diff)
    got = bytes(dp.sent)
    sent = headers(got)
    bundled = version >= ofproto_v1_4.OFP_VERSION
    assert len(sent) == len(diff) + (3 if bundled else 1)
    xids = [xid for _, xid in sent]
    assert xids == list(range(xids[0], xids[0] + len(xids)))  # consecutive, in send order
    assert got == reference_stream(dp, diff, xids)
    # the next apply continues the sequence (after the bundle id, on 1.4)
    dp.sent.clear()
    channel.apply(FlowDiff(add=diff.add[:1]))
    assert headers(bytes(dp.sent))[0][1] == xids[-1] + (2 if bundled else 1)


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_reports_refusals(version):
    dp, channel = connected(version)
    diff = sample_diff()
    first = channel._next_xid() + 1
    dp.refuse_xids = {first + (2 if version >= ofproto_v1_4.OFP_VERSION else 1) + 5}
    with pytest.raises(ApplyError, match="type=4 code=9"):
        channel.apply(diff)


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_encodes_everything_before_sending(version):
    dp, channel = connected(version)
    bad = FlowSpec(10, 1, (("eth_dst", "not-a-mac"),), (Output(1),))
    with pytest.raises(Exception):
        channel.apply(FlowDiff(add=tuple(fabric_flows()) + (bad,)))
    assert dp.sent == b""


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_empty_apply_is_just_a_barrier_or_an_empty_bundle(version):
    dp, channel = connected(version)
    channel.apply(FlowDiff())
    types = [t for t, _ in headers(bytes(dp.sent))]
    ofp = dp.ofproto
    if version >= ofproto_v1_4.OFP_VERSION:
        assert types == [ofp.OFPT_BUNDLE_CONTROL, ofp.OFPT_BUNDLE_CONTROL, ofp.OFPT_BARRIER_REQUEST]
    else:
        assert types == [ofp.OFPT_BARRIER_REQUEST]
