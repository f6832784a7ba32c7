"""The direct FlowMod/BundleAdd encoder of ofcodec, byte for byte against os-ken.

The reference is what the hub sent before the direct encoder existed: the
OFPFlowMod of `ofcodec.flow_add` / `ofcodec.flow_delete`, on OpenFlow 1.4
wrapped in an OFPBundleAddMsg, with the same xids, serialized by os-ken.
Conntrack (with nat and ct_mark) and learn are written directly too, and
every flow the fabric and personality compilers emit takes the direct path.
"""
from __future__ import annotations

import dataclasses

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4, ofproto_v1_5

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition)
from controller.features.personality.vpn import tunnel_port_name
from controller.pipeline import cookies, ctmark, ofcodec, wire, wire_fields, wire_nicira
from controller.pipeline.actions import (CONTROLLER, IN_PORT, LOCAL, TABLE, Conntrack, DecTtl,
                                         Learn, LearnMatch, Move, Nat, Opaque, Output, SetField,
                                         ct_state)
from controller.pipeline.flowspec import FlowSpec, flow
from controller.core.topology import Host, Link, Subnet

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
    # Nicira (NXM_NX) fields: OXM class 1, so they sort before the OpenFlow basic ones
    {"eth_type": 0x0800, "ct_state": ct_state("+trk+new")},
    {"eth_type": 0x0800, "ct_state": (0x22, 0x3F)}, {"ct_state": 0x21}, {"ct_state": 0},
    {"ct_state": (0xFFFFFFFF, 0xFFFFFFFF)},
    {"eth_type": 0x0800, "ct_state": ct_state("+trk+new"), "ct_mark": ctmark.committed()},
    {"ct_mark": 0xFFFFFFFF}, {"ct_mark": (0x7, 0x6)},   # value bits outside the mask dropped
    {"ct_zone": 17}, {"ct_zone": 0xFFFF},
    {"reg0": 1, "reg1": (0x10, 0xF0), "reg2": 0xFFFFFFFF, "reg3": 6, "reg4": 3, "reg5": 0,
     "reg6": 9, "reg7": (0, 0)},
    {"in_port": 2, "eth_src": "02:00:00:00:02:01", "eth_type": 0x0800, "ip_proto": 6,
     "tcp_dst": (0x400, 0xFC00), "ct_state": (0x21, 0x21)},
    {"eth_type": 0x0800, "ip_dscp": 46},
    # every field at once (os-ken orders them by OXM type)
    {"in_port": 3, "metadata": (5, 0xFF), "eth_dst": "02:00:00:00:00:02",
     "eth_src": ("02:00:00:00:00:00", "ff:ff:00:00:00:00"), "eth_type": 0x0800,
     "vlan_vid": 0x1005, "ip_proto": 17, "ipv4_src": "10.0.0.0/8", "ipv4_dst": "10.1.1.1",
     "udp_src": 68, "udp_dst": 67, "ct_state": (0x21, 0x21), "ct_zone": 9,
     "ct_mark": (1, 1), "reg4": 7, "ip_dscp": 0},
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
    (SetField("ip_dscp", 40), Output(1)), (SetField("ip_dscp", 0),),
    (SetField("reg0", 0xFFFFFFFF), SetField("reg7", 1)), (SetField("ct_mark", 3),),
    (Move("ct_mark", "reg1", 32), Move("ct_zone", "reg2", 16)),
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


# ------------------------------------------------------ conntrack and learn
NATS = [None, Nat(), Nat(dst="10.0.0.53"), Nat(dst="10.0.0.53", dst_port=53),
        Nat(dst="255.255.255.255", dst_port=65535), Nat(dst="0.0.0.0", dst_port=1),
        Nat(src="192.168.1.1")]
# (mark, mask): none, whole (a set_field of ct_mark), masked (an NXActionRegLoad2)
MARKS = [(None, 0xFFFFFFFF), (ctmark.COMMITTED, 0xFFFFFFFF), (0, 0xFFFFFFFF),
         (0xFFFFFFFF, 0xFFFFFFFF), (ctmark.APP_ALLOWED, ctmark.APP_MASK), (0, 1),
         (0x80000000, 0x80000000)]
