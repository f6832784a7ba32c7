"""The personality compiler: anti-spoofing, the conntrack firewall, connection counting,
DNS redirection, the interface's own routes, DSCP marking and the transition state."""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import zlib

import pytest

from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.personality.compile import (CONNECTION_IDLE_SECONDS, COUNT_IP, COUNT_L4,
                                            CT_COMMITTED_NEW, CT_ESTABLISHED, DEFAULT,
                                            DNS_ALLOWED, DNS_REDIRECT,
                                            MAX_PORT, ROUTE_BASE, RULE_TOP, Context,
                                            FirewallRule, Interface, PersonalityPolicy, Route,
                                            compile_personality, compile_transition,
                                            connection_cookie, decode_connection,
                                            interface_zone, port_range_masks, transition_cookie)
from controller.core import budgets
from controller.core.documents import DocumentInvalid
from controller.features.personality.document import parse_personality
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Conntrack, DecTtl, Learn, LearnMatch, Nat, Output,
                                         SetField, ct_state)
from controller.pipeline.cookies import Feature
from controller.pipeline import ctmark
from controller.pipeline.flowspec import flow, make_match
from controller.core.topology import Host, Subnet

MAC = "00:00:00:00:01:0a"
IP = "10.0.1.10"
PEER = "10.0.1.20"
IFACE = Interface(1, 1, MAC)
ZONE = 7
ROUTER = "02:b5:00:00:00:01"
ARP, IPV4 = 0x0806, 0x0800
LOCKDOWN = {"ip_addresses": [IP],
            "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                "action": "allow"}],
            "default_action": "deny"}
DNS1, DNS2 = "10.0.9.53", "10.0.9.54"
GW_MAC, R2_MAC = "00:00:00:00:01:14", "00:00:00:00:01:1e"
CTX = Context(router_mac=ROUTER, macs={PEER: GW_MAC, "10.0.1.30": R2_MAC})
# everything at once: addresses, rules, DNS, routes (one next hop unknown), DSCP
FULL = {"ip_addresses": [IP],
        "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                            "action": "allow"},
                           {"protocol": "icmp", "direction": "egress", "action": "allow"}],
        "default_action": "allow",
        "dns_servers": [DNS1, DNS2],
        "routing_table": [{"destination": "10.8.0.0/16", "next_hop": PEER},
                          {"destination": "10.9.0.0/16", "next_hop": "10.0.1.99"}],
        "qos_settings": {"priority": 3}}

EST, REL, INV, NEW = (ct_state(s) for s in ("+trk+est", "+trk+rel", "+trk+inv", "+trk+new"))
# What a rule's commit stores: COMMITTED in the table's own ct_mark field (OUT / IN).
MARK_OUT, MARK_IN = ctmark.commit(ctmark.EGRESS), ctmark.commit(ctmark.INGRESS)
COMMIT_OUT = Conntrack(commit=True, zone=ZONE, mark=MARK_OUT[0], mark_mask=MARK_OUT[1])
COMMIT_IN = Conntrack(commit=True, zone=ZONE, mark=MARK_IN[0], mark_mask=MARK_IN[1])
COMMIT = {3: COMMIT_OUT, 61: COMMIT_IN}


def document(body: dict) -> dict:
    """`body` as a whole personality document: the model requires a name."""
    return {"name": "test", **body}


def policy(body=None, id="lockdown", revision=3) -> PersonalityPolicy:
    return PersonalityPolicy.from_body(id, document(LOCKDOWN if body is None else body), revision)


def compiled(body=None, ctx=Context(), **kw):
    return compile_personality(IFACE, policy(body, **kw), zone=ZONE, ctx=ctx)


def in_table(flows, table):
    return [f for f in flows if f.table == table.id]


def conntracks(flows):
    return [a for f in flows for a in f.actions if isinstance(a, Conntrack)]


def learns(flows):
    return [a for f in flows for a in f.actions if isinstance(a, Learn)]


def continues_to(f):
    """The table a flow hands the packet to: its goto, or where its ct(table=) resumes."""
    ct = [a.table for a in f.actions if isinstance(a, Conntrack) and a.table is not None]
    assert len(ct) + (f.goto is not None) <= 1, f
    return ct[0] if ct else f.goto


def learn_of(iface, zone, local, peer, ports=None):
    """The Learn a count flow should carry: `local`/`peer` name the packet's IPv4 fields,
    `ports` its (local, peer) transport port fields."""
    specs = [LearnMatch("reg0", 32, src=local), LearnMatch("reg1", 32, src=peer),
             LearnMatch("reg3", 8, src="ip_proto"), LearnMatch("reg4", 32, value=iface.port)]
    if ports:
        specs += [LearnMatch("reg2", 16, 0, src=ports[0]), LearnMatch("reg2", 16, 16, src=ports[1])]
    return Learn(table=63, cookie=connection_cookie(iface, zone),
                 hard_timeout=CONNECTION_IDLE_SECONDS, priority=1, specs=tuple(specs))


