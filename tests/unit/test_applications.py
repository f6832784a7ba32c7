"""The application access policy: rules, verdicts on first payloads, and the flows that
enforce it in the personality's firewall and count tables."""
from __future__ import annotations

import pytest

from controller.features.personality.applications import (ALLOW, APP_ADMITTED, APP_DENIED_DROP,
                                             APP_INSPECT_PUNT, DENY, INSPECT,
                                             ApplicationPolicy, Signature, verdict_actions)
from controller.features.personality.compile import (CT_COMMITTED_NEW, CT_ESTABLISHED, CT_INVALID,
                                            DNS_ALLOWED, PersonalityPolicy, compile_personality,
                                            compile_transition)
from controller.features.personality.document import ApplicationAccessPolicy
from controller.pipeline import ctmark, tables
from controller.pipeline.actions import Conntrack, Learn, Output, SetField
from controller.pipeline.ofctl import render_flows

from tests.unit.test_personality_compile import IFACE, IP, MAC, PEER, ZONE, document, lookup

HTTP = {"name": "http", "protocol": "tcp", "port": 80, "signature": "re:^(GET|POST|HEAD) "}
SSH_BANNER = {"name": "ssh-banner", "protocol": "tcp", "port": 80, "signature": "SSH-"}
TELNET = {"name": "telnet", "protocol": "tcp", "port": 23}
HTTPS = {"name": "https", "protocol": "tcp", "port": 443}
QUIZ = {"name": "quiz", "protocol": "udp", "port": 7000, "signature": "QUIZ"}
POLICY = {"allow": [HTTP, HTTPS, QUIZ], "deny": [SSH_BANNER, TELNET]}
BODY = {"name": "web", "ip_addresses": [IP], "default_action": "allow", "application_access_policy": POLICY}
NEW, EST, EST_RPL = 0x21, 0x22, 0x2A


def apps(body=POLICY) -> ApplicationPolicy:
    """`body` as an application_access_policy, parsed by the document model (which checks it)."""
    return ApplicationPolicy.of(ApplicationAccessPolicy.model_validate(body))


def compiled(body=BODY):
    return compile_personality(IFACE, PersonalityPolicy.from_body("web", document(body), 2),
                               zone=ZONE)


def decide(policy, proto, port, payload):
    return policy.port(proto, port).decide(payload)


# --------------------------------------------------------------------- signatures
@pytest.mark.parametrize("text, payload, hit", [
    ("SSH-", b"SSH-2.0-OpenSSH_9.2\r\n", True),
    ("SSH-", b"hello SSH-2.0", True),                      # plain text: anywhere
    ("SSH-", b"ssh-2.0", False),                           # bytes, case matters
    ("re:^(GET|POST|HEAD) ", b"GET / HTTP/1.1\r\n", True),
    ("re:^(GET|POST|HEAD) ", b"xGET / HTTP/1.1", False),   # anchored at the start
    ("re:^(GET|POST|HEAD) ", b"GETTING", False),
    ("re:^\\x13BitTorrent", b"\x13BitTorrent protocol", True),
    ("re:(?i)select .* from", b"x SELECT a FROM t", True),
    ("caf\u00e9", "un café".encode(), True),               # text is matched as UTF-8
])
def test_signature_matches(text, payload, hit):
    assert Signature.of(text).matches(payload) is hit


def test_policy_reads_both_lists_in_order():
    policy = apps()
    assert [(r.name, r.action) for r in policy.rules] == [
        ("http", ALLOW), ("https", ALLOW), ("quiz", ALLOW), ("ssh-banner", DENY), ("telnet", DENY)]
    assert [(p.protocol, p.port) for p in policy.ports()] == \
        [("tcp", 23), ("tcp", 80), ("tcp", 443), ("udp", 7000)]
    assert ApplicationPolicy.of(None) == ApplicationPolicy() == apps({})
    assert policy.port("udp", 80) is None and policy.port("tcp", 8080) is None


# ------------------------------------------------------------------ verdicts
def test_treatment_of_each_port():
    policy = apps()
    assert {(p.protocol, p.port): p.treatment for p in policy.ports()} == {
        ("tcp", 23): DENY, ("tcp", 80): INSPECT, ("tcp", 443): ALLOW, ("udp", 7000): INSPECT}
    assert [(p.protocol, p.port) for p in policy.enforced()] == \
        [("tcp", 23), ("tcp", 80), ("udp", 7000)]