CONNTRACKS = (
    [Conntrack(), Conntrack(zone=7), Conntrack(False, 65535, 61), Conntrack(False, 0, 0),
     Conntrack(False, 5, 254), Conntrack(True, 5), Conntrack(True, 1, 3)]
    + [Conntrack(True, 9, table, nat, mark, mask) for nat in NATS for mark, mask in MARKS
       for table in (None, 4)]
    + [Conntrack(False, 9, 61, Nat())])
SPECS = [
    LearnMatch("reg0", 32, src="ipv4_src"), LearnMatch("reg1", 32, src="ipv4_dst"),
    LearnMatch("reg2", 16, 0, src="tcp_src"), LearnMatch("reg2", 16, 16, src="udp_dst"),
    LearnMatch("reg3", 8, src="ip_proto"), LearnMatch("reg4", 32, value=5),
    LearnMatch("reg5", 8, dst_ofs=8, src="reg6", src_ofs=24),
    LearnMatch("eth_type", 16, value=0x0800), LearnMatch("ipv4_dst", 32, src="ipv4_src"),
    LearnMatch("in_port", 32, src="in_port"), LearnMatch("eth_dst", 48, src="eth_src"),
    LearnMatch("metadata", 64, src="metadata"), LearnMatch("reg7", 1, dst_ofs=31, value=1),
    LearnMatch("reg7", 17, value=0x1FFFF),           # 17 bits: 4 bytes of immediate value
    LearnMatch("metadata", 64, value=(1 << 64) - 1),
    LearnMatch("reg0", 0x3FF, value=1 << 1000),      # the longest immediate: 128 bytes
    LearnMatch("eth_src_nxm", 48, src="eth_dst_nxm"),
    LearnMatch("ct_mark", 32, src="ct_mark"),
]
LEARNS = [
    Learn(0, 0),
    Learn(63, 0xABC, 3, 0, 100, tuple(SPECS[:6])),
    Learn(254, (1 << 64) - 1, 65535, 65535, 0, tuple(SPECS)),
    Learn(63, 1, hard_timeout=3, priority=1, specs=(SPECS[5],)),
] + [Learn(63, 7, specs=(spec,)) for spec in SPECS]
TCP = {"eth_type": 0x0800, "ip_proto": 6}


@pytest.mark.parametrize("action", CONNTRACKS + LEARNS, ids=range(len(CONNTRACKS + LEARNS)))
def test_conntrack_and_learn(dp, action):
    for actions, goto, meter in (([action], None, None), ([action], 62, 3),
                                 ([Output(2), action, SetField("ip_dscp", 8)], 5, None),
                                 ([action, action, Output(1)], None, 9)):
        check(dp, flow(3, 49000, {**TCP, "ct_state": ct_state("+trk+new")}, actions,
                       goto=goto, cookie=COOKIE, meter=meter))


def test_the_mark_goes_before_the_nat_as_ofcodec_writes_it(dp):
    """Nested in ct: the mark first, then nat (os-ken writes a NAT unpadded: only last is right)."""
    body = wire.fast_flow_mod_body(dp, flow(3, 1, {}, [
        Conntrack(True, 5, None, Nat(dst="10.0.0.53"), ctmark.COMMITTED)]))
    ct = body[-64:]                         # the last action: ct, 24 + 16 (mark) + 24 (nat) bytes
    assert ct[:4] == b"\xff\xff\x00\x40"  # experimenter action, 64 bytes
    assert ct[24:26] == b"\x00\x19"       # set_field (ct_mark)
    assert ct[40:42] == b"\xff\xff" and ct[48:50] == b"\x00\x24"  # NXAST_NAT