# ------------------------------------------------------------------ exact flows
def test_lockdown_flows_exactly():
    c = cookies.make(Feature.PERSONALITY, "lockdown", 3)
    eg = {"in_port": 1, "eth_src": MAC}
    eg_ip = {**eg, "eth_type": IPV4}
    ing = {"eth_dst": MAC}
    ing_ip = {**ing, "eth_type": IPV4}
    out_tcp = learn_of(IFACE, ZONE, "ipv4_src", "ipv4_dst", ("tcp_src", "tcp_dst"))
    out_udp = learn_of(IFACE, ZONE, "ipv4_src", "ipv4_dst", ("udp_src", "udp_dst"))
    out_ip = learn_of(IFACE, ZONE, "ipv4_src", "ipv4_dst")
    in_tcp = learn_of(IFACE, ZONE, "ipv4_dst", "ipv4_src", ("tcp_dst", "tcp_src"))
    in_udp = learn_of(IFACE, ZONE, "ipv4_dst", "ipv4_src", ("udp_dst", "udp_src"))
    in_ip = learn_of(IFACE, ZONE, "ipv4_dst", "ipv4_src")
    want = [
        flow(0, 210, eg, goto=2, cookie=c),
        flow(2, 300, {**eg, "eth_type": ARP, "arp_spa": IP, "arp_sha": MAC}, goto=10, cookie=c),
        flow(2, 300, eg_ip | {"ipv4_src": IP}, [Conntrack(zone=ZONE, table=3)], cookie=c),
        flow(2, 200, {**eg, "eth_type": ARP}, cookie=c),
        flow(2, 200, eg_ip, cookie=c),
        flow(2, 1, eg, cookie=c),
        flow(3, 65000, eg_ip | {"ct_state": INV}, cookie=c),
        flow(3, 64001, eg_ip | {"ct_state": EST}, goto=4, cookie=c),
        flow(3, 64000, eg_ip | {"ct_state": REL}, goto=4, cookie=c),
        flow(3, 64002, eg_ip | {"ct_state": NEW, "ct_mark": (0x1, 0x1)}, goto=4, cookie=c),
        flow(3, 100, eg_ip | {"ct_state": NEW}, cookie=c),
        flow(3, 1, eg_ip, cookie=c),
        flow(4, 20, eg_ip | {"ip_proto": 6}, [out_tcp], goto=5, cookie=c),
        flow(4, 20, eg_ip | {"ip_proto": 17}, [out_udp], goto=5, cookie=c),
        flow(4, 10, eg_ip, [out_ip], goto=5, cookie=c),
        flow(50, 110, ing, goto=60, cookie=c),
        flow(60, 300, ing_ip, [Conntrack(zone=ZONE, table=61)], cookie=c),
        flow(60, 200, {**ing, "eth_type": ARP}, [Output(1)], cookie=c),
        flow(60, 1, ing, cookie=c),
        flow(61, 65000, ing_ip | {"ct_state": INV}, cookie=c),
        flow(61, 64001, ing_ip | {"ct_state": EST}, goto=62, cookie=c),
        flow(61, 64000, ing_ip | {"ct_state": REL}, goto=62, cookie=c),
        flow(61, 64002, ing_ip | {"ct_state": NEW, "ct_mark": (0x8, 0x8)}, goto=62, cookie=c),
        flow(61, 50000, ing_ip | {"ct_state": NEW, "ip_proto": 6, "tcp_dst": 443},
             [COMMIT_IN], goto=62, cookie=c),
        flow(61, 100, ing_ip | {"ct_state": NEW}, cookie=c),
        flow(61, 1, ing_ip, cookie=c),
        flow(62, 20, ing_ip | {"ip_proto": 6}, [in_tcp, Output(1)], cookie=c),
        flow(62, 20, ing_ip | {"ip_proto": 17}, [in_udp, Output(1)], cookie=c),
        flow(62, 10, ing_ip, [in_ip, Output(1)], cookie=c),
    ]
    got = compiled()
    assert sorted(got, key=repr) == sorted(want, key=repr)
    assert [f.table for f in got] == sorted(f.table for f in got)


def test_default_allow_commits_new_connections_both_ways():
    flows = compiled({"ip_addresses": [IP], "default_action": "allow"})
    defaults = {f.table: f for f in flows if f.priority == DEFAULT}
    assert defaults[3].actions == (COMMIT_OUT,) and defaults[3].goto == 4
    assert defaults[61].actions == (COMMIT_IN,) and defaults[61].goto == 62
    assert dict(defaults[3].match)["ct_state"] == NEW


