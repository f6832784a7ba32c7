"""Meters: MeterSpec and ids, the meter instruction of a FlowSpec (os-ken, wire bytes,
ovs-ofctl text), MeterMods and meter read-back over the channel."""
from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import (ofproto_parser, ofproto_protocol, ofproto_v1_3, ofproto_v1_4,
                           ofproto_v1_5)

from apps.channel import OsKenChannel
from controller.pipeline import cookies, ofcodec, wire
from controller.pipeline.actions import Conntrack, DecTtl, Opaque, Output, SetField
from controller.pipeline.flowspec import FlowSpec, flow
from controller.core import budgets
from controller.pipeline.meters import EGRESS, INGRESS, MeterSpec, meter_id_for
from controller.pipeline.ofctl import render_actions, render_flow
from controller.reconcile.flows import ApplyError

VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]
COOKIE = cookies.make(cookies.Feature.POLICY, "meter", 1)
XID = 0x80012345


@pytest.fixture(params=VERSIONS, ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


# ------------------------------------------------------------ MeterSpec, ids
def test_meter_spec_is_a_hashable_value():
    a = MeterSpec(10, 10_000, 1000)
    assert a == MeterSpec(meter_id=10, rate_kbps=10_000, burst_kbits=1000)
    assert {a, MeterSpec(10, 10_000, 1000)} == {a}
    assert MeterSpec(10, 10_000).burst_kbits == 0
    assert MeterSpec(10, 10_000) != MeterSpec(10, 10_000, 1)
    with pytest.raises(AttributeError):
        a.rate_kbps = 1  # frozen


@pytest.mark.parametrize("args", [(0, 1), (0xFFFF0001, 1), (0xFFFFFFFF, 1), (1, -1),
                                  (1, 1 << 32), (1, 1, -1), (1, 1, 1 << 32)])
def test_meter_spec_refuses_out_of_range(args):
    with pytest.raises(ValueError):
        MeterSpec(*args)


@pytest.mark.parametrize("args", [(1.0, 1), (1, "5"), (1, 1, None), (True, 1)])
def test_meter_spec_refuses_non_ints(args):
    with pytest.raises(TypeError):
        MeterSpec(*args)


def test_meter_spec_bounds_are_accepted():
    MeterSpec(1, 0)                       # rate 0: the read-back mark of a foreign meter
    MeterSpec(0xFFFF0000, (1 << 32) - 1, (1 << 32) - 1)


def test_meter_ids_per_port_and_direction():
    assert meter_id_for(1, EGRESS) == 2 and meter_id_for(1, INGRESS) == 3
    assert meter_id_for(7, "egress") == 14 and meter_id_for(7, "ingress") == 15
    assert meter_id_for(32767, INGRESS) == 65535
    ids = {meter_id_for(p, d) for p in range(1, 32768) for d in (EGRESS, INGRESS)}
    assert len(ids) == 2 * 32767  # unique on a switch
    assert min(ids) == 2 and max(ids) == 65535
    # exactly the personality's meter range: the hub owns them all, and nobody else's overlap
    personality = budgets.PERSONALITY.meters[0]
    assert ids == set(range(personality.first, personality.last + 1))
    assert all(budgets.owns_meter(i) for i in ids)
    assert not budgets.owns_meter(1) and not budgets.owns_meter(0xFFFFFFFD)


@pytest.mark.parametrize("port, direction", [(0, EGRESS), (32768, INGRESS), (-1, EGRESS),
                                             (0xFFFFFFFE, EGRESS), (1.0, EGRESS), (True, EGRESS),
                                             (1, "in"), (1, "EGRESS"), (1, None)])
def test_meter_id_for_refuses(port, direction):
    with pytest.raises(ValueError):
        meter_id_for(port, direction)


# -------------------------------------------------------- FlowSpec.meter
def test_meter_is_behaviour_not_identity():
    a = flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE, meter=10)
    b = flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE)
    assert a.meter == 10 and b.meter is None
    assert a.key == b.key
    assert a != b and not a.same_behaviour(b)
    assert not a.same_behaviour(flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE, meter=11))
    assert a.same_behaviour(flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE, meter=10))
    assert hash(a) == hash(flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE, meter=10))
    # positional constructions keep their meaning: meter comes after cookie
    assert FlowSpec(3, 100, a.match, (Output(1),), None, COOKIE, 10) == a
    assert FlowSpec(3, 100, a.match, (Output(1),), None, COOKIE) == b