def raw(cls, **values):
    """An instance of a frozen dataclass with values its own checks refuse (as a bad caller
    could build with object.__setattr__): the encoder must still judge them right."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        object.__setattr__(obj, f.name, values.pop(f.name, default))
    assert not values, values
    return obj


# Not in canonical form: the direct encoder answers None, os-ken writes them (or refuses).
ODD_CONNTRACKS = [
    Conntrack(commit=1, zone=5),                          # an int, not a bool
    Conntrack(True, True), Conntrack(True, 5, True),      # bools
    Conntrack(True, 5, 255),                              # NX_CT_RECIRC_NONE given as a table
    raw(Conntrack, zone=0x10000), raw(Conntrack, zone=-1), raw(Conntrack, table=256),
    raw(Conntrack, table=3.0), raw(Conntrack, zone=5.0),
    Conntrack(True, 5, nat=Nat(dst="10.0.0.1", dst_port=True)),
    raw(Conntrack, commit=True, nat=raw(Nat, dst="010.0.0.1")),
    raw(Conntrack, commit=True, nat=raw(Nat, dst="10.0.0.1", dst_port=0x10000)),
    raw(Conntrack, commit=True, nat=raw(Nat, dst_port=53)),          # a port, no address
    raw(Conntrack, commit=True, nat=raw(Nat, dst="10.0.0.1", src="10.0.0.2")),
    raw(Conntrack, commit=True, nat=raw(Nat, src=0x0A000001)),
    raw(Conntrack, commit=True, nat="nat(dst=10.0.0.1)"),
    Conntrack(True, 5, mark=True), raw(Conntrack, commit=True, mark=1, mark_mask=True),
    raw(Conntrack, commit=True, mark=0x10, mark_mask=0x0F),          # bits outside the mask
    raw(Conntrack, commit=True, mark=None, mark_mask=0xFF),          # a mask without a mark
    raw(Conntrack, commit=True, mark=1 << 32, mark_mask=0xFFFFFFFF),
    raw(Conntrack, commit=True, mark=1, mark_mask=0),
    raw(Conntrack, commit=True, mark=-1, mark_mask=0xFFFFFFFF),
]
ODD_LEARNS = [
    Learn(True, 1), Learn(63, True), Learn(63, 1, idle_timeout=True),
    raw(Learn, table=256, cookie=1, idle_timeout=0, hard_timeout=0, priority=1, specs=()),
    raw(Learn, table=63, cookie=1 << 64, idle_timeout=0, hard_timeout=0, priority=1, specs=()),
    raw(Learn, table=63, cookie=-1, idle_timeout=0, hard_timeout=0, priority=1, specs=()),
    raw(Learn, table=63, cookie=1, idle_timeout=0x10000, hard_timeout=0, priority=1, specs=()),
    raw(Learn, table=63, cookie=1, idle_timeout=0, hard_timeout=-1, priority=1, specs=()),
    raw(Learn, table=63, cookie=1, idle_timeout=0, hard_timeout=0, priority=0x10000, specs=()),
    raw(Learn, table=63, cookie=1, idle_timeout=0, hard_timeout=0, priority=1,
        specs=[LearnMatch("reg0", 32, src="ipv4_src")]),                     # a list
    Learn(63, 1, specs=(LearnMatch("reg0", True, src="ipv4_src"),)),
    Learn(63, 1, specs=(LearnMatch("reg0", 16, value=-1),)),               # os-ken wraps it
    Learn(63, 1, specs=(LearnMatch("reg0", 16, value=0x10000),)),          # os-ken truncates
    Learn(63, 1, specs=(LearnMatch("reg0", 16, value=True),)),
    Learn(63, 1, specs=(LearnMatch("reg0", 32, src_ofs=True, src="ipv4_src"),)),
    Learn(63, 1, specs=(LearnMatch("reg0", 32, dst_ofs=0x10000, src="ipv4_src"),)),
    Learn(63, 1, specs=(raw(LearnMatch, dst="reg0", n_bits=0, src="ipv4_src", src_ofs=0,
                            dst_ofs=0),)),
    Learn(63, 1, specs=(raw(LearnMatch, dst="reg0", n_bits=0x400, value=1, src_ofs=0,
                            dst_ofs=0),)),
    Learn(63, 1, specs=(raw(LearnMatch, dst="reg0", n_bits=32, src="ipv4_src", value=7,
                            src_ofs=0, dst_ofs=0),)),                    # both: os-ken takes src
    Learn(63, 1, specs=(LearnMatch("tcp_flags", 16, src="tcp_flags"),)),  # 8-byte OXM headers
    Learn(63, 1, specs=(LearnMatch("reg0", 16, src="tcp_flags"),)),
    Learn(63, 1, specs=(LearnMatch("no_such_field", 16, value=1),)),
    Learn(63, 1, specs=("reg0=ipv4_src",)),
]


@pytest.mark.parametrize("action", ODD_CONNTRACKS + ODD_LEARNS,
                         ids=range(len(ODD_CONNTRACKS + ODD_LEARNS)))
def test_odd_conntrack_and_learn_values_are_left_to_os_ken(dp, action):
    spec = flow(3, 7, TCP, [Output(1), action], goto=4, cookie=COOKIE)
    assert wire.fast_flow_mod_body(dp, spec) is None
    try:
        reference = ref_flow_mod(dp, spec, XID)
    except Exception as exc:
        with pytest.raises(type(exc)):
            wire.flow_mod_wire(dp, spec, XID)
    else:
        assert wire.flow_mod_wire(dp, spec, XID) == reference
    assert wire.fast_flow_mod_body(dp, spec, True) is not None  # a delete carries no actions


def test_a_field_the_encoder_does_not_write_sends_the_action_to_os_ken(dp, monkeypatch):
    """An action gaining a field (as Conntrack gained mark): at its default the direct
    encoding stands, set to anything else the action goes to os-ken."""
    monkeypatch.setitem(wire._UNWRITTEN, Conntrack,
                        wire._UNWRITTEN[Conntrack] + (("flavour", None),))
    plain, flavoured = Conntrack(True, 5), Conntrack(True, 5)
    object.__setattr__(plain, "flavour", None)
    object.__setattr__(flavoured, "flavour", "sour")
    assert wire.fast_flow_mod_body(dp, flow(3, 1, {}, [plain])) is not None
    assert wire.fast_flow_mod_body(dp, flow(3, 1, {}, [flavoured])) is None
    zero = Conntrack(True, 5)
    object.__setattr__(zero, "flavour", False)      # equal to a default of 0, not None
    assert wire.fast_flow_mod_body(dp, flow(3, 1, {}, [zero])) is None


def test_unwritten_lists_what_the_encoder_does_not_write():
    @dataclasses.dataclass(frozen=True)
    class Future:
        written: int
        flag: bool = False
        extra: tuple = dataclasses.field(default_factory=tuple)
        needed: int = dataclasses.field(default=0)

    assert wire_fields.unwritten(Future, frozenset({"written", "needed"})) == \
        (("flag", False), ("extra", ()))
    assert not wire_fields.unwritten(Future, frozenset({"written", "flag", "extra", "needed"}))

    @dataclasses.dataclass(frozen=True)
    class Required:
        written: int
        other: int

    (name, default), = wire_fields.unwritten(Required, frozenset({"written"}))
    assert name == "other" and not wire_fields.defaults_only(Required(1, 0), ((name, default),))
    # what the encoder writes today: every field of the actions the compilers use
    for cls in (Output, SetField, Move, DecTtl, Conntrack, Learn):
        assert wire._UNWRITTEN[cls] == (), cls
    assert wire_nicira.NAT_UNWRITTEN == () and wire_nicira.SPEC_UNWRITTEN == ()


def test_remembered_match_items_never_stand_for_equal_values_of_other_types(dp):
    """(reg0, (1, 1)) is remembered; (reg0, (1, 1.0)) equals it but os-ken refuses it."""
    check(dp, FlowSpec(10, 1, (("reg0", (1, 1)), ("in_port", 1), ("ct_state", 1))))
    for items in ((["in_port", 1],), (["reg0", (1, 1)],)):  # lists are never remembered
        spec = FlowSpec(10, 1, items)
        assert wire.flow_mod_wire(dp, spec, XID) == ref_flow_mod(dp, spec, XID)
    for odd in ((("reg0", (1, 1.0)),), (("in_port", True),), (("ct_state", 1.0),),
                (("reg0", (True, 1)),), (("reg0", [1, 1]),)):
        spec = FlowSpec(10, 1, odd)
        assert wire.fast_flow_mod_body(dp, spec) is None, odd
        try:
            reference = ref_flow_mod(dp, spec, XID)
        except Exception as exc:
            with pytest.raises(type(exc)):
                wire.flow_mod_wire(dp, spec, XID)
        else:
            assert wire.flow_mod_wire(dp, spec, XID) == reference


def test_the_match_memo_starts_over_when_full(dp, monkeypatch):
    monkeypatch.setattr(wire, "_OXM_MEMO_MAX", 3)
    memo = wire._OXM_MEMO[dp.ofproto.OFP_VERSION]
    for port in range(10):
        check(dp, flow(10, 1, {"in_port": port, "eth_type": 0x0800}))
        assert len(memo) <= 3


def test_remembered_actions_are_found_by_identity_only(dp, monkeypatch):
    """One Conntrack in many flows is written once; an equal one of other types is not it."""
    commit = Conntrack(True, 5, mark=ctmark.COMMITTED)
    for port in range(3):
        check(dp, flow(3, 100 + port, {**TCP, "tcp_dst": port}, [commit], goto=4))
    odd = Conntrack(commit=1, zone=5, mark=ctmark.COMMITTED)
    assert odd == commit
    spec = flow(3, 1, TCP, [odd], goto=4)
    assert wire.fast_flow_mod_body(dp, spec) is None
    assert wire.flow_mod_wire(dp, spec, XID) == ref_flow_mod(dp, spec, XID)
    monkeypatch.setattr(wire, "_ACTION_MEMO_MAX", 2)
    memo = wire._ACTION_MEMO[dp.ofproto.OFP_VERSION]
    for zone in range(6):
        check(dp, flow(3, 1, TCP, [Conntrack(True, zone), Learn(63, zone)], goto=4))
        assert len(memo) <= 2


# -------------------------------------------------- compiled personalities
IFACE = Interface(0xB5, 3, "02:00:00:00:03:0A")
CTX = Context(router_mac=ROUTER, macs={"10.0.1.1": "02:00:00:00:00:01"})
REALISTIC = {
    "name": "realistic",
    "ip_addresses": ["10.0.1.10", "10.0.1.11"],
    "firewall_rules": [
        {"protocol": "tcp", "port": 443, "action": "allow", "direction": "egress"},
        {"protocol": "tcp", "port": "1000-2000", "action": "allow", "source": "10.0.0.0/8"},
        {"protocol": "udp", "port": 53, "action": "deny", "destination": "8.8.8.8/32"},
        {"protocol": "udp", "port": "5000-5010", "action": "allow", "direction": "ingress"},
        {"protocol": "icmp", "action": "allow"},
        {"protocol": "any", "action": "deny", "destination": "192.168.0.0/16",
         "direction": "ingress"},
        {"protocol": "tcp", "action": "deny", "source": "172.16.5.0/24"},
    ],
    "default_action": "allow",
    "dns_servers": ["10.0.1.53", "10.0.1.54"],
    "routing_table": [{"destination": "172.16.0.0/12", "next_hop": "10.0.1.1"},
                      {"destination": "172.20.0.0/16", "next_hop": "10.0.1.2"}],  # unknown
    "qos_settings": {"priority": 5, "egress_rate_kbps": 1000, "egress_burst_kb": 100,
                     "ingress_rate_kbps": 2000},
}
APPLICATIONS = {
    "allow": [{"name": "https", "protocol": "tcp", "port": 443},
              {"name": "mdns", "protocol": "udp", "port": 5353, "signature": "abc"}],
    "deny": [{"name": "ssh", "protocol": "tcp", "port": 22, "signature": "SSH-2.0"},
             {"name": "telnet", "protocol": "tcp", "port": 23}],
}
VPN = {"type": "vxlan", "remote_ip": "192.0.2.1", "key": 42,
       "remote_prefixes": ["10.50.0.0/16", "10.60.1.0/24"]}
BENCHMARK = {  # benchmarks/personality_switch.py: n-1 distinct tcp denies, then udp allowed
    "name": "benchmark", "ip_addresses": ["10.0.2.11"], "default_action": "deny",
    "firewall_rules": [{"protocol": "tcp", "port": 2000 + k, "action": "deny"}
                       for k in range(99)] + [{"protocol": "udp", "port": 5001,
                                               "action": "allow"}]}


def personality_flows(body: dict) -> list[FlowSpec]:
    policy = PersonalityPolicy.from_body("realistic", body, 4)
    ctx = CTX
    if policy.vpn is not None:
        ctx = dataclasses.replace(CTX, tunnel_ports={
            tunnel_port_name(IFACE.dpid, IFACE.port, policy.vpn): 40})
    return [*compile_personality(IFACE, policy, 7, ctx),
            *compile_transition(IFACE, policy, 6, ctx)]


@pytest.mark.parametrize("body", [
    REALISTIC, {**REALISTIC, "default_action": "deny", "dns_servers": []},
    {**REALISTIC, "application_access_policy": APPLICATIONS, "vpn_tunnel_config": VPN},
    BENCHMARK], ids=["realistic", "deny-no-dns", "applications-vpn", "benchmark"])
def test_every_compiled_personality_flow_takes_the_direct_path(dp, body):
    flows = personality_flows(body)
    for spec in flows:
        check(dp, spec)   # fast (not None), and byte for byte os-ken's, add and delete


def test_the_realistic_personality_covers_what_the_encoder_writes():
    flows = personality_flows(REALISTIC) + personality_flows(
        {**REALISTIC, "application_access_policy": APPLICATIONS, "vpn_tunnel_config": VPN})
    actions = [a for f in flows for a in f.actions]
    cts = [a for a in actions if isinstance(a, Conntrack)]
    assert {type(a) for a in actions} == {Conntrack, Learn, Output, SetField, DecTtl}
    assert {type(a.nat) for a in cts} == {type(None), Nat}
    assert any(a.nat == Nat() for a in cts) and any(a.nat and a.nat.dst_port for a in cts)
    assert any(a.commit and a.table is None for a in cts) and any(a.table for a in cts)
    assert any(a.mark is not None and a.mark_mask != 0xFFFFFFFF for a in cts)  # field-wise
    assert any(s.value is not None for a in actions if isinstance(a, Learn) for s in a.specs)
    assert any(f.meter for f in flows)
    fields = {name for f in flows for name, _ in f.match}
    assert {"ct_state", "ct_mark", "tcp_dst", "udp_dst", "ipv4_dst"} <= fields
    assert any(isinstance(v, tuple) for f in flows for name, v in f.match if name == "tcp_dst")
    assert PersonalityPolicy.from_body("vpn", {"name": "vpn", "vpn_tunnel_config": VPN}).vpn


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
    {"ct_state": -1}, {"ct_mark": 1 << 32}, {"ct_zone": 0x10000},  # os-ken wraps them around
    {"ct_state": (True, 1)},
]
FALLBACK_SPECS = [
    FlowSpec(10, 1, (("in_port", 1),), (SetField("ipv4_src", "10.0.0.0/8"),)),  # masked set
    FlowSpec(10, 1, (("in_port", 1),), (SetField("ipv6_dst", "fe80::1"),)),
    FlowSpec(10, 1, (("in_port", 1),), (SetField("eth_dst", "02-00-00-00-00-01"),)),
    FlowSpec(10, 1, (("in_port", 1),), (Output(True),)),
    FlowSpec(10, 1, (("in_port", 1),), (SetField("ip_dscp", 256),)),  # os-ken wraps it around
    FlowSpec(3, 12, (("eth_type", 0x0800),), (Output(1), Conntrack(commit=1, zone=5))),
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
    FlowSpec(10, 1, (("reg0", (1, 1.0)),)),
], ids=range(19))
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