def test_http_only_port_80():
    """allow http by signature, deny the ssh banner: only recognized HTTP passes."""
    policy = apps()
    assert decide(policy, "tcp", 80, b"GET /index.html HTTP/1.1\r\n").action == ALLOW
    assert decide(policy, "tcp", 80, b"POST /form HTTP/1.1\r\n").action == ALLOW
    v = decide(policy, "tcp", 80, b"SSH-2.0-OpenSSH\r\n")
    assert v.action == DENY and "ssh-banner" in v.reason
    v = decide(policy, "tcp", 80, b"hello\n")       # no signature: allow signatures only
    assert v.action == DENY and "admits only 'http'" in v.reason
    # deny signatures are checked first: a payload matching both is refused
    assert decide(policy, "tcp", 80, b"GET SSH-2.0 HTTP/1.1").action == DENY


def test_fallbacks():
    deny_sig_only = apps({"deny": [SSH_BANNER]})
    assert decide(deny_sig_only, "tcp", 80, b"anything").action == ALLOW
    assert decide(deny_sig_only, "tcp", 80, b"SSH-2.0").action == DENY
    plain_and_sig = apps({"allow": [{"name": "web", "protocol": "tcp", "port": 80}],
                          "deny": [SSH_BANNER]})
    assert plain_and_sig.port("tcp", 80).treatment == INSPECT
    assert decide(plain_and_sig, "tcp", 80, b"hello").action == ALLOW
    assert decide(plain_and_sig, "tcp", 80, b"SSH-2.0").action == DENY
    deny_wins = apps({"allow": [HTTP, {"name": "web", "protocol": "tcp", "port": 80}],
                      "deny": [{"name": "no-web", "protocol": "tcp", "port": 80}]})
    assert deny_wins.port("tcp", 80).treatment == DENY
    assert deny_wins.port("tcp", 80).fallback("x").action == DENY
    # without payload, the same fallback, saying why
    v = apps().port("tcp", 80).fallback("no payload in 4 packets")
    assert v.action == DENY and v.reason.startswith("no payload in 4 packets")
    assert apps().port("udp", 7000).decide(b"QUIZ 1").action == ALLOW
    assert apps().port("udp", 7000).decide(b"quiz 1").action == DENY


def marked(direction, verdict, table=None):
    """The Conntrack re-committing a connection with a verdict in `direction`'s field."""
    mark, mask = ctmark.commit(direction, verdict)
    return Conntrack(commit=True, zone=ZONE, table=table, mark=mark, mark_mask=mask)


def field(direction, value):
    """A ct_mark value with `value` in `direction`'s field."""
    return value << ctmark.SHIFT[direction]


def test_verdict_actions_pin_the_verdict_in_conntrack():
    allow, deny = apps().port("tcp", 80).decide(b"GET / "), apps().port("tcp", 80).decide(b"x")
    assert verdict_actions(ZONE, "egress", None, 4) == (Conntrack(zone=ZONE, table=4),)
    assert verdict_actions(ZONE, "ingress", allow, 62) == \
        (marked("ingress", ctmark.APP_ALLOWED, 62),)
    assert verdict_actions(ZONE, "ingress", deny, 62) == (marked("ingress", ctmark.APP_DENIED),)
    assert verdict_actions(ZONE, "egress", allow, 4) == (
        Conntrack(commit=True, zone=ZONE, table=4, mark=0x5, mark_mask=0x7),)
    assert verdict_actions(ZONE, "ingress", deny, 62) == (
        Conntrack(commit=True, zone=ZONE, mark=0x38, mark_mask=0x38),)


# --------------------------------------------------------------------- flows
def _fw(flows, table):
    return [f for f in flows if f.table == table and f.priority > CT_ESTABLISHED]


def test_firewall_flows_drop_denied_and_punt_inspected_both_ways():
    flows = compiled()
    for table, own, other, base in ((3, "egress", "ingress", {"in_port": 1, "eth_src": MAC}),
                                    (61, "ingress", "egress", {"eth_dst": MAC})):
        fw = _fw(flows, table)
        assert sorted(f.priority for f in fw) == \
            [CT_COMMITTED_NEW, APP_INSPECT_PUNT, APP_DENIED_DROP, APP_DENIED_DROP, CT_INVALID]
        assert CT_INVALID > APP_DENIED_DROP > APP_INSPECT_PUNT > CT_COMMITTED_NEW
        ip = {**base, "eth_type": 0x0800}
        drops = {dict(f.match)["ct_state"]: f for f in fw if f.priority == APP_DENIED_DROP}
        # the opener's packets by the table's own field, replies by the other one
        assert dict(drops[(0x20, 0x28)].match) == {**ip, "ct_state": (0x20, 0x28),
                                                   "ct_mark": ctmark.app(own, ctmark.APP_DENIED)}
        assert dict(drops[(0x28, 0x28)].match) == {**ip, "ct_state": (0x28, 0x28),
                                                   "ct_mark": ctmark.app(other, ctmark.APP_DENIED)}
        assert all(f.actions == () and f.goto is None for f in drops.values())
        (punt,) = [f for f in fw if f.priority == APP_INSPECT_PUNT]
        assert dict(punt.match) == {**ip, "ct_state": (0x20, 0x2C),
                                    "ct_mark": ctmark.app(own, ctmark.APP_INSPECT)}
        assert punt.actions == (Output.controller(),) and punt.goto is None