def test_rule_fields_and_directions():
    body = {"ip_addresses": [IP], "firewall_rules": [
        {"source": "10.0.2.0/24", "destination": f"{IP}/32", "protocol": "udp", "port": "53",
         "direction": "egress", "action": "deny"},
        {"protocol": "icmp", "action": "allow"},                         # both ways
        {"source": "0.0.0.0/0", "protocol": "any", "direction": "ingress", "action": "allow"},
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
    allow = {(f.table, f.priority): f for f in rules if f.priority < 50000}
    for (table, _), f in allow.items():
        assert f.actions == (COMMIT[table],)
        assert f.goto == {3: 4, 61: 62}[table]


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
    shuffled = dict(LOCKDOWN, ip_addresses=["10.0.1.11", IP])
    reordered = dict(LOCKDOWN, ip_addresses=[IP, "10.0.1.11"])
    assert compiled(shuffled) == compiled(reordered)
    assert policy(shuffled).ip_addresses == ("10.0.1.10", "10.0.1.11")
    assert compile_personality(IFACE, policy()) == compile_personality(IFACE, policy())
    assert compiled(FULL, CTX) == compiled(FULL, Context(ROUTER, dict(reversed(CTX.macs.items()))))


@pytest.mark.parametrize("body", [
    LOCKDOWN,
    {"ip_addresses": [], "firewall_rules": [], "default_action": "allow"},
    {"ip_addresses": ["10.0.1.10", "10.0.1.11"], "firewall_rules": [
        {"protocol": "tcp", "port": "1-65535", "action": "allow"},
        {"protocol": "udp", "port": "5000-5100", "direction": "egress", "action": "deny"},
        {"protocol": "icmp", "direction": "ingress", "action": "allow"},
        {"protocol": "any", "source": "192.168.0.0/16", "action": "deny"}]},
    FULL,
], ids=["lockdown", "open", "mixed", "full"])
def test_every_flow_passes_the_layout_and_carries_the_personality_cookie(body):
    flows = compiled(body, CTX, id="p-web", revision=70001)
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
    # the learned flows are the switch's: none compiled into them, none with this cookie
    assert not any(f.table in tables.LEARNED for f in flows)
    for learn in learns(flows):
        assert learn.table in tables.LEARNED
        assert learn.cookie & mask != cookie


def test_flows_are_scoped_to_the_interface_and_use_its_zone():
    flows = compiled(FULL, CTX)
    for f in flows:
        m = dict(f.match)
        if f.table in (0, 2, 3, 4, 5):
            assert (m["in_port"], m["eth_src"]) == (1, MAC), f
        else:
            assert m["eth_dst"] == MAC and "in_port" not in m, f
        for a in f.actions:
            if isinstance(a, Conntrack):
                assert a.zone == ZONE
            elif isinstance(a, Output):
                assert a.port == 1 or (f.table == 5 and a == Output.controller()), f
            elif isinstance(a, Learn):
                assert a.cookie == connection_cookie(IFACE, ZONE)
                assert LearnMatch("reg4", 32, value=1) in a.specs
    default_zone = {a.zone for a in conntracks(compile_personality(IFACE, policy()))}
    assert default_zone == {interface_zone(IFACE)} == {2}


def test_firewalls_hand_everything_they_let_through_to_the_count_tables():
    """Nothing leaves a firewall table but to its count table: no output, no goto arp."""
    flows = compiled(FULL, CTX)
    for table, count in ((3, 4), (61, 62)):
        fw = [f for f in flows if f.table == table]
        assert fw
        for f in fw:
            assert not any(isinstance(a, Output) for a in f.actions), f
            assert continues_to(f) in (None, count), f
            if continues_to(f) is None:
                assert f.actions == (), f"a flow that continues nowhere must drop: {f}"
        passing = {f.priority for f in fw if continues_to(f) == count}
        assert {CT_ESTABLISHED, CT_ESTABLISHED - 1, DEFAULT} <= passing


def test_interface_zone_is_the_interfaces_pair_one_per_epoch():
    """The record's zone pair, wherever the interface is: same port on two bridges differs."""
    a, b = Interface(1, 5, MAC, zone=40), Interface(2, 5, MAC, zone=42)
    assert (interface_zone(a), interface_zone(a, 0), interface_zone(a, 1)) == (40, 40, 41)
    assert {interface_zone(a, e) for e in (0, 1)}.isdisjoint(interface_zone(b, e) for e in (0, 1))
    assert interface_zone(a, 2) == 40 and interface_zone(a, 3) == 41   # epoch is a bit
    last = budgets.INTERFACE_ZONES.last - 1
    assert interface_zone(Interface(1, 5, MAC, zone=last), 1) == budgets.INTERFACE_ZONES.last


def test_same_port_on_two_bridges_gets_disjoint_zones_from_the_records():
    """Discovery records both, the switcher's interfaces carry the records' pairs, and the
    compiled flows of the two never share a conntrack zone (one Open vSwitch, one table)."""
    from controller.core import interfaces
    from controller.features.personality.run import interface_of
    from controller.store import open_store
    store = open_store(":memory:")
    for dpid in (0xA01, 0xA02):
        interfaces.record_host(store, Host(MAC, (IP,), dpid, 3))
    zones = []
    for doc in store.list(interfaces.KIND):
        iface = interface_of(doc)
        for epoch in (0, 1):
            flows = compile_personality(iface, policy(FULL), interface_zone(iface, epoch), CTX)
            zones.append({a.zone for a in conntracks(flows)})
    assert all(len(z) == 1 for z in zones) and len(set().union(*zones)) == 4


@pytest.mark.parametrize("zone", [0, 1, 3, budgets.INTERFACE_ZONES.last,
                                  budgets.INTERFACE_ZONES.last + 1, budgets.PERSONA.zones[0].first],
                         ids=str)
def test_an_interface_zone_is_the_even_first_of_a_pair_in_the_interface_zones(zone):
    with pytest.raises(ValueError, match="zone"):
        Interface(1, 5, MAC, zone=zone)


def test_without_a_zone_the_fallback_is_two_per_port_on_one_bridge():
    for port in (1, 2, 1000, MAX_PORT):
        iface = Interface(1, port, MAC)
        assert interface_zone(iface) == interface_zone(iface, 0) == 2 * port
        assert interface_zone(iface, 1) == 2 * port + 1
    zones = [interface_zone(Interface(1, p, MAC), e) for p in range(1, 300) for e in (0, 1)]
    assert len(set(zones)) == len(zones) and min(zones) == 2   # never zone 0
    top = interface_zone(Interface(1, MAX_PORT, MAC), 1)
    assert top == MAX_PORT * 2 + 1 and top in budgets.INTERFACE_ZONES
    assert MAX_PORT * 2 + 3 not in budgets.INTERFACE_ZONES      # the next port's would not be
    # the fallback knows one bridge only: the same port on another switch shares the zone
    assert interface_zone(Interface(1, 5, MAC)) == interface_zone(Interface(2, 5, MAC))
    assert interface_zone(Interface(1, 5, MAC)) == interface_zone(Interface(1, 5, "AA:" + MAC[3:]))
    assert Interface(1, 5, "AA:BB:CC:DD:EE:FF").mac == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("port", [0, MAX_PORT + 1, 65534, 0xFFFFFFFE], ids=str)
def test_interface_zone_refuses_ports_beyond_the_limit(port):
    iface = Interface(1, port, MAC)
    for epoch in (0, 1):
        with pytest.raises(ValueError, match="port"):
            interface_zone(iface, epoch)
    with pytest.raises(ValueError):
        compile_personality(iface, policy())       # the default zone is the interface's
    allocated = Interface(1, port, MAC, zone=2)    # an allocated zone needs no port limit
    assert {a.zone for a in conntracks(compile_personality(allocated, policy()))} == {2}


def test_epochs_differ_only_in_zone_and_connection_cookie():
    """Both epochs' flows have the same identities, so a switch replaces them in place."""
    p = policy(FULL)
    z0, z1 = interface_zone(IFACE, 0), interface_zone(IFACE, 1)
    e0 = compile_personality(IFACE, p, z0, CTX)
    e1 = compile_personality(IFACE, p, z1, CTX)
    assert compile_personality(IFACE, p, ctx=CTX) == e0
    assert [f.key for f in e0] == [f.key for f in e1]
    assert {a.zone for a in conntracks(e0)} == {z0} and {a.zone for a in conntracks(e1)} == {z1}
    assert {l.cookie for l in learns(e0)} == {connection_cookie(IFACE, z0)}
    assert {l.cookie for l in learns(e1)} == {connection_cookie(IFACE, z1)}
    assert connection_cookie(IFACE, z0) != connection_cookie(IFACE, z1)
    assert connection_cookie(IFACE, z0) != connection_cookie(Interface(2, 1, MAC), z0)
    info = cookies.parse(connection_cookie(IFACE, z1))
    assert info.feature is Feature.PERSONALITY
    assert info.doc_key == cookies.doc_key(f"connections:{IFACE.id}:{z1}")
    changed = [(a, b) for a, b in zip(e0, e1) if a != b]
    assert {a.table for a, _ in changed} == {2, 3, 4, 60, 61, 62}


def test_hooks_override_the_fabric_flows_of_the_host():
    host = Host(MAC, (IP,), 1, 1)
    subnet = Subnet.from_body("net1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"})
    fabric = compile_fabric(FabricInput(frozenset({1}), frozenset(), (host,), (subnet,), ROUTER))[1]
    mine = compiled(FULL, CTX)
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
    assert hits, f"no flow in table {table} matches {packet} (table miss)"
    best = max(f.priority for f in hits)
    top = [f for f in hits if f.priority == best]
    assert len({(f.actions, f.goto) for f in top}) == 1, f"ambiguous: {top}"
    return top[0]


def allowed(flows, table, packet) -> bool:
    f = lookup(flows, table, packet)
    return bool(f.actions) or f.goto is not None


def new_in(proto=6, dport=443, src=PEER, **extra):
    return {"eth_dst": MAC, "eth_type": IPV4, "ct_state": 0x21, "ip_proto": proto,
            "ipv4_src": src, "ipv4_dst": IP, "tcp_dst": dport, "udp_dst": dport, **extra}


def new_out(proto=17, dport=53, dst="8.8.8.8", **extra):
    return {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "ct_state": 0x21,
            "ip_proto": proto, "ipv4_src": IP, "ipv4_dst": dst, "tcp_dst": dport,
            "udp_dst": dport, **extra}


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
    # the allowing rule commits and counts; the rule's priority follows the list order
    f = lookup(flows, 61, new_in(dport=80))
    assert f.actions == (COMMIT_IN,) and f.goto == 62
    assert f.priority == RULE_TOP - 1
    # replies of committed connections pass whatever the rules say
    assert lookup(flows, 61, new_in(dport=8080, ct_state=0x22)).goto == 62
    assert lookup(flows, 61, new_in(dport=8080, ct_state=0x24)).goto == 62
    assert not allowed(flows, 61, new_in(dport=80, ct_state=0x30))     # invalid


def test_lockdown_by_lookup():
    flows = compiled()
    eg = {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "ipv4_src": IP}
    assert allowed(flows, 61, new_in(dport=443))
    assert not allowed(flows, 61, new_in(dport=80))
    assert not allowed(flows, 61, new_in(proto=1))
    assert lookup(flows, 3, {**eg, "ct_state": 0x2A, "ip_proto": 6}).goto == 4    # +est+rpl
    assert not allowed(flows, 3, {**eg, "ct_state": 0x21, "ip_proto": 6})
    # anti-spoofing: only the personality's address reaches conntrack
    assert lookup(flows, 2, eg).actions == (Conntrack(zone=ZONE, table=3),)
    assert not allowed(flows, 2, {**eg, "ipv4_src": "10.0.1.99"})
    arp = {"in_port": 1, "eth_src": MAC, "eth_type": ARP, "arp_sha": MAC}
    assert lookup(flows, 2, {**arp, "arp_spa": IP}).goto == 10
    assert not allowed(flows, 2, {**arp, "arp_spa": "10.0.1.99"})
    assert not allowed(flows, 2, {**arp, "arp_spa": IP, "arp_sha": "00:00:00:00:0e:0e"})
    assert not allowed(flows, 2, {"in_port": 1, "eth_src": MAC, "eth_type": 0x86DD})


# ------------------------------------------------------------- counting (learn)
def test_count_tables_have_three_flows_per_interface():
    flows = compiled(FULL, CTX)
    for table, local, peer in ((4, "src", "dst"), (62, "dst", "src")):
        count = {(f.priority, dict(f.match).get("ip_proto")): f for f in flows if f.table == table}
        assert set(count) == {(COUNT_L4, 6), (COUNT_L4, 17), (COUNT_IP, None)}
        assert COUNT_L4 > COUNT_IP
        for (_, proto), f in count.items():
            learn = [a for a in f.actions if isinstance(a, Learn)]
            assert len(learn) == 1 and f.actions[0] is learn[0], "learn first"
            ports = None if proto is None else tuple(
                f"{ {6: 'tcp', 17: 'udp'}[proto]}_{end}" for end in (local, peer))
            assert learn[0] == learn_of(IFACE, ZONE, f"ipv4_{local}", f"ipv4_{peer}", ports)
            assert (learn[0].table, learn[0].idle_timeout, learn[0].hard_timeout) == \
                (tables.PERSONALITY_CONNECTIONS.id, 0, CONNECTION_IDLE_SECONDS)
            # the learned flow matches registers only: no prerequisites to satisfy
            assert all(s.dst.startswith("reg") for s in learn[0].specs)
            if table == 4:    # egress: on to the interface's routes
                assert f.goto == tables.PERSONALITY_ROUTES.id
                assert not any(isinstance(a, Output) for a in f.actions)
            else:             # ingress: out of the interface's port, last
                assert f.goto is None and f.actions[-1] == Output(1)


def _learn(learn: Learn, packet) -> dict:
    """What the switch would add to table 63: {reg: (value, mask)}."""
    key: dict[str, tuple[int, int]] = {}
    for s in learn.specs:
        if s.src is None:
            v = s.value
        else:
            raw = packet[s.src]
            raw = int(ipaddress.IPv4Address(raw)) if isinstance(raw, str) else raw
            v = (raw >> s.src_ofs) & ((1 << s.n_bits) - 1)
        value, mask = key.get(s.dst, (0, 0))
        bits = ((1 << s.n_bits) - 1) << s.dst_ofs
        assert not mask & bits, f"two specs write {s.dst} bits {bits:#x}"
        key[s.dst] = (value | v << s.dst_ofs, mask | bits)
    return key


def learned(flows, table, packet) -> dict:
    """The connection key a packet passing the count table `table` records."""
    f = lookup(flows, table, packet)
    (learn,) = [a for a in f.actions if isinstance(a, Learn)]
    return _learn(learn, packet)


def as_read_back(key: dict) -> dict:
    """A learned key as a switch reports its match: exact fields plain, partial ones masked."""
    return dict(make_match({r: v if m == 0xFFFFFFFF else (v, m) for r, (v, m) in key.items()}))


def out_pkt(proto, src_port=None, dst_port=None, peer=PEER, iface=IFACE, ip=IP):
    p = {"in_port": iface.port, "eth_src": iface.mac, "eth_type": IPV4, "ip_proto": proto,
         "ipv4_src": ip, "ipv4_dst": peer}
    return _ports(p, proto, src_port, dst_port)


def in_pkt(proto, src_port=None, dst_port=None, peer=PEER, iface=IFACE, ip=IP):
    p = {"eth_dst": iface.mac, "eth_type": IPV4, "ip_proto": proto,
         "ipv4_src": peer, "ipv4_dst": ip}
    return _ports(p, proto, src_port, dst_port)


def _ports(p, proto, src_port, dst_port):
    name = {6: "tcp", 17: "udp"}.get(proto)
    if name:
        p.update({f"{name}_src": src_port, f"{name}_dst": dst_port})
    return p


@pytest.mark.parametrize("proto, name", [(6, "tcp"), (17, "udp")])
def test_both_directions_of_a_connection_learn_the_same_key(proto, name):
    flows = compiled(FULL, CTX)
    # the interface opens 10.0.1.10:40000 -> 10.0.1.20:443; the reply comes back in
    opened = learned(flows, 4, out_pkt(proto, 40000, 443))
    assert opened == learned(flows, 62, in_pkt(proto, 443, 40000))
    assert opened == {"reg0": (int(ipaddress.IPv4Address(IP)), 0xFFFFFFFF),
                      "reg1": (int(ipaddress.IPv4Address(PEER)), 0xFFFFFFFF),
                      "reg2": (443 << 16 | 40000, 0xFFFFFFFF),
                      "reg3": (proto, 0xFF), "reg4": (1, 0xFFFFFFFF)}
    assert decode_connection(as_read_back(opened)) == \
        {"protocol": name, "local": f"{IP}:40000", "peer": f"{PEER}:443"}
    # a connection opened toward the interface: the same key from its reply going out
    accepted = learned(flows, 62, in_pkt(proto, 50000, 22))
    assert accepted == learned(flows, 4, out_pkt(proto, 22, 50000))
    assert decode_connection(as_read_back(accepted)) == \
        {"protocol": name, "local": f"{IP}:22", "peer": f"{PEER}:50000"}
    # other connections are other flows
    keys = {repr(k) for k in (opened, accepted, learned(flows, 4, out_pkt(proto, 40001, 443)),
                              learned(flows, 4, out_pkt(proto, 40000, 443, peer="10.0.1.21")),
                              learned(flows, 62, in_pkt(proto, 443, 40000, peer="10.8.0.1")))}
    assert len(keys) == 5


def test_other_ip_connections_are_keyed_by_addresses_and_protocol():
    flows = compiled(FULL, CTX)
    ping = learned(flows, 4, out_pkt(1))
    assert ping == learned(flows, 62, in_pkt(1))
    assert "reg2" not in ping and ping["reg3"] == (1, 0xFF)
    assert decode_connection(as_read_back(ping)) == {"protocol": "icmp", "local": IP, "peer": PEER}
    gre = learned(flows, 62, in_pkt(47, peer="192.0.2.9"))
    assert gre == learned(flows, 4, out_pkt(47, peer="192.0.2.9")) != ping
    assert decode_connection(as_read_back(gre)) == {"protocol": "47", "local": IP,
                                                    "peer": "192.0.2.9"}


def test_interfaces_on_one_switch_learn_apart():
    other = Interface(1, 2, "00:00:00:00:01:0b")
    mine = compiled(FULL, CTX)
    theirs = compile_personality(other, policy(FULL), interface_zone(other), CTX)
    a = learned(mine, 4, out_pkt(6, 40000, 443))
    b = learned(theirs, 4, out_pkt(6, 40000, 443, iface=other))   # same addresses and ports
    assert a != b and (a["reg4"], b["reg4"]) == ((1, 0xFFFFFFFF), (2, 0xFFFFFFFF))
    assert {l.cookie for l in learns(theirs)} == {connection_cookie(other, interface_zone(other))}


@pytest.mark.parametrize("match, want", [
    ({"reg0": 0x0A00010A, "reg1": 0x0A000114, "reg2": 443 << 16 | 40000, "reg3": 6, "reg4": 1},
     {"protocol": "tcp", "local": "10.0.1.10:40000", "peer": "10.0.1.20:443"}),
    ({"reg0": (0x0A00010A, 0xFFFFFFFF), "reg1": 0x08080808, "reg2": (53 << 16 | 5353, 0xFFFFFFFF),
      "reg3": (17, 0xFF), "reg4": 1},
     {"protocol": "udp", "local": "10.0.1.10:5353", "peer": "8.8.8.8:53"}),
    ({"reg0": 0x0A00010A, "reg1": 0x0A000114, "reg3": (1, 0xFF), "reg4": 1},
     {"protocol": "icmp", "local": "10.0.1.10", "peer": "10.0.1.20"}),
    ({"reg0": 0x0A00010A, "reg1": 0x0A000114, "reg2": 0xFFFF0000, "reg3": 6, "reg4": 9},
     {"protocol": "tcp", "local": "10.0.1.10:0", "peer": "10.0.1.20:65535"}),
    ({"reg0": 0x0A00010A, "reg1": 0xC0000209, "reg3": (47, 0xFF), "reg4": 1},
     {"protocol": "47", "local": "10.0.1.10", "peer": "192.0.2.9"}),
], ids=["tcp", "udp-masked", "icmp", "port-extremes", "gre"])
def test_decode_connection(match, want):
    assert decode_connection(match) == want
    assert decode_connection(dict(make_match(match))) == want    # as read back from a switch


# ---------------------------------------------------------------------- DNS
DNS = {"ip_addresses": [IP], "dns_servers": [DNS1, DNS2], "default_action": "deny",
       "firewall_rules": [{"protocol": "udp", "port": 53, "direction": "egress",
                           "action": "deny"}]}


def test_dns_flows_exactly():
    flows = compiled(DNS)
    mark, mask = MARK_OUT
    allowed = Conntrack(commit=True, zone=ZONE, table=4, mark=mark, mark_mask=mask)
    redirect = Conntrack(commit=True, zone=ZONE, table=4, mark=mark, mark_mask=mask,
                         nat=Nat(dst=DNS1, dst_port=53))
    dns = {(f.priority, dict(f.match).get("ip_proto"), dict(f.match).get("ipv4_dst")): f
           for f in flows if f.priority in (DNS_ALLOWED, DNS_REDIRECT)}
    assert set(dns) == {(DNS_ALLOWED, p, s) for p in (6, 17) for s in (DNS1, DNS2)} | \
        {(DNS_REDIRECT, 6, None), (DNS_REDIRECT, 17, None)}
    assert DNS_ALLOWED > DNS_REDIRECT > RULE_TOP        # above every rule
    for (prio, proto, _), f in dns.items():
        m = dict(f.match)
        assert f.table == 3, "DNS is the interface's own queries: egress only"
        assert (m["ct_state"], m["eth_type"], m["in_port"], m["eth_src"]) == (NEW, IPV4, 1, MAC)
        assert m[{6: "tcp_dst", 17: "udp_dst"}[proto]] == 53
        assert {"tcp_dst", "udp_dst"} & set(m) == {{6: "tcp_dst", 17: "udp_dst"}[proto]}
        # both resume in the count table tracked: outside the application policy
        if prio == DNS_ALLOWED:
            assert f.actions == (allowed,) and f.goto is None
        else:
            (ct,) = f.actions
            assert ct.commit and ct.zone == ZONE and ct.nat == Nat(dst=DNS1, dst_port=53)
            assert ct == redirect
        assert continues_to(f) == 4


def test_dns_servers_make_both_trackers_nat():
    """ct(nat) both ways: a redirected query's later packets and its replies are translated."""
    with_dns = compiled(DNS)
    assert lookup(with_dns, 2, new_out()).actions == (Conntrack(zone=ZONE, table=3, nat=Nat()),)
    assert lookup(with_dns, 60, new_in()).actions == (Conntrack(zone=ZONE, table=61, nat=Nat()),)
    open_dns = compiled({"dns_servers": [DNS1]})          # no address list: the same
    assert lookup(open_dns, 2, new_out()).actions == (Conntrack(zone=ZONE, table=3, nat=Nat()),)
    # without DNS servers no NAT anywhere
    assert all(ct.nat is None for ct in conntracks(compiled(LOCKDOWN)))
    assert all(ct.nat is None for ct in conntracks(compiled({"default_action": "allow"})))
    # only redirect flows translate to an address
    assert {f.priority for f in with_dns for a in f.actions
            if isinstance(a, Conntrack) and a.nat not in (None, Nat())} == {DNS_REDIRECT}


def test_dns_queries_by_lookup():
    flows = compiled(DNS)
    # to another resolver: redirected to the first server (udp and tcp)
    for proto in (17, 6):
        f = lookup(flows, 3, new_out(proto=proto, dst="8.8.8.8"))
        assert f.priority == DNS_REDIRECT, f
        assert conntracks([f])[0].nat == Nat(dst=DNS1, dst_port=53)
    # to either listed server: allowed as addressed, although a rule denies udp/53
    for server in (DNS1, DNS2):
        f = lookup(flows, 3, new_out(dst=server))
        assert f.priority == DNS_ALLOWED
        assert f.actions == (Conntrack(commit=True, zone=ZONE, table=4, mark=MARK_OUT[0],
                                       mark_mask=MARK_OUT[1]),)
    # other ports are the rules' and the default's business
    assert not allowed(flows, 3, new_out(dport=5353))
    assert not allowed(flows, 3, new_out(proto=6, dport=853, dst=DNS1))
    # queries toward the interface are not redirected: ingress default deny
    assert not allowed(flows, 61, new_in(proto=17, dport=53))
    # replies (un-NATed by the tracker) and later packets pass as established
    assert lookup(flows, 61, new_in(proto=17, dport=5353, src="8.8.8.8", ct_state=0x2A)).goto == 62
    assert lookup(flows, 3, new_out(ct_state=0x22)).goto == 4


def test_dns_servers_keep_their_order():
    p = policy({"dns_servers": [DNS2, DNS1]})
    assert p.dns_servers == (DNS2, DNS1)
    redirect = [a for f in compile_personality(IFACE, p, ZONE) for a in f.actions
                if isinstance(a, Conntrack) and a.nat is not None and a.nat.dst]
    assert {a.nat for a in redirect} == {Nat(dst=DNS2, dst_port=53)}
    assert policy({}).dns_servers == ()


# ------------------------------------------------------------------- routes
ROUTED = {"ip_addresses": [IP], "default_action": "allow", "routing_table": [
    {"destination": "10.8.0.0/16", "next_hop": PEER},
    {"destination": "10.8.5.0/24", "next_hop": "10.0.1.30"},
    {"destination": "0.0.0.0/0", "next_hop": PEER},
    {"destination": "10.9.9.9/32", "next_hop": "10.0.1.99"},      # next hop not known
]}


def routed(dst, eth_dst=ROUTER, **extra):
    return {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "eth_dst": eth_dst,
            "ipv4_src": IP, "ipv4_dst": dst, **extra}


def rewrite(mac, router=ROUTER):
    return (SetField("eth_src", router), SetField("eth_dst", mac), DecTtl())


def test_route_flows_exactly():
    c = cookies.make(Feature.PERSONALITY, "lockdown", 3)
    base = {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "eth_dst": ROUTER}
    want = {
        flow(5, 116, {**base, "ipv4_dst": "10.8.0.0/16"}, rewrite(GW_MAC), goto=50, cookie=c),
        flow(5, 124, {**base, "ipv4_dst": "10.8.5.0/24"}, rewrite(R2_MAC), goto=50, cookie=c),
        flow(5, 100, {**base, "ipv4_dst": "0.0.0.0/0"}, rewrite(GW_MAC), goto=50, cookie=c),
        flow(5, 132, {**base, "ipv4_dst": "10.9.9.9"}, [Output.controller()], cookie=c),
    }
    assert set(in_table(compiled(ROUTED, CTX), tables.PERSONALITY_ROUTES)) == want
    assert ROUTE_BASE == 100
    assert policy(ROUTED).routes[1] == Route(ipaddress.IPv4Network("10.8.5.0/24"), "10.0.1.30")


def test_longest_prefix_wins():
    flows = compiled(ROUTED, CTX)
    for dst, mac in (("10.8.5.7", R2_MAC), ("10.8.6.1", GW_MAC), ("10.8.255.255", GW_MAC),
                     ("192.0.2.1", GW_MAC), ("10.9.9.8", GW_MAC)):
        f = lookup(flows, 5, routed(dst))
        assert f.actions == rewrite(mac) and f.goto == tables.L2.id, dst
    f = lookup(flows, 5, routed("10.9.9.9"))
    assert f.actions == (Output.controller(),) and f.goto is None


def test_next_hop_mac_comes_from_the_context():
    unknown = compiled(ROUTED)                          # no MAC known: all ask the controller
    assert {f.actions for f in in_table(unknown, tables.PERSONALITY_ROUTES)} == \
        {(Output.controller(),)}
    other = Context(router_mac="02:b5:00:00:00:99", macs={PEER: GW_MAC})
    flows = compiled(ROUTED, other)
    f = lookup(flows, 5, routed("10.8.6.1", eth_dst="02:b5:00:00:00:99"))
    assert f.actions == rewrite(GW_MAC, "02:b5:00:00:00:99")
    assert lookup(flows, 5, routed("10.8.5.7", eth_dst="02:b5:00:00:00:99")).actions == \
        (Output.controller(),)                           # 10.0.1.30 unknown in this context
    # learning a MAC changes the routes, nothing else
    a, b = compiled(ROUTED), compiled(ROUTED, CTX)
    assert {f.table for f in set(a) ^ set(b)} == {5}
    assert Context().mac_of(PEER) is None and CTX.mac_of(PEER) == GW_MAC


def test_routes_apply_only_to_the_interfaces_packets_to_the_router():
    flows = compiled(ROUTED, CTX)
    routes = in_table(flows, tables.PERSONALITY_ROUTES)
    for packet in (routed("10.8.5.7", eth_dst=GW_MAC),                  # same-subnet frame
                   {**routed("10.8.5.7"), "in_port": 2},                # another port
                   {**routed("10.8.5.7"), "eth_src": "00:00:00:00:01:0b"},
                   {**routed("10.8.5.7"), "eth_type": ARP}):
        assert not [f for f in routes if all(_field_matches(n, v, packet) for n, v in f.match)]
    assert not in_table(compiled(LOCKDOWN, CTX), tables.PERSONALITY_ROUTES)


def test_packets_no_route_matches_continue_to_arp():
    """personality_routes' miss is "goto:arp": what no route of the interface's own takes
    continues to the fabric's ARP and routing like anyone else's packets."""
    host = Host(MAC, (IP,), 1, 1)
    peer = Host(GW_MAC, (PEER,), 1, 2)
    subnet = Subnet.from_body("net1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"})
    fabric = compile_fabric(FabricInput(frozenset({1}), frozenset(), (host, peer), (subnet,),
                                        ROUTER))[1]
    same_subnet = routed(PEER, eth_dst=GW_MAC)
    for body, packets in ((LOCKDOWN, [same_subnet, routed("10.0.1.1", ip_proto=1),
                                      routed("172.16.0.1")]),
                          (ROUTED, [same_subnet])):   # ROUTED's 0.0.0.0/0 takes the rest
        flows = fabric + compiled(body, CTX)
        for packet in packets:
            assert lookup(flows, 5, packet).goto == tables.ARP.id, (body, packet)


