"""Learn and conntrack NAT actions: data model, os-ken wire round trip, ovs-ofctl text, stats."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from apps.channel import OsKenChannel
from controller.core.channel import Aggregate, FlowCounters
from controller.pipeline import ofcodec, wire
from controller.pipeline.actions import Conntrack, Learn, LearnMatch, Nat, Opaque, Output
from controller.pipeline.flowspec import FlowSpec, flow
from controller.pipeline.ofctl import render_action
from controller.reconcile.flows import ApplyError

TCP = {"eth_type": 0x0800, "ip_proto": 6}
UDP = {"eth_type": 0x0800, "ip_proto": 17}
COUNT = Learn(63, 0xABC, idle_timeout=3, priority=100, specs=(
    LearnMatch("reg0", 32, src="ipv4_src"),
    LearnMatch("reg2", 16, src="tcp_src"),
    LearnMatch("reg3", 8, src="ip_proto"),
    LearnMatch("reg4", 32, value=5)))
LEARNS = [
    COUNT,
    Learn(0, 0),                                                     # no specs, all defaults
    Learn(254, (1 << 64) - 1, 65535, 65535, 0, (
        LearnMatch("eth_type", 16, value=0x0800),
        LearnMatch("ipv4_dst", 32, src="ipv4_src"),
        LearnMatch("reg1", 16, dst_ofs=16, src="udp_dst"),
        LearnMatch("reg5", 8, dst_ofs=8, src="reg6", src_ofs=24),
        LearnMatch("in_port", 32, src="in_port"),
        LearnMatch("reg7", 1, dst_ofs=31, value=1))),
]
CONNTRACKS = [
    Conntrack(True, 5, 3, Nat("10.0.0.53", 53)),
    Conntrack(True, 5, None, Nat("10.0.0.53")),
    Conntrack(True, 0, 10, Nat(src="192.168.1.1")),
    Conntrack(False, 5, 61, Nat()),
    Conntrack(True, 65535, None, Nat()),
]


@pytest.fixture(params=[ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION], ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


def wire_roundtrip(dp, msg):
    """Serialize a FlowMod and parse it back as the switch would see it."""
    msg.set_xid(7)
    msg.serialize()
    return dp.ofproto_parser.OFPFlowMod.parser(dp, msg.version, msg.msg_type, msg.msg_len,
                                               msg.xid, msg.buf)


def decoded(dp, *actions):
    """Actions of a FlowMod carrying these os-ken actions, after serialize/parse, decoded."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    msg = parser.OFPFlowMod(dp, table_id=4, priority=1, match=parser.OFPMatch(eth_type=0x0800),
                            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                                       list(actions))])
    return ofcodec.decode_flow(dp, wire_roundtrip(dp, msg)).actions


# ----------------------------------------------------------------- data model
def test_data_model_validation():
    with pytest.raises(ValueError):
        LearnMatch("reg0", 32)                                  # neither src nor value
    with pytest.raises(ValueError):
        LearnMatch("reg0", 32, src="ipv4_src", value=1)         # both
    with pytest.raises(ValueError):
        LearnMatch("reg0", 0, value=1)
    with pytest.raises(ValueError):
        Learn(255, 0)                                           # OFPTT_ALL: OVS refuses it
    with pytest.raises(ValueError):
        Nat(dst="10.0.0.1", src="10.0.0.2")
    with pytest.raises(ValueError):
        Nat(dst_port=53)                                        # port without address
    for addr in ("10.0.0.053", "10.0.0", "fe80::1"):
        with pytest.raises(ValueError):
            Nat(src=addr)                                       # would not read back equal
    with pytest.raises(ValueError):
        Nat(dst="10.0.0.1", dst_port=0)
    with pytest.raises(ValueError):
        Conntrack(zone=5, nat=Nat(dst="10.0.0.1"))              # OVS wants commit here
    assert Conntrack(zone=5, nat=Nat()).nat == Nat()
    assert Conntrack(True, 5, 3) == Conntrack(commit=True, zone=5, table=3, nat=None)
    assert len({COUNT, Learn(63, 0xABC, 3, 0, 100, COUNT.specs), Learn(63, 0xABD)}) == 2


# ------------------------------------------------------------ os-ken round trip
@pytest.mark.parametrize("action", LEARNS + CONNTRACKS, ids=range(len(LEARNS + CONNTRACKS)))
def test_roundtrip_through_bytes(dp, action):
    spec = flow(4, 10, TCP, [action, Output(2)], goto=10, cookie=0xB5 << 56)
    assert ofcodec.decode_flow(dp, wire_roundtrip(dp, ofcodec.flow_add(dp, spec))) == spec
    raw = ofcodec.encode_action(dp.ofproto_parser, action)
    assert ofcodec.decode_action(dp.ofproto_parser, raw) == action


