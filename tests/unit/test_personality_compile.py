"""The personality compiler: anti-spoofing, the conntrack firewall, the transition state."""
from __future__ import annotations

import functools
import ipaddress
import shutil
import subprocess
import zlib

import pytest

from controller.compile.fabric import FabricInput, compile_fabric
from controller.compile.personality import (CT_ESTABLISHED, DEFAULT, RULE_TOP, FirewallRule,
                                            Interface, PersonalityPolicy, compile_personality,
                                            compile_transition, interface_zone,
                                            port_range_masks, transition_cookie)
from controller.pipeline import cookies, tables
from controller.pipeline.actions import Conntrack, Output, ct_state
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import flow
from controller.pipeline.ofctl import render_flows
from controller.topology import Host, Subnet

MAC = "00:00:00:00:01:0a"
IP = "10.0.1.10"
IFACE = Interface(1, 1, MAC)
ZONE = 7
ARP, IPV4 = 0x0806, 0x0800
LOCKDOWN = {"ip_addresses": [IP],
            "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                "action": "allow"}],
            "default_action": "deny"}


def policy(body=None, id="lockdown", revision=3) -> PersonalityPolicy:
    return PersonalityPolicy.from_body(id, LOCKDOWN if body is None else body, revision)


def compiled(body=None, **kw):
    return compile_personality(IFACE, policy(body, **kw), zone=ZONE)


def in_table(flows, table):
    return [f for f in flows if f.table == table.id]


# ------------------------------------------------------------------ exact flows
def test_lockdown_flows_exactly():
    c = cookies.make(Feature.PERSONALITY, "lockdown", 3)
    eg = {"in_port": 1, "eth_src": MAC}
    eg_ip = {**eg, "eth_type": IPV4}
    ing = {"eth_dst": MAC}
    ing_ip = {**ing, "eth_type": IPV4}
    commit = Conntrack(commit=True, zone=ZONE)
    est, rel, inv, new = (ct_state(s) for s in ("+trk+est", "+trk+rel", "+trk+inv", "+trk+new"))
    want = [
        flow(0, 210, eg, goto=2, cookie=c),
        flow(2, 300, {**eg, "eth_type": ARP, "arp_spa": IP, "arp_sha": MAC}, goto=10, cookie=c),
        flow(2, 300, eg_ip | {"ipv4_src": IP}, [Conntrack(zone=ZONE, table=3)], cookie=c),
        flow(2, 200, {**eg, "eth_type": ARP}, cookie=c),
        flow(2, 200, eg_ip, cookie=c),
        flow(2, 1, eg, cookie=c),
        flow(3, 65000, eg_ip | {"ct_state": inv}, cookie=c),
        flow(3, 64001, eg_ip | {"ct_state": est}, goto=10, cookie=c),
        flow(3, 64000, eg_ip | {"ct_state": rel}, goto=10, cookie=c),
        flow(3, 100, eg_ip | {"ct_state": new}, cookie=c),
        flow(3, 1, eg_ip, cookie=c),
        flow(50, 110, ing, goto=60, cookie=c),
        flow(60, 300, ing_ip, [Conntrack(zone=ZONE, table=61)], cookie=c),
        flow(60, 200, {**ing, "eth_type": ARP}, [Output(1)], cookie=c),
        flow(60, 1, ing, cookie=c),
        flow(61, 65000, ing_ip | {"ct_state": inv}, cookie=c),
        flow(61, 64001, ing_ip | {"ct_state": est}, [Output(1)], cookie=c),
        flow(61, 64000, ing_ip | {"ct_state": rel}, [Output(1)], cookie=c),
        flow(61, 50000, ing_ip | {"ct_state": new, "ip_proto": 6, "tcp_dst": 443},
             [commit, Output(1)], cookie=c),
        flow(61, 100, ing_ip | {"ct_state": new}, cookie=c),
        flow(61, 1, ing_ip, cookie=c),
    ]
    got = compiled()
    assert sorted(got, key=repr) == sorted(want, key=repr)
    assert [f.table for f in got] == sorted(f.table for f in got)