def test_clashing_flows_are_refused_not_silently_merged():
    """The document refuses two routes to one destination (test_documents); were two to
    reach the compiler, their flows would replace one another on the switch."""
    net = ipaddress.IPv4Network("10.8.0.0/16")
    clash = dataclasses.replace(policy(), routes=(Route(net, PEER), Route(net, "10.0.1.30")))
    with pytest.raises(ValueError, match="same table, priority and match"):
        compile_personality(IFACE, clash, ZONE, CTX)


# --------------------------------------------------------------------- DSCP
@pytest.mark.parametrize("priority, dscp", [(5, 40), (7, 56), (1, 8), (0, 0)])
def test_dscp_marks_what_the_interface_sends(priority, dscp):
    body = {**LOCKDOWN, "qos_settings": {"priority": priority}}
    assert policy(body).dscp == dscp == priority << 3
    flows = compiled(body)
    for f in in_table(flows, tables.PERSONALITY_EGRESS_COUNT):
        assert isinstance(f.actions[0], Learn)
        assert f.actions[1:] == (SetField("ip_dscp", dscp),) and f.goto == 5
    for f in in_table(flows, tables.PERSONALITY_INGRESS_COUNT):
        assert isinstance(f.actions[0], Learn) and f.actions[1:] == (Output(1),)
    marks = [f for f in flows for a in f.actions if isinstance(a, SetField)]
    assert {f.table for f in marks} == {4} and len(marks) == 3