def test_nat_is_encoded_as_ovs_ofctl_does(dp):
    """One address (and port): only the range minimum is sent; OVS reads max = min."""
    ct = ofcodec.encode_action(dp.ofproto_parser, CONNTRACKS[0])
    (nat,) = ct.actions
    assert (nat.flags, nat.range_ipv4_min, nat.range_ipv4_max) == (2, "10.0.0.53", "")
    assert (nat.range_proto_min, nat.range_proto_max) == (53, None)
    assert ofcodec.encode_action(dp.ofproto_parser, CONNTRACKS[2]).actions[0].flags == 1
    assert ofcodec.encode_action(dp.ofproto_parser, CONNTRACKS[3]).actions[0].flags == 0


def test_readback_spellings_decode_to_the_same_actions(dp):
    parser = dp.ofproto_parser
    # OVS answers with NXM headers for learn specs (ipv4_src_nxm for OXM ipv4_src) ...
    learn = parser.NXActionLearn(table_id=63, cookie=0xABC, idle_timeout=3, priority=100, specs=[
        parser.NXFlowSpecMatch(src=("ipv4_src_nxm", 0), dst=("reg0", 0), n_bits=32),
        parser.NXFlowSpecMatch(src=("tcp_src_nxm", 0), dst=("reg2", 0), n_bits=16),
        parser.NXFlowSpecMatch(src=("ip_proto_nxm", 0), dst=("reg3", 0), n_bits=8),
        parser.NXFlowSpecMatch(src=5, dst=("reg4", 0), n_bits=32)])
    # ... and a single-address range may come back with max = min
    nat = parser.NXActionNAT(flags=2, range_ipv4_min="10.0.0.53", range_ipv4_max="10.0.0.53",
                             range_proto_min=53, range_proto_max=53)
    ct = parser.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=5, recirc_table=3, alg=0,
                           actions=[nat])
    assert decoded(dp, learn, ct) == (COUNT, CONNTRACKS[0])


def opaque_cases(parser):
    def ct(*actions, flags=1):
        return parser.NXActionCT(flags=flags, zone_src="", zone_ofs_nbits=5, recirc_table=3,
                                 alg=0, actions=list(actions))

    def learn(*specs, **kw):
        return parser.NXActionLearn(table_id=63, specs=list(specs), **kw)

    match = parser.NXFlowSpecMatch(src=("ipv4_src", 0), dst=("reg0", 0), n_bits=32)
    return [
        ct(parser.NXActionNAT(flags=2, range_ipv4_min="10.0.0.1",
                              range_ipv4_max="10.0.0.9")),                     # a range
        ct(parser.NXActionNAT(flags=2, range_ipv4_min="10.0.0.1", range_proto_min=1000,
                              range_proto_max=2000)),
        ct(parser.NXActionNAT(flags=2, range_ipv6_min="fe80::1")),
        ct(parser.NXActionNAT(flags=2 | 4, range_ipv4_min="10.0.0.1")),       # persistent
        ct(parser.NXActionNAT(flags=1, range_ipv4_min="10.0.0.1", range_proto_min=9)),
        ct(parser.NXActionNAT(flags=0, range_ipv4_min="10.0.0.1")),
        ct(parser.NXActionNAT(flags=2)),                                       # no address
        ct(parser.NXActionNAT(flags=2, range_ipv4_min="10.0.0.1"), flags=0),  # no commit
        ct(parser.NXActionNAT(flags=0), parser.NXActionNAT(flags=0)),
        ct(parser.OFPActionSetField(ct_mark=1), flags=0),                     # mark, no commit
        ct(parser.NXActionNAT(flags=0), parser.OFPActionSetField(ct_mark=1)),  # nat before mark
        ct(parser.OFPActionSetField(ct_mark=1), parser.OFPActionSetField(ct_mark=2)),
        learn(match, parser.NXFlowSpecLoad(src=1, dst=("reg1", 0), n_bits=32)),
        learn(match, parser.NXFlowSpecOutput(src=("in_port", 0), n_bits=32)),
        learn(match, flags=1),                                                 # send_flow_rem
        learn(match, fin_idle_timeout=5),
    ]


def test_what_is_not_modelled_decodes_to_opaque(dp):
    cases = opaque_cases(dp.ofproto_parser)
    for action, back in zip(cases, decoded(dp, *cases), strict=True):
        assert isinstance(back, Opaque), (action, back)
    parser = dp.ofproto_parser  # what LearnMatch refuses (os-ken cannot parse it back either)
    zero = parser.NXFlowSpecMatch(src=("ipv4_src", 0), dst=("reg0", 0), n_bits=0)
    assert isinstance(ofcodec.decode_action(parser, parser.NXActionLearn(63, [zero])), Opaque)


# ---------------------------------------------------------------- fast path
@pytest.mark.parametrize("action", LEARNS + CONNTRACKS, ids=range(len(LEARNS + CONNTRACKS)))
def test_fast_encoder_writes_them_as_os_ken_does(dp, action):
    spec = flow(4, 10, TCP, [Output(1), action], goto=10)
    msg = ofcodec.flow_add(dp, spec)
    msg.set_xid(9)
    msg.serialize()
    assert wire.fast_flow_mod_body(dp, spec) == bytes(msg.buf)[8:]
    assert wire.flow_mod_wire(dp, spec, 9) == bytes(msg.buf)