def parse_flow_mod(dp, buf: bytes):
    version, msg_type, length, xid = struct.unpack_from("!BBHI", buf)
    return ofproto_parser.msg(dp, version, msg_type, length, xid, buf)


def roundtrip(dp, spec: FlowSpec):
    msg = ofcodec.flow_add(dp, spec)
    msg.serialize()
    return parse_flow_mod(dp, bytes(msg.buf))


METERED = [
    flow(3, 100, {"in_port": 5}, [Output(1)], cookie=COOKIE, meter=10),
    flow(3, 100, {"in_port": 5}, meter=11),                                   # meter only
    flow(3, 100, {"in_port": 5}, goto=4, meter=65535),                        # meter + goto
    flow(61, 7, {"eth_type": 0x0800, "ipv4_dst": "10.0.1.10"},
         [SetField("eth_dst", "00:00:00:00:01:0a"), DecTtl(), Output(2)], goto=62,
         cookie=COOKIE, meter=2),
    flow(3, 5, {"eth_type": 0x0800}, [Conntrack(True, 5)], goto=4, meter=3),
    FlowSpec(0, 0, (), meter=0xFFFF0000),
]


@pytest.mark.parametrize("spec", METERED, ids=range(len(METERED)))
def test_meter_roundtrips_through_bytes(dp, spec):
    back = roundtrip(dp, spec)
    parser = dp.ofproto_parser
    first = back.instructions[0]
    assert isinstance(first, parser.OFPInstructionMeter)  # before the actions
    assert first.meter_id == spec.meter and first.type == 6 and first.len == 8
    assert ofcodec.decode_flow(dp, back) == spec


def test_meter_instruction_bytes(dp):
    spec = flow(3, 100, {"in_port": 5}, [Output(1)], goto=9, meter=0x1234)
    msg = ofcodec.flow_add(dp, spec)
    msg.serialize()
    buf = bytes(msg.buf)
    # header 8 + fixed 40 + match (in_port: 4 + 8 = 12, padded to 16)
    inst = buf[8 + 40 + 16:]
    assert inst[:8] == struct.pack("!HHI", 6, 8, 0x1234)
    assert inst[8:10] == struct.pack("!H", dp.ofproto.OFPIT_APPLY_ACTIONS)
    assert inst[-8:] == struct.pack("!HHB3x", 1, 8, 9)


def test_flow_without_meter_decodes_without_one(dp):
    spec = flow(3, 100, {"in_port": 5}, [Output(1)])
    assert ofcodec.decode_flow(dp, roundtrip(dp, spec)).meter is None


def test_second_meter_instruction_is_opaque(dp):
    parser = dp.ofproto_parser
    msg = parser.OFPFlowMod(dp, table_id=3, priority=1, match=parser.OFPMatch(),
                            instructions=[parser.OFPInstructionMeter(4),
                                          parser.OFPInstructionMeter(5)])
    msg.serialize()
    spec = ofcodec.decode_flow(dp, parse_flow_mod(dp, bytes(msg.buf)))
    assert spec.meter == 4
    assert len(spec.actions) == 1 and isinstance(spec.actions[0], Opaque)


def test_openflow15_has_no_meter_instruction():
    dp15 = ofproto_protocol.ProtocolDesc(ofproto_v1_5.OFP_VERSION)
    spec = flow(3, 100, {"in_port": 5}, [Output(1)], meter=10)
    assert wire.fast_flow_mod_body(dp15, spec) is None
    with pytest.raises(TypeError, match="meter"):
        ofcodec.flow_add(dp15, spec)
    # without a meter 1.5 encodes as before
    ofcodec.flow_add(dp15, flow(3, 100, {"in_port": 5}, [Output(1)])).serialize()


