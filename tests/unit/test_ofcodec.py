"""FlowSpec -> OpenFlow wire bytes -> FlowSpec, for OpenFlow 1.3 and 1.4."""
from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.pipeline import cookies, ofcodec
from controller.pipeline.actions import IN_PORT, DecTtl, Move, Opaque, Output, SetField
from controller.pipeline.flowspec import flow
from controller.core.topology import Host, Link, Subnet

ROUTER = "02:b5:00:00:00:01"


@pytest.fixture(params=[ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION], ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


def wire(dp, msg):
    """Serialize a FlowMod and parse it back as the switch would see it."""
    msg.serialize()
    return dp.ofproto_parser.OFPFlowMod.parser(dp, msg.version, msg.msg_type, msg.msg_len,
                                                msg.xid, msg.buf)


def small_fabric():
    subnets = (Subnet.from_body("blue", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}, 3),
               Subnet.from_body("red", {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"}))
    hosts = (Host("00:00:00:00:01:0a", ("10.0.1.10",), 2, 3),
             Host("00:00:00:00:02:0b", ("10.0.2.11", "10.0.2.12"), 3, 4))
    links = frozenset({Link.of(1, 1, 2, 1), Link.of(1, 2, 3, 1)})
    return compile_fabric(FabricInput(frozenset({1, 2, 3}), links, hosts, subnets, ROUTER))


def test_every_compiled_flow_roundtrips(dp):
    flows = [f for per_switch in small_fabric().values() for f in per_switch]
    assert len(flows) > 50
    kinds = {type(a) for f in flows for a in f.actions}
    assert kinds == {Output, SetField, Move, DecTtl}  # every action kind is exercised
    for spec in flows:
        back = wire(dp, ofcodec.flow_add(dp, spec))
        assert back.command == dp.ofproto.OFPFC_ADD
        assert back.cookie_mask == 0
        assert ofcodec.decode_flow(dp, back) == spec


def test_masked_match_and_set_fields_roundtrip(dp):
    spec = flow(40, 7, {"eth_type": 0x0800, "ipv4_dst": "10.9.0.0/16",
                        "eth_src": ("00:00:00:00:00:00", "01:00:00:00:00:00")},
                [SetField("ipv4_src", "10.9.0.1"), SetField("icmpv4_type", 0),
                 Output(5), Output.controller()], goto=50, cookie=cookies.make(cookies.Feature.POLICY, "p", 2))
    assert ofcodec.decode_flow(dp, wire(dp, ofcodec.flow_add(dp, spec))) == spec


@pytest.mark.parametrize("src,dst,bits", [("eth_src_nxm", "eth_dst_nxm", 48),
                                          ("arp_sha_nxm", "arp_tha_nxm", 48),
                                          ("arp_spa_nxm", "arp_tpa_nxm", 32),
                                          ("ipv4_src_nxm", "ipv4_dst_nxm", 32)])
def test_nxm_named_move_fields_decode_to_oxm_names(dp, src, dst, bits):
    parser = dp.ofproto_parser
    raw = parser.NXActionRegMove(src_field=src, dst_field=dst, n_bits=bits, src_ofs=0, dst_ofs=0)
    assert ofcodec.decode_action(parser, raw) == Move(src[:-4], dst[:-4], bits)
    spec = flow(10, 1, {"in_port": 1}, [Move(src, dst, bits)])
    back = wire(dp, ofcodec.flow_add(dp, spec))
    assert back.instructions[0].actions[0].src_field == src
    assert ofcodec.decode_flow(dp, back).actions == (Move(src[:-4], dst[:-4], bits),)


def test_unmodelled_actions_and_instructions_decode_to_opaque(dp):
    parser, ofp = dp.ofproto_parser, dp.ofproto
    msg = parser.OFPFlowMod(
        dp, cookie=5, table_id=0, priority=3, match=parser.OFPMatch(in_port=1),
        instructions=[
            parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                parser.OFPActionPopVlan(),
                parser.NXActionRegMove(src_field="eth_src", dst_field="eth_dst", n_bits=8,
                                       src_ofs=8, dst_ofs=0),  # offsets are not modelled
                parser.OFPActionOutput(2, 0)]),
            parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionOutput(1)]),
            parser.OFPInstructionGotoTable(10)])
    spec = ofcodec.decode_flow(dp, wire(dp, msg))
    a, b, c, d = spec.actions
    assert isinstance(a, Opaque) and "PopVlan" in a.text
    assert isinstance(b, Opaque) and "RegMove" in b.text
    assert c == Output(2, 0)
    assert isinstance(d, Opaque) and "InstructionActions" in d.text
    assert spec.goto == 10 and spec.cookie == 5
    # an opaque action never equals a desired flow: the reconciler replaces it
    assert not spec.same_behaviour(flow(0, 3, {"in_port": 1}, [Output(2, 0)], goto=10, cookie=5))


def test_encode_refuses_opaque(dp):
    with pytest.raises(TypeError):
        ofcodec.encode_action(dp.ofproto_parser, Opaque("x"))


def test_flow_delete_is_strict_and_carries_the_hub_cookie_mask(dp):
    spec = flow(10, 200, {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": "10.0.1.10"},
                [Output(IN_PORT)], cookie=cookies.make(cookies.Feature.FABRIC, "host:x"))
    back = wire(dp, ofcodec.flow_delete(dp, spec))
    ofp = dp.ofproto
    assert back.command == ofp.OFPFC_DELETE_STRICT
    assert (back.cookie, back.cookie_mask) == cookies.hub_mask() == (0xB5 << 56, 0xFF << 56)
    assert (back.table_id, back.priority) == (10, 200)
    assert back.out_port == ofp.OFPP_ANY and back.out_group == ofp.OFPG_ANY
    assert back.instructions == []
    assert ofcodec.decode_flow(dp, back).match == spec.match


def test_flow_stats_request_filters_by_cookie(dp):
    value, mask = cookies.hub_mask()
    req = ofcodec.flow_stats_request(dp, value, mask)
    assert (req.cookie, req.cookie_mask) == (value, mask)
    assert req.table_id == dp.ofproto.OFPTT_ALL
    req.serialize()  # encodes without error