def test_default_allow_commits_new_connections_both_ways():
    flows = compiled({"ip_addresses": [IP], "default_action": "allow"})
    commit = Conntrack(commit=True, zone=ZONE)
    defaults = {f.table: f for f in flows if f.priority == DEFAULT}
    assert defaults[3].actions == (commit,) and defaults[3].goto == 10
    assert defaults[61].actions == (commit, Output(1)) and defaults[61].goto is None
    assert dict(defaults[3].match)["ct_state"] == ct_state("+trk+new")


def test_rule_fields_and_directions():
    body = {"ip_addresses": [IP], "firewall_rules": [
        {"source": "10.0.2.0/24", "destination": IP, "protocol": "udp", "port": "53",
         "direction": "egress", "action": "deny"},
        {"protocol": "icmp", "action": "allow"},                         # both ways
        {"source": "any", "protocol": "any", "direction": "ingress", "action": "allow"},
    ]}
    flows = compiled(body)
    rules = [f for f in flows if 40000 < f.priority <= RULE_TOP]
    by = {(f.table, f.priority): dict(f.match) for f in rules}
    assert set(by) == {(3, 50000), (3, 49999), (61, 49999), (61, 49998)}
    assert by[(3, 50000)]["ipv4_src"] == ("10.0.2.0", "255.255.255.0")
    assert by[(3, 50000)]["ipv4_dst"] == IP
    assert (by[(3, 50000)]["ip_proto"], by[(3, 50000)]["udp_dst"]) == (17, 53)
    assert by[(3, 49999)]["ip_proto"] == by[(61, 49999)]["ip_proto"] == 1  # ICMP (echo too)
    assert "icmpv4_type" not in by[(3, 49999)]
    assert {"ip_proto", "ipv4_src", "ipv4_dst"}.isdisjoint(by[(61, 49998)])
    deny = next(f for f in rules if f.priority == 50000)
    assert deny.actions == () and deny.goto is None


def test_port_range_rule_is_expanded_into_masks_at_one_priority():
    flows = compiled({"firewall_rules": [{"protocol": "tcp", "port": "1000-1999",
                                          "direction": "ingress", "action": "allow"}]})
    rule = [f for f in flows if f.priority == RULE_TOP]
    ports = sorted(dict(f.match)["tcp_dst"] for f in rule)
    assert ports == sorted(port_range_masks(1000, 1999)) and len(rule) == 7
    assert all(f.table == 61 for f in rule)
    one = compiled({"firewall_rules": [{"protocol": "tcp", "port": 22, "action": "deny"}]})
    assert {dict(f.match)["tcp_dst"] for f in one if f.priority == RULE_TOP} == {22}


# ------------------------------------------------------------------- invariants
def test_deterministic():
    a = compiled()
    assert a == compiled() and hash(a) == hash(compiled())
    shuffled = dict(LOCKDOWN, ip_addresses=["10.0.1.11", IP, "10.0.1.11"])
    reordered = dict(LOCKDOWN, ip_addresses=[IP, "10.0.1.11"])
    assert compiled(shuffled) == compiled(reordered)
    assert policy(shuffled).ip_addresses == ("10.0.1.10", "10.0.1.11")
    assert compile_personality(IFACE, policy()) == compile_personality(IFACE, policy())