def test_no_qos_no_marking():
    for body in (LOCKDOWN, {**LOCKDOWN, "qos_settings": {}}, {**LOCKDOWN, "qos_settings": None}):
        assert policy(body).dscp is None
        assert not any(isinstance(a, SetField) for f in compiled(body) for a in f.actions)


# ------------------------------------------------------------------ transition
def test_transition_blocks_new_and_keeps_established():
    flows = compile_transition(IFACE, policy(), ZONE)
    tables.check(flows)
    assert {f.cookie for f in flows} == {transition_cookie(IFACE)}
    assert cookies.parse(transition_cookie(IFACE)).feature is Feature.PERSONALITY
    assert not any(DEFAULT < f.priority < CT_ESTABLISHED - 1 for f in flows
                   if f.table in (3, 61)), "no rules in the transition state"
    assert not any(a.commit for a in conntracks(flows))
    assert {a.zone for a in conntracks(flows)} == {ZONE}
    eg = {"in_port": 1, "eth_src": MAC, "eth_type": IPV4, "ipv4_src": IP, "ip_proto": 6}
    for state in (0x21, 0x30):
        assert not allowed(flows, 3, {**eg, "ct_state": state})
        assert not allowed(flows, 61, new_in(ct_state=state))
    for state in (0x22, 0x2A, 0x24):
        assert lookup(flows, 3, {**eg, "ct_state": state}).goto == 4
        assert lookup(flows, 61, new_in(ct_state=state)).goto == 62
    assert not allowed(flows, 2, {**eg, "ipv4_src": "10.0.1.99"})
    # kept connections are still counted (in the zone being drained)
    assert {l.cookie for l in learns(flows)} == {connection_cookie(IFACE, ZONE)}