def _packet(ct, mark, proto=6, dport=80, **extra):
    return {"eth_dst": MAC, "eth_type": 0x0800, "ct_state": ct, "ct_mark": mark,
            "ip_proto": proto, "ipv4_src": PEER, "ipv4_dst": IP, "tcp_dst": dport,
            "udp_dst": dport, **extra}


def test_firewall_by_lookup():
    """Ingress: connections opened toward the interface carry their verdict in IN."""
    flows = compiled()
    C = ctmark.COMMITTED
    inspect, allowed, denied = (field("ingress", C | v) for v in
                                (ctmark.APP_INSPECT, ctmark.APP_ALLOWED, ctmark.APP_DENIED))
    punted = lambda p: lookup(flows, 61, p).actions == (Output.controller(),)  # noqa: E731
    # under inspection: the opener's packets go to the controller, new or established
    assert punted(_packet(EST, inspect)) and punted(_packet(NEW, inspect, proto=17, dport=7000))
    # its related packets pass as usual
    assert lookup(flows, 61, _packet(0x24, inspect)).goto == 62
    # pinned: allowed connections pass (one-way UDP too), denied ones are dropped
    assert lookup(flows, 61, _packet(EST, allowed)).goto == 62
    assert lookup(flows, 61, _packet(NEW, allowed, proto=17, dport=7000)).priority == \
        CT_COMMITTED_NEW
    for state in (EST, NEW):
        f = lookup(flows, 61, _packet(state, denied))
        assert f.priority == APP_DENIED_DROP and not f.actions and f.goto is None
    # replies coming in belong to connections the interface opened: the OUT field
    out_denied, out_inspect = field("egress", C | ctmark.APP_DENIED), field(
        "egress", C | ctmark.APP_INSPECT)
    assert lookup(flows, 61, _packet(EST_RPL, out_denied)).priority == APP_DENIED_DROP
    assert lookup(flows, 61, _packet(EST_RPL, out_inspect)).priority == CT_ESTABLISHED
    assert lookup(flows, 61, _packet(EST_RPL, denied)).priority == CT_ESTABLISHED
    # a first packet goes through the rules (here: default allow)
    f = lookup(flows, 61, _packet(NEW, 0))
    assert f.actions == (marked("ingress", ctmark.APP_NONE),) and f.goto == 62


def test_a_commit_by_the_other_end_is_not_trusted():
    """Two interfaces with the same zone number on one datapath share conntrack: what the
    opener's egress committed (OUT) neither admits nor judges anything at the other
    end's ingress, which decides by its own rules and writes only IN."""
    body = {"ip_addresses": [IP], "default_action": "deny", "application_access_policy": POLICY}
    flows = compiled(body)
    opener = field("egress", ctmark.COMMITTED | ctmark.APP_DENIED)
    f = lookup(flows, 61, _packet(NEW, opener, proto=17, dport=9999))
    assert f.priority == 100 and not f.actions, "the default deny, not the other end's commit"
    f = lookup(flows, 61, _packet(EST, opener))
    assert f.priority == CT_ESTABLISHED, "the other end's verdict is not ours"


def test_count_flows_mark_connections_the_firewall_just_admitted():
    flows = compiled()
    for table, direction, base, learn_then in (
            (4, "egress", {"in_port": 1, "eth_src": MAC}, ()),
            (62, "ingress", {"eth_dst": MAC}, (Output(1),))):
        app = {}
        for f in flows:
            if f.table == table and f.priority == APP_ADMITTED:
                m = dict(f.match)
                app[(m["ip_proto"], m.get("tcp_dst", m.get("udp_dst")))] = f
        assert set(app) == {(6, 23), (6, 80), (17, 7000)}, "not https: allow-only needs no flow"
        for f in app.values():
            m = dict(f.match)
            assert m["ct_state"] == (0, 0x20), "-trk: committed in this pass by a rule"
            assert {k: m[k] for k in base} == base and m["eth_type"] == 0x0800
        assert app[(6, 23)].actions == (marked(direction, ctmark.APP_DENIED),)
        assert app[(6, 23)].goto is None
        inspect = marked(direction, ctmark.APP_INSPECT)
        tcp = app[(6, 80)]
        plain_tcp = lookup(flows, table, {**base, "eth_type": 0x0800, "ip_proto": 6,
                                          "ct_state": 0x22, "tcp_dst": 80})
        assert tcp.actions == (inspect, *plain_tcp.actions) and tcp.goto == plain_tcp.goto
        assert isinstance(tcp.actions[1], Learn) and tcp.actions[2:] == learn_then
        assert app[(17, 7000)].actions == (inspect, Output.controller())
        assert app[(17, 7000)].goto is None


