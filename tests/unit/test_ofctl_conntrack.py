"""Conntrack action and ct_state match: the data model and the ovs-ofctl rendering."""
from __future__ import annotations

import pytest

from controller.pipeline.actions import (CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_TRK,
                                         Conntrack, Output, ct_state)
from controller.pipeline.flowspec import flow, make_match
from controller.pipeline.ofctl import render_action, render_flow


@pytest.mark.parametrize("action, text", [
    (Conntrack(zone=7, table=3), "ct(zone=7,table=3)"),
    (Conntrack(commit=True, zone=7, table=61), "ct(commit,zone=7,table=61)"),
    (Conntrack(commit=True, zone=65535), "ct(commit,zone=65535)"),
    (Conntrack(), "ct(zone=0)"),
])
def test_conntrack_actions(action, text):
    assert render_action(action) == text


def test_conntrack_is_a_hashable_value_and_checks_its_zone():
    assert Conntrack(True, 5, 3) == Conntrack(commit=True, zone=5, table=3)
    assert len({Conntrack(zone=5), Conntrack(zone=5), Conntrack(zone=6)}) == 2
    for bad in (-1, 65536):
        with pytest.raises(ValueError):
            Conntrack(zone=bad)


def test_ct_state_flags():
    assert ct_state("+trk+new") == (CT_TRK | CT_NEW, CT_TRK | CT_NEW) == (0x21, 0x21)
    assert ct_state("+trk-new") == (CT_TRK, CT_TRK | CT_NEW)
    assert ct_state("+est+rpl") == (CT_EST | CT_RPL, CT_EST | CT_RPL)
    assert ct_state("-inv +rel") == (CT_REL, CT_INV | CT_REL)
    for bad in ("", "trk", "+trk+foo", "+trk+trk", "*new"):
        with pytest.raises(ValueError):
            ct_state(bad)


def test_ct_state_is_rendered_as_flags_in_bit_order():
    f = flow(3, 100, {"eth_type": 0x0800, "ct_state": ct_state("+trk+new")},
             [Conntrack(commit=True, zone=9)], goto=10)
    assert make_match({"ct_state": ct_state("+new+trk")}) == (("ct_state", (0x21, 0x21)),)
    assert render_flow(f) == ("table=3,priority=100,cookie=0x0,eth_type=0x0800,ct_state=+new+trk,"
                              "actions=ct(commit,zone=9),goto_table:10")
    f = flow(61, 1, {"ct_state": ct_state("+trk-new+est-rel-inv+rpl")}, [Output(1)])
    assert "ct_state=-new+est-rel+rpl-inv+trk," in render_flow(f)
    # unknown bits (e.g. snat) or a plain value fall back to numbers ovs-ofctl also takes
    assert "ct_state=0x41/0x41," in render_flow(flow(3, 1, {"ct_state": (0x41, 0x41)}))
    assert "ct_state=33," in render_flow(flow(3, 1, {"ct_state": 0x21}))


def test_masked_transport_ports_render_as_hex():
    f = flow(61, 5, {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": (1024, 0xFC00)})
    assert render_flow(f).endswith(",eth_type=0x0800,ip_proto=6,tcp_dst=0x400/0xfc00,actions=drop")