@pytest.mark.parametrize("body", [
    LOCKDOWN,
    {"ip_addresses": [], "firewall_rules": [], "default_action": "allow"},
    {"ip_addresses": ["10.0.1.10", "10.0.1.11"], "firewall_rules": [
        {"protocol": "tcp", "port": "1-65535", "action": "allow"},
        {"protocol": "udp", "port": "5000-5100", "direction": "egress", "action": "deny"},
        {"protocol": "icmp", "direction": "ingress", "action": "allow"},
        {"protocol": "any", "source": "192.168.0.0/16", "action": "deny"}]},
], ids=["lockdown", "open", "mixed"])
def test_every_flow_passes_the_layout_and_carries_the_personality_cookie(body):
    flows = compiled(body, id="p-web", revision=70001)
    tables.check(flows)
    assert len({f.key for f in flows}) == len(flows)
    want = cookies.make(Feature.PERSONALITY, "p-web", 70001)
    for f in flows:
        assert f.cookie == want
        info = cookies.parse(f.cookie)
        assert info.feature is Feature.PERSONALITY
        assert info.doc_key == zlib.crc32(b"p-web") and info.version == 70001 & 0xFFFF
    cookie, mask = cookies.document_mask(Feature.PERSONALITY, "p-web")
    assert all(f.cookie & mask == cookie for f in flows)


def test_flows_are_scoped_to_the_interface_and_use_its_zone():
    flows = compiled()
    for f in flows:
        m = dict(f.match)
        if f.table in (0, 2, 3):
            assert (m["in_port"], m["eth_src"]) == (1, MAC), f
        else:
            assert m["eth_dst"] == MAC and "in_port" not in m, f
        for a in f.actions:
            if isinstance(a, Conntrack):
                assert a.zone == ZONE
            elif isinstance(a, Output):
                assert a.port == 1
    default_zone = {a.zone for f in compile_personality(IFACE, policy()) for a in f.actions
                    if isinstance(a, Conntrack)}
    assert default_zone == {interface_zone(IFACE)}


def test_interface_zone():
    zones = {interface_zone(Interface(1, p, MAC)) for p in range(1, 200)}
    assert all(1 <= z <= 0xFFFF for z in zones) and len(zones) == 199
    assert interface_zone(Interface(1, 5, MAC)) == interface_zone(Interface(1, 5, "AA:" + MAC[3:]))
    assert interface_zone(Interface(1, 5, MAC)) != interface_zone(Interface(2, 5, MAC))
    assert Interface(1, 5, "AA:BB:CC:DD:EE:FF").mac == "aa:bb:cc:dd:ee:ff"


def test_hooks_override_the_fabric_flows_of_the_host():
    host = Host(MAC, (IP,), 1, 1)
    subnet = Subnet.from_body("net1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"})
    fabric = compile_fabric(FabricInput(frozenset({1}), frozenset(), (host,), (subnet,),
                                        "02:b5:00:00:00:01"))[1]
    mine = compiled()
    for table, goto in ((tables.CLASSIFY, tables.PERSONALITY_EGRESS),
                        (tables.L2, tables.PERSONALITY_INGRESS)):
        base = [f for f in fabric if f.table == table.id
                and dict(f.match).get("eth_src" if table is tables.CLASSIFY else "eth_dst") == MAC]
        hook = [f for f in mine if f.table == table.id]
        assert len(base) == len(hook) == 1
        assert hook[0].match == base[0].match and hook[0].priority > base[0].priority
        assert hook[0].goto == goto.id
    assert not {f.key for f in fabric} & {f.key for f in mine}


# --------------------------------------------------------------- first match wins
def _field_matches(name, want, packet) -> bool:
    have = packet.get(name)
    if have is None:
        return False
    if name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"):
        net = ipaddress.IPv4Network(want if isinstance(want, str) else "/".join(want))
        return ipaddress.IPv4Address(have) in net
    if isinstance(want, tuple):
        return have & want[1] == want[0] & want[1]
    return have == want


def lookup(flows, table, packet):
    """The flow an OpenFlow table would pick: highest priority among the matching ones."""
    hits = [f for f in flows if f.table == table
            and all(_field_matches(n, v, packet) for n, v in f.match)]
    best = max(f.priority for f in hits)
    top = [f for f in hits if f.priority == best]
    assert len({(f.actions, f.goto) for f in top}) == 1, f"ambiguous: {top}"
    return top[0]