# --------------------------------------------------------------- ovs-ofctl
@pytest.mark.parametrize("action, text", [
    (COUNT, "learn(table=63,idle_timeout=3,priority=100,cookie=0xabc,"
            "NXM_NX_REG0[]=NXM_OF_IP_SRC[],NXM_NX_REG2[0..15]=NXM_OF_TCP_SRC[],"
            "NXM_NX_REG3[0..7]=NXM_OF_IP_PROTO[],NXM_NX_REG4[]=0x5)"),
    (Learn(0, 0), "learn(table=0,cookie=0x0)"),
    (LEARNS[2], "learn(table=254,idle_timeout=65535,hard_timeout=65535,priority=0,"
                "cookie=0xffffffffffffffff,NXM_OF_ETH_TYPE[]=0x800,NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],"
                "NXM_NX_REG1[16..31]=NXM_OF_UDP_DST[],NXM_NX_REG5[8..15]=NXM_NX_REG6[24..31],"
                "OXM_OF_IN_PORT[]=OXM_OF_IN_PORT[],NXM_NX_REG7[31..31]=0x1)"),
    (CONNTRACKS[0], "ct(commit,zone=5,nat(dst=10.0.0.53:53),table=3)"),
    (CONNTRACKS[1], "ct(commit,zone=5,nat(dst=10.0.0.53))"),
    (CONNTRACKS[2], "ct(commit,zone=0,nat(src=192.168.1.1),table=10)"),
    (CONNTRACKS[3], "ct(zone=5,nat,table=61)"),
])
def test_render(action, text):
    assert render_action(action) == text


def test_render_refuses_unknown_learn_fields():
    with pytest.raises(TypeError):
        render_action(Learn(1, 0, specs=(LearnMatch("ipv6_src", 128, src="ipv6_src"),)))


# ------------------------------------------------------------ stats requests
class StatsDatapath(ofproto_protocol.ProtocolDesc):
    """Answers flow stats (in two replies) and aggregate requests; records the requests."""

    id = 0xB5
    # multipart type, flags, pad; table_id, pad, out_port, out_group, pad, cookie, cookie_mask
    REQUEST = struct.Struct("!HH4xB3xII4xQQ")

    def __init__(self, version: int, flows: list[tuple[FlowSpec, int, int]]) -> None:
        super().__init__(version)
        self.channel: OsKenChannel | None = None
        self.flows = flows
        self.requests: list = []
        self.refuse = False

    def send(self, buf: bytes) -> bool:
        xid, = struct.unpack_from("!I", buf, 4)
        kind, _, *filters = self.REQUEST.unpack_from(buf, 8)
        self.requests.append((kind, *filters))
        if self.refuse:
            self.channel.on_reply(SimpleNamespace(xid=xid, type=1, code=2), is_error=True)
        elif kind == 2:  # OFPMP_AGGREGATE
            body = self.ofproto_parser.OFPAggregateStats(
                sum(p for _, p, _ in self.flows), sum(b for _, _, b in self.flows),
                len(self.flows))
            self.channel.on_reply(SimpleNamespace(xid=xid, flags=0, body=body))
        else:
            entries = [self.entry(*f) for f in self.flows]
            self.channel.on_reply(SimpleNamespace(xid=xid, flags=1, body=entries[:1]))
            self.channel.on_reply(SimpleNamespace(xid=xid, flags=0, body=entries[1:]))
        return True

    def entry(self, spec: FlowSpec, packets: int, byte_count: int):
        mod = wire_roundtrip(self, ofcodec.flow_add(self, spec))
        return SimpleNamespace(table_id=mod.table_id, priority=mod.priority, match=mod.match,
                               instructions=mod.instructions, cookie=mod.cookie,
                               packet_count=packets, byte_count=byte_count)


@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
def test_flow_stats_and_aggregate(version):
    learned = [(flow(63, 100, {"eth_type": 0x0800, "reg0": 0x0A000001 + i}, cookie=0xABC), i, 60 * i)
               for i in range(3)]
    dp = StatsDatapath(version, learned)
    dp.channel = OsKenChannel(dp, timeout=5)
    assert dp.channel.flow_stats(63, 0xABC, (1 << 64) - 1) == [f for f, _, _ in learned]
    counters = dp.channel.flow_counters(63, 0xABC, (1 << 64) - 1)
    assert counters == learned
    assert [(c.flow, c.packets, c.bytes) for c in counters] == learned
    assert all(type(c) is FlowCounters for c in counters)
    total = dp.channel.aggregate(63, 0xABC, (1 << 64) - 1)
    assert total == Aggregate(flows=3, packets=3, bytes=180) and type(total) is Aggregate
    flows, packets, _ = total  # a tuple still
    assert (flows, packets) == (3, 3)
    any_port = dp.ofproto.OFPP_ANY
    assert dp.requests == [(1, 63, any_port, any_port, 0xABC, (1 << 64) - 1)] * 2 + \
        [(2, 63, any_port, any_port, 0xABC, (1 << 64) - 1)]
    dp.refuse = True
    with pytest.raises(ApplyError):
        dp.channel.aggregate(63, 0, 0)
    with pytest.raises(ApplyError):
        dp.channel.flow_stats(63, 0, 0)