def test_transition_keeps_addresses_routes_nat_and_counting():
    p = policy(FULL)
    pers = compile_personality(IFACE, p, ZONE, CTX)
    trans = compile_transition(IFACE, p, ZONE, CTX)

    def same(table):
        view = lambda flows: {(f.key, f.actions, f.goto) for f in flows if f.table == table}
        return view(pers) == view(trans) and view(trans)

    for table in (0, 2, 4, 5, 50, 60, 62):  # hooks, anti-spoofing + ct(nat), counting, routes
        assert same(table), table
    assert lookup(trans, 2, new_out()).actions == (Conntrack(zone=ZONE, table=3, nat=Nat()),)
    assert lookup(trans, 5, routed("10.8.1.1")).actions == rewrite(GW_MAC)
    # no rules, no DNS: every new connection dropped, even with default allow
    fw = [f for f in trans if f.table in (3, 61)]
    assert {f.priority for f in fw} == {65000, CT_COMMITTED_NEW, 64001, 64000, DEFAULT, 1}
    for packet, table in ((new_out(dst="8.8.8.8"), 3), (new_out(dst=DNS1), 3),
                          (new_out(proto=1, dst=PEER), 3), (new_in(dport=443), 61)):
        assert not allowed(trans, table, packet), packet
    assert not any(ct.nat not in (None, Nat()) for ct in conntracks(trans))
    # its flows are the personality's minus the rules and the DNS flows
    trans_keys, pers_keys = {f.key for f in trans}, {f.key for f in pers}
    assert trans_keys < pers_keys
    assert {k[1] for k in pers_keys - trans_keys} <= \
        {DNS_ALLOWED, DNS_REDIRECT} | set(range(RULE_TOP - 10000, RULE_TOP + 1))
    assert {k[1] for k in pers_keys - trans_keys} >= {DNS_ALLOWED, DNS_REDIRECT, RULE_TOP}