def allowed(flows, table, packet) -> bool:
    f = lookup(flows, table, packet)
    return bool(f.actions) or f.goto is not None


def new_in(proto=6, dport=443, src="10.0.1.20", **extra):
    return {"eth_dst": MAC, "eth_type": IPV4, "ct_state": 0x21, "ip_proto": proto,
            "ipv4_src": src, "ipv4_dst": IP, "tcp_dst": dport, "udp_dst": dport, **extra}


def test_first_matching_rule_wins():
    body = {"ip_addresses": [IP], "default_action": "allow", "firewall_rules": [
        {"source": "10.0.9.0/24", "protocol": "tcp", "port": "20-30", "direction": "ingress",
         "action": "deny"},
        {"protocol": "tcp", "port": "1-1024", "direction": "ingress", "action": "allow"},
        {"protocol": "tcp", "direction": "ingress", "action": "deny"},
        {"protocol": "tcp", "port": 8080, "direction": "ingress", "action": "allow"},  # shadowed
    ]}
    flows = compiled(body)
    assert not allowed(flows, 61, new_in(dport=22, src="10.0.9.5"))     # rule 0
    assert allowed(flows, 61, new_in(dport=22, src="10.0.8.5"))         # rule 1
    assert allowed(flows, 61, new_in(dport=31, src="10.0.9.5"))         # rule 1
    assert allowed(flows, 61, new_in(dport=1024))                       # rule 1
    assert not allowed(flows, 61, new_in(dport=1025))                   # rule 2
    assert not allowed(flows, 61, new_in(dport=8080))                   # rule 2, not 3
    assert allowed(flows, 61, new_in(proto=17, dport=8080))             # default allow
    # the allowing rule commits; the rule's priority follows the list order
    f = lookup(flows, 61, new_in(dport=80))
    assert f.actions == (Conntrack(commit=True, zone=ZONE), Output(1)) and f.priority == RULE_TOP - 1
    # replies of committed connections pass whatever the rules say
    assert allowed(flows, 61, new_in(dport=8080, ct_state=0x22))
    assert allowed(flows, 61, new_in(dport=8080, ct_state=0x24))
    assert not allowed(flows, 61, new_in(dport=80, ct_state=0x30))     # invalid


def test_lockdown_by_lookup():
    flows = compiled()
    eg = {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "ipv4_src": IP}
    assert allowed(flows, 61, new_in(dport=443))
    assert not allowed(flows, 61, new_in(dport=80))
    assert not allowed(flows, 61, new_in(proto=1))
    assert lookup(flows, 3, {**eg, "ct_state": 0x2A, "ip_proto": 6}).goto == 10   # +est+rpl
    assert not allowed(flows, 3, {**eg, "ct_state": 0x21, "ip_proto": 6})
    # anti-spoofing: only the personality's address reaches conntrack
    assert lookup(flows, 2, eg).actions == (Conntrack(zone=ZONE, table=3),)
    assert not allowed(flows, 2, {**eg, "ipv4_src": "10.0.1.99"})
    arp = {"in_port": 1, "eth_src": MAC, "eth_type": ARP, "arp_sha": MAC}
    assert lookup(flows, 2, {**arp, "arp_spa": IP}).goto == 10
    assert not allowed(flows, 2, {**arp, "arp_spa": "10.0.1.99"})
    assert not allowed(flows, 2, {**arp, "arp_spa": IP, "arp_sha": "00:00:00:00:0e:0e"})
    assert not allowed(flows, 2, {"in_port": 1, "eth_src": MAC, "eth_type": 0x86DD})