# ------------------------------------------------------- wire byte identity
def ref_flow_mod(dp, spec, xid, delete=False) -> bytes:
    msg = (ofcodec.flow_delete if delete else ofcodec.flow_add)(dp, spec)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def ref_bundle_add(dp, spec, xid, delete=False) -> bytes:
    mod = (ofcodec.flow_delete if delete else ofcodec.flow_add)(dp, spec)
    msg = dp.ofproto_parser.OFPBundleAddMsg(dp, 0x80012300, 3, mod, [])
    msg.set_xid(xid)
    mod.xid = xid
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize("spec", METERED, ids=range(len(METERED)))
def test_wire_writes_the_meter_as_os_ken_does(dp, spec):
    for delete in (False, True):
        body = wire.fast_flow_mod_body(dp, spec, delete)
        assert body is not None  # conntrack too (wire.py writes it)
        got = wire.flow_mod_wire(dp, spec, XID, delete)
        assert got == ref_flow_mod(dp, spec, XID, delete)
        if body is not None:
            assert got[8:] == body
        if dp.ofproto.OFP_VERSION >= ofproto_v1_4.OFP_VERSION:
            assert wire.bundle_add_wire(dp, 0x80012300, 3, spec, XID, delete) == \
                ref_bundle_add(dp, spec, XID, delete)


@pytest.mark.parametrize("meter", [-1, 1 << 32, 1.0, "5"])
def test_wire_leaves_bad_meter_ids_to_os_ken(dp, meter):
    spec = FlowSpec(3, 1, (), (Output(1),), meter=meter)
    assert wire.fast_flow_mod_body(dp, spec) is None
    with pytest.raises(Exception) as reference:
        ref_flow_mod(dp, spec, XID)
    with pytest.raises(type(reference.value)):
        wire.flow_mod_wire(dp, spec, XID)


# ----------------------------------------------------------------- ovs-ofctl
def test_ofctl_renders_the_meter_first():
    assert render_actions(flow(3, 1, meter=5)) == "meter:5"
    assert render_actions(flow(3, 1, goto=4, meter=5)) == "meter:5,goto_table:4"
    assert render_flow(flow(3, 100, {"in_port": 5}, [Output(1)], goto=4, cookie=0xB5,
                            meter=10)) == \
        "table=3,priority=100,cookie=0xb5,in_port=5,actions=meter:10,output:1,goto_table:4"
    assert render_actions(flow(3, 1)) == "drop"


# ------------------------------------------------------------ MeterMods
class Sent:
    """A message the channel sent, decoded here (os-ken parses only what switches send)."""

    def __init__(self, msg_type: int, xid: int, **attrs) -> None:
        self.msg_type, self.xid = msg_type, xid
        self.__dict__.update(attrs)


class Band:
    def __init__(self, type: int, rate: int, burst_size: int) -> None:
        self.type, self.rate, self.burst_size = type, rate, burst_size


def parse(dp, buf: bytes) -> list[Sent]:
    """Decode MeterMods and multipart requests by hand; other messages by header only."""
    ofp = dp.ofproto
    out, offset = [], 0
    while offset < len(buf):
        _, msg_type, length, xid = struct.unpack_from("!BBHI", buf, offset)
        body = bytes(buf[offset + 8:offset + length])
        attrs = {}
        if msg_type == ofp.OFPT_METER_MOD:
            command, flags, meter_id = struct.unpack_from("!HHI", body)
            bands = []
            for b in range(8, len(body), 16):
                t, blen, rate, burst = struct.unpack_from("!HHII", body, b)
                assert blen == 16
                bands.append(Band(t, rate, burst))
            attrs = {"command": command, "flags": flags, "meter_id": meter_id, "bands": bands}
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            mp_type, mp_flags, meter_id = struct.unpack_from("!HH4xI", body)
            attrs = {"mp_type": mp_type, "mp_flags": mp_flags, "meter_id": meter_id}
        out.append(Sent(msg_type, xid, **attrs))
        offset += length
    assert offset == len(buf)
    return out