def test_transition_reuses_the_personality_structure():
    """Same hooks and tables: switching to and from it replaces flows in place."""
    trans = {f.key for f in compile_transition(IFACE, policy(), ZONE)}
    pers = {f.key for f in compiled()}
    assert trans < pers
    assert {k for k in pers - trans if RULE_TOP - 10000 < k[1] <= RULE_TOP} == pers - trans
    open_ = compile_transition(IFACE, policy({}), ZONE)   # no addresses: ARP and IPv4 unchecked
    eg = {"in_port": 1, "eth_src": MAC}
    assert lookup(open_, 2, {**eg, "eth_type": IPV4, "ipv4_src": "10.0.1.99"}).actions == \
        (Conntrack(zone=ZONE, table=3),)
    assert lookup(open_, 2, {**eg, "eth_type": ARP, "arp_spa": "10.0.1.99"}).goto == 10
    assert compile_transition(IFACE, policy({}), ZONE) == open_
    # the replaced personality's rules and revision do not matter, its addresses do
    assert compile_transition(IFACE, policy(dict(LOCKDOWN, firewall_rules=[]), revision=9),
                              ZONE) == compile_transition(IFACE, policy(), ZONE)
    assert compile_transition(IFACE, policy(), ZONE) != open_


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
def test_policy_of_a_bare_personality_takes_the_defaults():
    p = PersonalityPolicy.from_body("p1", {"name": "web"}, 2)
    assert (p.ip_addresses, p.firewall_rules, p.default_action, p.revision) == ((), (), "deny", 2)
    assert (p.dns_servers, p.routes, p.dscp, p.vpn) == ((), (), None, None)
    assert (p.egress_kbps, p.ingress_kbps, p.applications.rules) == (None, None, ())
    full = policy(FULL)
    assert full.dns_servers == (DNS1, DNS2) and full.dscp == 24
    assert full.routes == (Route(ipaddress.IPv4Network("10.8.0.0/16"), PEER),
                           Route(ipaddress.IPv4Network("10.9.0.0/16"), "10.0.1.99"))


