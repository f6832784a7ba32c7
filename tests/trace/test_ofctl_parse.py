"""Rendered flows that Open vSwitch's own parser accepts: `ovs-ofctl parse-flows`.

`controller/pipeline/ofctl.py` renders FlowSpecs as ovs-ofctl text (for
dry runs, `hubctl`, and the trace tier's bundles).  Here every kind of flow the
compilers and codecs produce is handed to `ovs-ofctl parse-flows`, which
parses each line as a switch would (prerequisites included) without a switch,
and the output is checked against what was meant.  The flows themselves are
the unit tests' samples; this tier only adds the real parser.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from controller.features.personality.compile import compile_transition, connection_cookie
from controller.features.personality.vpn import compile_vpn
from controller.pipeline.actions import Conntrack
from controller.pipeline.flowspec import FlowSpec, flow
from controller.pipeline.ofctl import render_actions, render_flow, render_flows
from tests.trace.conftest import run
from tests.unit import test_applications, test_learn_nat, test_personality_compile, test_vpn_compile
from tests.unit.test_ct_mark import MARKED
from tests.unit.test_meters import METERED
from tests.unit.test_ofctl_render import fabric_flows

pytestmark = pytest.mark.trace


def parse_flows(tmp_path: Path, flows: list[FlowSpec], version: str = "OpenFlow14") -> str:
    """What `ovs-ofctl parse-flows` makes of the rendered flows (one FLOW_MOD each)."""
    path = tmp_path / f"flows-{version}.txt"
    path.write_text(render_flows(flows))
    out = run("ovs-ofctl", "-O", version, "parse-flows", str(path))
    assert out.count("OFPT_FLOW_MOD") == len(flows), out
    return out


def test_every_fabric_flow_parses(ovs, tmp_path):
    parse_flows(tmp_path, fabric_flows())


def test_personality_flows_parse(ovs, tmp_path):
    t = test_personality_compile
    body = {**t.FULL, "ip_addresses": [t.IP, "10.0.1.11"], "firewall_rules": [
        {"protocol": "tcp", "port": "1000-1999", "source": "10.0.0.0/8", "action": "allow"},
        {"protocol": "udp", "port": 53, "direction": "egress", "action": "allow"},
        {"protocol": "icmp", "action": "allow"}]}
    flows = t.compiled(body, t.CTX) + compile_transition(t.IFACE, t.policy(body), t.ZONE, t.CTX)
    out = parse_flows(tmp_path, flows)
    assert "ct_state=+new+trk" in out
    assert "ct(commit,zone=7,exec(load:0x1->NXM_NX_CT_MARK[0..2]))" in out
    assert "ct_mark=0x1/0x1" in out and "ct_mark=0x8/0x8" in out
    assert "ct(table=3,zone=7,nat)" in out and "ct(table=61,zone=7,nat)" in out
    assert "nat(dst=10.0.9.53:53)" in out and "tp_dst=0x400/0xfe00" in out
    cookie = f"cookie=0x{connection_cookie(t.IFACE, t.ZONE):x}"
    assert out.count("learn(table=63,hard_timeout=3,priority=1," + cookie) == 2 * 6
    assert "NXM_NX_REG2[0..15]=NXM_OF_TCP_SRC[],NXM_NX_REG2[16..31]=NXM_OF_TCP_DST[]" in out
    assert "NXM_NX_REG2[0..15]=NXM_OF_UDP_DST[],NXM_NX_REG2[16..31]=NXM_OF_UDP_SRC[]" in out
    assert "set_field:24->ip_dscp,goto_table:5" in out
    assert ("set_field:02:b5:00:00:00:01->eth_src,set_field:00:00:00:00:01:14->eth_dst,"
            "dec_ttl,goto_table:50") in out
    assert "nw_dst=10.9.0.0/16 cookie" in out and "actions=CONTROLLER:65535" in out


def test_application_policy_flows_parse(ovs, tmp_path):
    parse_flows(tmp_path, test_applications.compiled())


def test_vpn_flows_parse(ovs, tmp_path):
    t = test_vpn_compile
    parse_flows(tmp_path, compile_vpn(t.IFACE, t.vpn(), (t.IP,), 9, t.ROUTER, t.C)
                + compile_vpn(t.IFACE, t.vpn(remote_prefixes=["0.0.0.0/0"]), (), 9, t.ROUTER, t.C))


def test_ct_marks_parse(ovs, tmp_path):
    flows = [flow(3, 100 + i, {"eth_type": 0x0800, "ct_mark": (i & 1, 1)}, [a], cookie=1)
             for i, a in enumerate(MARKED)]
    out = parse_flows(tmp_path, flows)
    assert "exec(load:0x2->NXM_NX_CT_MARK[1..2])" in out and "ct_mark=0x1/0x1" in out
    assert "exec(set_field:0x1->ct_mark,nat(dst=10.0.9.53:53))" in out


def test_learn_and_nat_actions_parse(ovs, tmp_path):
    """Prerequisites included: each learn or NAT flow has the match it needs."""
    t = test_learn_nat
    flows = [flow(4, 10, t.TCP, [learn], goto=10) for learn in t.LEARNS]
    flows[2] = flow(4, 11, t.UDP, [t.LEARNS[2]])
    flows += [flow(3, 10 + i, t.UDP, [ct]) for i, ct in enumerate(t.CONNTRACKS)]
    out = parse_flows(tmp_path, flows)
    assert "nat(dst=10.0.0.53:53)" in out and "NXM_OF_TCP_SRC[]" in out
    assert "ct(commit,zone=5" in render_flow(flows[len(t.LEARNS)])


@pytest.mark.parametrize("version", ["OpenFlow13", "OpenFlow14"])
def test_metered_flows_parse_as_the_same_instructions(ovs, tmp_path, version):
    flows = [f for f in METERED if not any(isinstance(a, Conntrack) for a in f.actions)]
    out = parse_flows(tmp_path, flows, version)
    for f in flows:
        assert f"actions={render_actions(f)}" in out, (f, out)