def test_meter_mods(dp):
    ofp = dp.ofproto
    add = parse(dp, _serialized(ofcodec.meter_add(dp, MeterSpec(5, 10_000, 1000))))[0]
    assert add.msg_type == ofp.OFPT_METER_MOD
    assert (add.command, add.flags, add.meter_id) == (ofp.OFPMC_ADD,
                                                      ofp.OFPMF_KBPS | ofp.OFPMF_BURST, 5)
    (band,) = add.bands
    assert (band.type, band.rate, band.burst_size) == (ofp.OFPMBT_DROP, 10_000, 1000)
    mod = parse(dp, _serialized(ofcodec.meter_modify(dp, MeterSpec(6, 300))))[0]
    assert (mod.command, mod.flags, mod.meter_id) == (ofp.OFPMC_MODIFY, ofp.OFPMF_KBPS, 6)
    assert [(b.rate, b.burst_size) for b in mod.bands] == [(300, 0)]
    delete = parse(dp, _serialized(ofcodec.meter_delete(dp, 7)))[0]
    assert (delete.command, delete.meter_id, delete.bands) == (ofp.OFPMC_DELETE, 7, [])
    req = parse(dp, _serialized(ofcodec.meter_config_request(dp)))[0]
    assert (req.msg_type, req.mp_type, req.mp_flags, req.meter_id) == \
        (ofp.OFPT_MULTIPART_REQUEST, ofp.OFPMP_METER_CONFIG, 0, ofp.OFPM_ALL)


def _serialized(msg) -> bytes:
    msg.set_xid(XID)
    msg.serialize()
    return bytes(msg.buf)


# Meter config entries as a switch sends them: (flags, meter_id, [(band type, rate, burst)]).
KBPS, PKTPS, BURST, STATS = 1, 2, 4, 8
DROP, DSCP = 1, 2


def meter_config_reply(dp, xid: int, configs, more: bool = False) -> bytes:
    body = b""
    for flags, meter_id, bands in configs:
        raw = b"".join(struct.pack("!HHII4x", t, 16, rate, burst) if t == DROP
                       else struct.pack("!HHIIB3x", t, 16, rate, burst, 1)
                       for t, rate, burst in bands)
        body += struct.pack("!HHI", 8 + len(raw), flags, meter_id) + raw
    mp = struct.pack("!HH4x", dp.ofproto.OFPMP_METER_CONFIG, 1 if more else 0)
    return struct.pack("!BBHI", dp.ofproto.OFP_VERSION, dp.ofproto.OFPT_MULTIPART_REPLY,
                       8 + len(mp) + len(body), xid) + mp + body


class FakeDatapath(ofproto_protocol.ProtocolDesc):
    """Parses what the channel sends, answers barriers and meter config requests."""

    id = 0xB5

    def __init__(self, version: int, configs=()) -> None:
        super().__init__(version)
        self.channel: OsKenChannel | None = None
        self.configs = list(configs)
        self.received: list = []
        self.refuse: set[int] = set()   # meter ids whose MeterMods get an error

    def send(self, buf: bytes) -> bool:
        ofp = self.ofproto
        for msg in parse(self, buf):
            self.received.append(msg)
            if msg.msg_type == ofp.OFPT_METER_MOD and msg.meter_id in self.refuse:
                self.channel.on_reply(Error(msg.xid, ofp.OFPET_METER_MOD_FAILED,
                                            ofp.OFPMMFC_UNKNOWN_METER), is_error=True)
            if msg.msg_type == ofp.OFPT_BARRIER_REQUEST:
                self.channel.on_reply(Error(msg.xid, 0, 0))
            if msg.msg_type == ofp.OFPT_MULTIPART_REQUEST:
                assert msg.mp_type == ofp.OFPMP_METER_CONFIG and msg.meter_id == ofp.OFPM_ALL
                half = len(self.configs) // 2  # in two parts: REPLY_MORE, then the rest
                for part, more in ((self.configs[:half], True), (self.configs[half:], False)):
                    reply = meter_config_reply(self, msg.xid, part, more)
                    self.channel.on_reply(ofproto_parser.msg(self, self.ofproto.OFP_VERSION,
                                                             ofp.OFPT_MULTIPART_REPLY, len(reply),
                                                             msg.xid, reply))
        return True