def test_a_policy_is_converted_from_the_parsed_document():
    """One parser: `from_body` is the model's parse, then `of`."""
    body = document(FULL)
    assert PersonalityPolicy.from_body("p", body, 4) == PersonalityPolicy.of(
        "p", parse_personality(body), 4)


def test_from_body_refuses_what_the_model_refuses_naming_the_field():
    with pytest.raises(DocumentInvalid) as exc:
        PersonalityPolicy.from_body("p", document({"default_action": "maybe"}))
    assert [e["field"] for e in exc.value.errors] == ["body.default_action"]


def _rule(**fields) -> FirewallRule:
    return FirewallRule.of(parse_personality(document({"firewall_rules": [fields]}))
                           .firewall_rules[0])


def test_rule_defaults_and_port_ranges():
    r = _rule(protocol="any", action="allow")
    assert (r.protocol, r.direction, r.action, r.source, r.destination, r.ports) == \
        ("any", "both", "allow", None, None, None)
    assert _rule(action="deny", port="100 - 200", protocol="udp").ports == (100, 200)
    assert _rule(action="deny", port="443", protocol="tcp").ports == (443, 443)


def test_any_source_forms_are_the_same():
    assert _rule(protocol="any", action="allow", source="0.0.0.0/0") == \
        _rule(protocol="any", action="allow")
