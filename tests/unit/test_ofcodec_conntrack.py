"""Personality flows (conntrack with nat, ct_state matches, learn) survive the os-ken wire round trip."""
import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition,
                                            connection_cookie, interface_zone)
from controller.pipeline import ofcodec
from controller.pipeline.actions import (Conntrack, DecTtl, Learn, LearnMatch, Nat, Opaque,
                                         Output, SetField)
from controller.pipeline.flowspec import flow

LOCKDOWN = {"name": "lockdown", "ip_addresses": ["10.0.1.1"], "default_action": "deny",
            "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                "action": "allow"},
                               {"protocol": "udp", "port": "1000-1999", "direction": "egress",
                                "action": "allow"}]}
FULL = {**LOCKDOWN, "dns_servers": ["10.0.9.53", "10.0.9.54"],
        "routing_table": [{"destination": "192.168.0.0/16", "next_hop": "10.0.1.20"},
                          {"destination": "172.16.0.0/12", "next_hop": "10.0.1.99"}],
        "qos_settings": {"priority": 5}}
IFACE = Interface(dpid=0xA01, port=2, mac="02:00:0a:00:01:01")
CTX = Context(macs={"10.0.1.20": "02:00:0a:00:01:14"})


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


@pytest.mark.parametrize("body", [LOCKDOWN, FULL], ids=["lockdown", "dns-routes-dscp"])
def test_every_personality_and_transition_flow_roundtrips(dp, body):
    policy = PersonalityPolicy.from_body("lockdown", body, 3)
    flows = (list(compile_personality(IFACE, policy, ctx=CTX))
             + list(compile_transition(IFACE, policy, interface_zone(IFACE, 1), CTX)))
    kinds = {type(a) for f in flows for a in f.actions}
    assert {Conntrack, Learn, Output} <= kinds
    if body is FULL:
        assert {SetField, DecTtl} <= kinds
        assert any(a.nat is not None for f in flows for a in f.actions
                   if isinstance(a, Conntrack))
    for spec in flows:
        back = roundtrip(dp, spec)
        assert not any(isinstance(a, Opaque) for a in back.actions), back
        assert back == spec


@pytest.mark.parametrize("action", [
    Conntrack(), Conntrack(commit=True, zone=9), Conntrack(zone=65535, table=61),
    Conntrack(zone=4, table=3, nat=Nat()),
    Conntrack(commit=True, zone=4, nat=Nat(dst="10.0.9.53", dst_port=53)),
    Conntrack(commit=True, zone=4, nat=Nat(dst="10.0.9.53")),
    Conntrack(commit=True, zone=4, nat=Nat(src="192.0.2.1")),
], ids=str)
def test_conntrack_variants(dp, action):
    spec = flow(3, 10, {"eth_type": 0x0800}, [action])
    assert roundtrip(dp, spec) == spec


@pytest.mark.parametrize("specs", [
    (LearnMatch("reg0", 32, src="ipv4_src"), LearnMatch("reg1", 32, src="ipv4_dst"),
     LearnMatch("reg3", 8, src="ip_proto"), LearnMatch("reg4", 32, value=7),
     LearnMatch("reg2", 16, 0, src="tcp_src"), LearnMatch("reg2", 16, 16, src="tcp_dst")),
    (LearnMatch("reg2", 16, 16, src="udp_src"), LearnMatch("reg2", 16, 0, src="udp_dst")),
    (LearnMatch("reg5", 8, 8, src="reg6", src_ofs=24),),
    (),
], ids=["tcp-connection", "udp-ports", "partial-regs", "no-specs"])
def test_learn_roundtrips(dp, specs):
    learn = Learn(table=63, cookie=connection_cookie(IFACE, 5), idle_timeout=3, priority=1,
                  specs=specs)
    spec = flow(4, 20, {"eth_type": 0x0800, "ip_proto": 6}, [learn, SetField("ip_dscp", 40)],
                goto=5)
    assert roundtrip(dp, spec) == spec
    full = Learn(table=63, cookie=1, idle_timeout=10, hard_timeout=20, specs=specs)
    assert roundtrip(dp, flow(62, 1, actions=[full, Output(1)])).actions == (full, Output(1))


def test_nat_and_learn_match_check_their_arguments():
    for bad in (dict(dst="10.0.0.1", src="10.0.0.2"), dict(dst_port=53),
                dict(dst="10.0.0.1", dst_port=0), dict(dst="10.0.0.1", dst_port=65536)):
        with pytest.raises(ValueError):
            Nat(**bad)
    with pytest.raises(ValueError):   # an address to translate to needs commit
        Conntrack(zone=1, nat=Nat(dst="10.0.0.1"))
    assert Conntrack(zone=1, nat=Nat()).nat == Nat()   # un-NAT only: no commit needed
    for bad in (dict(), dict(src="ip_proto", value=1), dict(src="reg0", n_bits=0),
                dict(src="reg0", n_bits=1024)):
        with pytest.raises(ValueError):
            LearnMatch("reg1", **{"n_bits": 8, **bad})
