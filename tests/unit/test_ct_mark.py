"""ct_mark: the bit layout, Conntrack's mark, the ct_mark match field, and their
os-ken encoding, read-back decoding and ovs-ofctl rendering."""
from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.pipeline import ctmark, ofcodec, wire
from controller.pipeline.actions import Conntrack, Nat, Opaque, Output
from controller.pipeline.flowspec import flow, make_match
from controller.pipeline.ofctl import render_action


@pytest.fixture(params=[ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION], ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


def roundtrip(dp, spec):
    msg = ofcodec.flow_add(dp, spec)
    msg.set_xid(7)
    msg.serialize()
    back = dp.ofproto_parser.OFPFlowMod.parser(dp, msg.version, msg.msg_type, msg.msg_len,
                                               msg.xid, msg.buf)
    return ofcodec.decode_flow(dp, back), bytes(msg.buf)


# ---------------------------------------------------------------- layout
def test_layout():
    values = [ctmark.APP_NONE, ctmark.APP_INSPECT, ctmark.APP_ALLOWED, ctmark.APP_DENIED]
    assert len(set(values)) == 4 and all(v & ~ctmark.APP_MASK == 0 for v in values)
    assert not ctmark.COMMITTED & ctmark.APP_MASK
    assert ctmark.COMMITTED | ctmark.APP_MASK == ctmark.FIELD
    out, inn = (ctmark.FIELD << ctmark.SHIFT[d] for d in (ctmark.EGRESS, ctmark.INGRESS))
    assert out == 0x7 and inn == 0x38 and not out & inn, "two disjoint fields"
    assert ctmark.committed("egress") == (0x1, 0x1)
    assert ctmark.committed("ingress") == (0x8, 0x8)
    assert ctmark.app("egress", ctmark.APP_DENIED) == (0x6, 0x6)
    assert ctmark.app("ingress", ctmark.APP_INSPECT) == (0x10, 0x30)
    assert ctmark.commit("egress") == (0x1, 0x7)                     # clears its verdict bits
    assert ctmark.commit("ingress", ctmark.APP_ALLOWED) == (0x28, 0x38)
    assert ctmark.replied("egress") == "ingress" and ctmark.replied("ingress") == "egress"
    for bad in (lambda: ctmark.app("egress", ctmark.COMMITTED), lambda: ctmark.commit("up"),
                lambda: ctmark.commit("egress", 0x8)):
        with pytest.raises(ValueError):
            bad()
    assert ctmark.describe(0x5) == "out:committed,allowed"
    assert ctmark.describe(0x31) == "out:committed in:denied"
    assert ctmark.describe(0) == "none" and ctmark.describe(0x41) == "out:committed 0x40"


# ---------------------------------------------------------------- action
@pytest.mark.parametrize("kwargs, error", [
    ({"mark": 1}, "needs commit"),
    ({"commit": True, "mark": -1}, "outside"),
    ({"commit": True, "mark": 1 << 32}, "outside"),
    ({"commit": True, "mark": 0x8, "mark_mask": 0x6}, "outside its mask"),
    ({"commit": True, "mark": 1, "mark_mask": 0}, "mask"),
    ({"commit": True, "mark_mask": 0x6}, "without a mark"),
])
def test_conntrack_mark_is_checked(kwargs, error):
    with pytest.raises(ValueError, match=error):
        Conntrack(**kwargs)


# ---------------------------------------------------------------- codec
MARKED = [
    Conntrack(commit=True, zone=5, mark=1),
    Conntrack(commit=True, zone=5, mark=0),
    Conntrack(commit=True, zone=5, mark=0xFFFFFFFF, table=4),
    Conntrack(commit=True, zone=5, mark=0x4, mark_mask=0x6, table=4),
    Conntrack(commit=True, zone=5, mark=1, nat=Nat(dst="10.0.9.53", dst_port=53), table=4),
    Conntrack(commit=True, zone=5, mark=0x2, mark_mask=0x6, nat=Nat(src="10.0.0.1")),
    Conntrack(commit=True, zone=5, mark=1, nat=Nat()),
]


@pytest.mark.parametrize("action", MARKED, ids=range(len(MARKED)))
def test_marked_conntrack_roundtrips(dp, action):
    spec = flow(3, 9, {"eth_type": 0x0800, "ct_state": (0x21, 0x21), "ct_mark": (1, 1)},
                [action, Output(2)], goto=4, cookie=0xB5 << 56)
    back, buf = roundtrip(dp, spec)
    assert back == spec and not any(isinstance(a, Opaque) for a in back.actions)
    assert wire.flow_mod_wire(dp, spec, 7) == buf, "the bulk encoder writes the same bytes"


def test_mark_encoding(dp):
    parser = dp.ofproto_parser
    whole = ofcodec.encode_action(parser, Conntrack(commit=True, zone=5, mark=3))
    (sf,) = whole.actions
    assert isinstance(sf, parser.OFPActionSetField) and (sf.key, sf.value) == ("ct_mark", 3)
    masked = ofcodec.encode_action(parser, Conntrack(commit=True, zone=5, mark=2, mark_mask=6,
                                                     nat=Nat(dst="10.0.0.1")))
    load, nat = masked.actions   # the mark first: os-ken's NAT is only right last
    assert isinstance(load, parser.NXActionRegLoad2) and (load.value, load.mask) == (2, 6)
    assert isinstance(nat, parser.NXActionNAT)


def test_what_the_hub_does_not_write_is_opaque(dp):
    parser = dp.ofproto_parser

    def ct(*nested, flags=1):
        return parser.NXActionCT(flags=flags, zone_src="", zone_ofs_nbits=5, recirc_table=4,
                                 alg=0, actions=list(nested))
    for action in (ct(parser.NXActionNAT(flags=0), parser.OFPActionSetField(ct_mark=1)),
                   ct(parser.OFPActionSetField(ct_mark=1), parser.OFPActionSetField(ct_mark=2)),
                   ct(parser.OFPActionSetField(ct_mark=1), flags=0),
                   ct(parser.NXActionRegLoad2(dst="ct_mark", value=8, mask=6)),
                   ct(parser.NXActionRegLoad2(dst="reg0", value=1, mask=1))):
        assert isinstance(ofcodec.decode_action(parser, action), Opaque), action


# ----------------------------------------------------------- match field
def test_ct_mark_match_is_canonical():
    assert make_match({"ct_mark": (3, 0xFFFFFFFF)}) == (("ct_mark", 3),)
    assert make_match({"ct_mark": 3}) == (("ct_mark", 3),)
    assert make_match({"ct_mark": (0x7, 0x6)}) == (("ct_mark", (0x6, 0x6)),)
    for bad in ((1, 0), (1 << 32, 1), (1, 1 << 32), -1):
        with pytest.raises(ValueError):
            make_match({"ct_mark": bad})


def test_ct_mark_match_roundtrips(dp):
    for value in ((0x2, 0x6), 0x5, (0x1, 0x1)):
        spec = flow(61, 64500, {"eth_type": 0x0800, "ct_mark": value}, [Output(1)])
        assert roundtrip(dp, spec)[0] == spec


# ----------------------------------------------------------- rendering
def test_rendering():
    assert render_action(Conntrack(commit=True, zone=7, mark=1)) == \
        "ct(commit,zone=7,exec(set_field:0x1->ct_mark))"
    assert render_action(Conntrack(commit=True, zone=7, mark=0x4, mark_mask=0x6, table=62)) == \
        "ct(commit,zone=7,exec(set_field:0x4/0x6->ct_mark),table=62)"
    assert render_action(Conntrack(commit=True, zone=7, mark=1, table=4,
                                   nat=Nat(dst="10.0.9.53", dst_port=53))) == \
        "ct(commit,zone=7,exec(set_field:0x1->ct_mark,nat(dst=10.0.9.53:53)),table=4)"
    assert render_action(Conntrack(commit=True, zone=7, nat=Nat(dst="10.0.9.53"))) == \
        "ct(commit,zone=7,nat(dst=10.0.9.53))"