class Error:
    def __init__(self, xid: int, type: int, code: int) -> None:
        self.xid, self.type, self.code = xid, type, code


def connected(version: int, configs=()) -> tuple[FakeDatapath, OsKenChannel]:
    dp = FakeDatapath(version, configs)
    dp.channel = OsKenChannel(dp, timeout=5)
    return dp, dp.channel


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_channel_reads_meters_back(version):
    _, channel = connected(version, [
        (KBPS | BURST, 5, [(DROP, 10_000, 1000)]),
        (KBPS, 6, [(DROP, 300, 300)]),              # OVS reports burst = rate without BURST
        (KBPS | STATS, 7, [(DROP, 400, 0)]),        # stats only counts
        (PKTPS, 8, [(DROP, 100, 0)]),               # foreign shapes: rate 0
        (KBPS, 9, [(DROP, 100, 0), (DROP, 200, 0)]),
        (KBPS, 10, [(DSCP, 100, 0)]),
        (KBPS, 11, []),
        (KBPS | BURST, 12, [(DROP, 100, 0)]),
        (KBPS, 13, [(DROP, 0, 0)]),
        (KBPS | PKTPS, 14, [(DROP, 100, 0)]),
        (KBPS, 0xFFFFFFFE, [(DROP, 100, 0)]),       # OVS's controller meter: left out
    ])
    assert channel.meters() == [MeterSpec(5, 10_000, 1000), MeterSpec(6, 300), MeterSpec(7, 400),
                                *(MeterSpec(i, 0) for i in range(8, 15))]


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_channel_reads_no_meters(version):
    _, channel = connected(version)
    assert channel.meters() == []


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_meters_sends_add_modify_delete_then_a_barrier(version):
    dp, channel = connected(version)
    ofp = dp.ofproto
    channel.apply_meters(add=[MeterSpec(2, 1000), MeterSpec(3, 2000, 100)],
                         modify=[MeterSpec(4, 500)], delete=[5, 6])
    got = [(m.command, m.meter_id, m.flags, [(b.rate, b.burst_size) for b in m.bands])
           for m in dp.received[:-1]]
    assert got == [(ofp.OFPMC_ADD, 2, ofp.OFPMF_KBPS, [(1000, 0)]),
                   (ofp.OFPMC_ADD, 3, ofp.OFPMF_KBPS | ofp.OFPMF_BURST, [(2000, 100)]),
                   (ofp.OFPMC_MODIFY, 4, ofp.OFPMF_KBPS, [(500, 0)]),
                   (ofp.OFPMC_DELETE, 5, 0, []), (ofp.OFPMC_DELETE, 6, 0, [])]
    assert dp.received[-1].msg_type == ofp.OFPT_BARRIER_REQUEST
    xids = [m.xid for m in dp.received]
    assert xids == list(range(xids[0], xids[0] + len(xids)))
    dp.received.clear()
    channel.apply_meters([], [], [])
    assert [m.msg_type for m in dp.received] == [ofp.OFPT_BARRIER_REQUEST]


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_meters_reports_refusals(version):
    dp, channel = connected(version)
    dp.refuse = {4}
    with pytest.raises(ApplyError, match=r"meter change \(type=12 code=3\)"):
        channel.apply_meters(add=[MeterSpec(2, 1000)], modify=[MeterSpec(4, 500)])


@pytest.mark.parametrize("version", VERSIONS, ids=["of13", "of14"])
def test_apply_meters_encodes_everything_before_sending(version):
    dp, channel = connected(version)
    with pytest.raises(struct.error):
        channel.apply_meters(add=[MeterSpec(2, 1000)], delete=[1 << 32])
    assert dp.received == []