# ------------------------------------------------------------------ transition
def test_transition_blocks_new_and_keeps_established():
    flows = compile_transition(IFACE, ZONE, [IP])
    tables.check(flows)
    assert {f.cookie for f in flows} == {transition_cookie(IFACE)}
    assert cookies.parse(transition_cookie(IFACE)).feature is Feature.PERSONALITY
    assert not any(DEFAULT < f.priority < CT_ESTABLISHED - 1 for f in flows
                   if f.table in (3, 61)), "no rules in the transition state"
    assert not any(a.commit for f in flows for a in f.actions if isinstance(a, Conntrack))
    assert {a.zone for f in flows for a in f.actions if isinstance(a, Conntrack)} == {ZONE}
    eg = {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "ipv4_src": IP, "ip_proto": 6}
    for state in (0x21, 0x30):
        assert not allowed(flows, 3, {**eg, "ct_state": state})
        assert not allowed(flows, 61, new_in(ct_state=state))
    for state in (0x22, 0x2A, 0x24):
        assert lookup(flows, 3, {**eg, "ct_state": state}).goto == 10
        assert lookup(flows, 61, new_in(ct_state=state)).actions == (Output(1),)
    assert not allowed(flows, 2, {**eg, "ipv4_src": "10.0.1.99"})


def test_transition_reuses_the_personality_structure():
    """Same hooks and tables: switching to and from it replaces flows in place."""
    trans = {f.key for f in compile_transition(IFACE, ZONE, [IP])}
    pers = {f.key for f in compiled()}
    assert trans < pers
    assert {k for k in pers - trans if RULE_TOP - 10000 < k[1] <= RULE_TOP} == pers - trans
    open_ = compile_transition(IFACE, ZONE)   # no addresses: ARP and IPv4 unchecked
    eg = {"in_port": 1, "eth_src": MAC}
    assert lookup(open_, 2, {**eg, "eth_type": IPV4, "ipv4_src": "10.0.1.99"}).actions == \
        (Conntrack(zone=ZONE, table=3),)
    assert lookup(open_, 2, {**eg, "eth_type": ARP, "arp_spa": "10.0.1.99"}).goto == 10
    assert compile_transition(IFACE, ZONE) == open_


# -------------------------------------------------------------- port range masks
def _covered(masks):
    out = set()
    for value, mask in masks:
        size = (~mask & 0xFFFF) + 1
        assert mask == (0xFFFF & ~(size - 1)), f"mask {mask:#x} is not a prefix mask"
        assert value & ~mask & 0xFFFF == 0, f"value {value:#x} has bits outside {mask:#x}"
        block = set(range(value, value + size))
        assert not out & block, "blocks overlap"
        out |= block
    return out


@functools.lru_cache(maxsize=None)
def _fewest(lo: int, hi: int) -> int:
    """Brute force: fewest aligned blocks covering exactly lo..hi (the block holding lo starts at lo)."""
    if lo > hi:
        return 0
    best, size = None, 1
    while lo % size == 0 and lo + size - 1 <= hi and size <= 0x10000:
        n = 1 + _fewest(lo + size, hi)
        best = n if best is None else min(best, n)
        size *= 2
    return best


def test_port_range_masks_exhaustive_over_a_small_range():
    for lo in range(0, 70):
        for hi in range(lo, 70):
            masks = port_range_masks(lo, hi)
            assert _covered(masks) == set(range(lo, hi + 1)), (lo, hi)
            assert len(masks) == _fewest(lo, hi), (lo, hi, masks)


@pytest.mark.parametrize("lo, hi, want", [
    (0, 65535, [(0, 0)]),
    (443, 443, [(443, 0xFFFF)]),
    (0, 0, [(0, 0xFFFF)]),
    (65535, 65535, [(65535, 0xFFFF)]),
    (1024, 2047, [(1024, 0xFC00)]),
    (32768, 65535, [(32768, 0x8000)]),
    (1024, 65535, [(1024, 0xFC00), (2048, 0xF800), (4096, 0xF000), (8192, 0xE000),
                   (16384, 0xC000), (32768, 0x8000)]),
])
def test_port_range_masks_known_answers(lo, hi, want):
    assert port_range_masks(lo, hi) == want


