"""Personality flows (conntrack actions, ct_state matches) survive the os-ken wire round trip."""
import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.compile.personality import (Interface, PersonalityPolicy, compile_personality,
                                            compile_transition)
from controller.pipeline import ofcodec
from controller.pipeline.actions import Conntrack

LOCKDOWN = {"ip_addresses": ["10.0.1.1"], "default_action": "deny",
            "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                "action": "allow"},
                               {"protocol": "udp", "port": "1000-1999", "direction": "egress",
                                "action": "allow"}]}


@pytest.fixture(params=[ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION], ids=["of13", "of14"])
def dp(request):
    return ofproto_protocol.ProtocolDesc(request.param)


def roundtrip(dp, spec):
    msg = ofcodec.flow_add(dp, spec)
    msg.set_xid(7)
    msg.serialize()
    back = dp.ofproto_parser.OFPFlowMod.parser(dp, msg.version, msg.msg_type, msg.msg_len,
                                               msg.xid, msg.buf)
    return ofcodec.decode_flow(dp, back)


def test_every_personality_and_transition_flow_roundtrips(dp):
    iface = Interface(dpid=0xA01, port=2, mac="02:00:0a:00:01:01")
    policy = PersonalityPolicy.from_body("lockdown", LOCKDOWN, 3)
    flows = list(compile_personality(iface, policy)) + list(compile_transition(iface, 7))
    assert any(isinstance(a, Conntrack) for f in flows for a in f.actions)
    for spec in flows:
        assert roundtrip(dp, spec) == spec


@pytest.mark.parametrize("action", [Conntrack(), Conntrack(commit=True, zone=9),
                                    Conntrack(zone=65535, table=61)])
def test_conntrack_variants(dp, action):
    from controller.pipeline.flowspec import flow
    spec = flow(3, 10, {"eth_type": 0x0800}, [action])
    assert roundtrip(dp, spec) == spec