def test_dscp_and_meter_apply_to_the_inspected_syn_too():
    body = {**BODY, "qos_settings": {"priority": 2, "egress_rate_kbps": 1000}}
    flows = compiled(body)
    (syn,) = [f for f in flows if f.table == 4 and f.priority == APP_ADMITTED
              and dict(f.match).get("tcp_dst") == 80]
    assert SetField("ip_dscp", 16) in syn.actions and syn.meter is not None
    assert syn.goto == tables.PERSONALITY_ROUTES.id


def test_no_policy_no_application_flows():
    for body in ({"default_action": "allow"},
                 {"application_access_policy": {"allow": [HTTPS]}},       # allow-only
                 {"application_access_policy": {"allow": [], "deny": []}}):
        flows = compiled(body)
        assert not [f for f in flows if f.priority in (APP_DENIED_DROP, APP_INSPECT_PUNT)
                    or (f.table in (4, 62) and f.priority == APP_ADMITTED)], body
        assert not any(a == Output.controller() for f in flows for a in f.actions)


def test_deny_only_policy_has_no_punt():
    flows = compiled({"application_access_policy": {"deny": [TELNET]}})
    assert sorted(f.priority for f in flows if f.table == 61 and f.priority > 64002) == \
        [APP_DENIED_DROP, APP_DENIED_DROP, CT_INVALID]


def test_dns_to_the_personalitys_servers_is_outside_the_policy():
    body = {**BODY, "dns_servers": ["10.0.9.53"], "application_access_policy": {
        "deny": [{"name": "dns", "protocol": "udp", "port": 53}]}}
    flows = compiled(body)
    query = {"in_port": 1, "eth_src": MAC, "eth_type": 0x0800, "ct_state": NEW, "ct_mark": 0,
             "ip_proto": 17, "ipv4_src": IP, "ipv4_dst": "10.0.9.53", "udp_dst": 53}
    f = lookup(flows, 3, query)
    assert f.priority == DNS_ALLOWED
    # resumed in the count table tracked (ct table=), where -trk application flows do not match
    assert f.actions == (marked("egress", ctmark.APP_NONE, 4),)
    counted = lookup(flows, 4, {**query, "ct_state": NEW})
    assert counted.priority != APP_ADMITTED
    # DNS toward the interface is not the personality's resolver traffic: the policy applies
    assert lookup(flows, 62, _packet(0, 0, proto=17, dport=53)).priority == APP_ADMITTED


def test_transition_keeps_the_application_flows():
    policy = PersonalityPolicy.from_body("web", BODY, 2)
    pers, trans = compile_personality(IFACE, policy, ZONE), compile_transition(IFACE, policy, ZONE)
    app = lambda flows: {(f.key, f.actions, f.goto) for f in flows  # noqa: E731
                         if f.priority in (APP_DENIED_DROP, APP_INSPECT_PUNT)
                         or (f.table in (4, 62) and f.priority == APP_ADMITTED)}
    assert app(trans) == app(pers) and len(app(pers)) == 2 * 3 + 2 * 3
    # one-way UDP committed before the transition keeps flowing; other new ones are dropped
    udp = _packet(NEW, field("ingress", ctmark.COMMITTED), proto=17, dport=9999)
    assert lookup(trans, 61, udp).goto == 62
    assert not lookup(trans, 61, {**udp, "ct_mark": 0}).goto
    assert not lookup(trans, 61, {**udp, "ct_mark": field("egress", ctmark.COMMITTED)}).goto


def test_compile_is_deterministic_and_renders_for_ovs_ofctl():
    """(ovs-ofctl parses them: tests/trace/test_ofctl_parse.py)"""
    assert compiled() == compiled()
    text = render_flows(compiled())
    assert "ct_mark=0x6/0x6" in text and "ct_mark=0x30/0x30" in text
    assert "ct_mark=0x2/0x6" in text and "ct_mark=0x10/0x30" in text
    assert "ct_state=-trk" in text and "ct_state=-rel-rpl+trk" in text
    assert "ct(commit,zone=7,exec(set_field:0x3/0x7->ct_mark))" in text
    assert "ct(commit,zone=7,exec(set_field:0x38/0x38->ct_mark))" in text