def test_port_range_masks_full_user_range():
    masks = port_range_masks(1, 65535)
    assert masks == [(1 << i, 0xFFFF & ~((1 << i) - 1)) for i in range(16)]
    assert _covered(masks) == set(range(1, 65536))
    worst = port_range_masks(1, 65534)
    assert _covered(worst) == set(range(1, 65535)) and len(worst) == 30


@pytest.mark.parametrize("lo, hi", [(5, 4), (-1, 10), (0, 65536), (1.5, 3)])
def test_port_range_masks_refuses_bad_ranges(lo, hi):
    with pytest.raises(ValueError):
        port_range_masks(lo, hi)


# ------------------------------------------------------------------ the input
def test_policy_from_body_defaults_and_other_fields_ignored():
    p = PersonalityPolicy.from_body("p1", {"name": "web", "persona": {"x": 1}}, 2)
    assert (p.ip_addresses, p.firewall_rules, p.default_action, p.revision) == ((), (), "deny", 2)
    r = FirewallRule.from_body({"action": "ALLOW"})
    assert (r.protocol, r.direction, r.action, r.source, r.destination, r.ports) == \
        ("any", "both", "allow", None, None, None)
    assert FirewallRule.from_body({"action": "deny", "port": "100 - 200",
                                   "protocol": "udp"}).ports == (100, 200)


@pytest.mark.parametrize("rule", [
    {"protocol": "tcp"},                                         # no action
    {"action": "reject"},
    {"action": "allow", "protocol": "sctp"},
    {"action": "allow", "direction": "sideways"},
    {"action": "allow", "protocol": "icmp", "port": 8},          # port without tcp/udp
    {"action": "allow", "port": 80},                             # protocol any
    {"action": "allow", "protocol": "tcp", "port": 0},
    {"action": "allow", "protocol": "tcp", "port": 65536},
    {"action": "allow", "protocol": "tcp", "port": "90-80"},
    {"action": "allow", "protocol": "tcp", "port": "http"},
    {"action": "allow", "protocol": "tcp", "port": True},
    {"action": "allow", "source": "10.0.0.1/24"},                # host bits set
    {"action": "allow", "destination": "fe80::1"},
    {"action": "allow", "protcol": "tcp"},                       # typo: refused, not ignored
])
def test_bad_rules_are_refused(rule):
    with pytest.raises(ValueError):
        PersonalityPolicy.from_body("p", {"firewall_rules": [rule]})


@pytest.mark.parametrize("body", [
    {"ip_addresses": ["10.0.1.300"]},
    {"ip_addresses": "10.0.1.1"},
    {"default_action": "maybe"},
    {"firewall_rules": {"action": "allow"}},
])
def test_bad_policies_are_refused(body):
    with pytest.raises(ValueError):
        PersonalityPolicy.from_body("p", body)


def test_any_source_forms_are_the_same():
    for any_ in (None, "", "any", "*", "0.0.0.0/0"):
        assert FirewallRule.from_body({"action": "allow", "source": any_}).source is None


def test_rendered_flows_parse_with_ovs_ofctl(tmp_path):
    ofctl = shutil.which("ovs-ofctl")
    assert ofctl, "ovs-ofctl is missing: scripts/install installs openvswitch-switch"
    flows = compiled({"ip_addresses": [IP, "10.0.1.11"], "firewall_rules": [
        {"protocol": "tcp", "port": "1000-1999", "source": "10.0.0.0/8", "action": "allow"},
        {"protocol": "udp", "port": 53, "direction": "egress", "action": "allow"},
        {"protocol": "icmp", "action": "allow"}]}) + compile_transition(IFACE, ZONE)
    path = tmp_path / "flows.txt"
    path.write_text(render_flows(flows))
    proc = subprocess.run([ofctl, "-O", "OpenFlow14", "parse-flows", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("OFPT_FLOW_MOD") == len(flows)
    assert "ct_state=+new+trk" in proc.stdout and "ct(commit,zone=7)" in proc.stdout
    assert "ct(table=3,zone=7)" in proc.stdout and "tp_dst=0x400/0xfe00" in proc.stdout
