"""Resource budgets: no two overlap, the layout and the cookie scheme agree with them, and
the compilers stay inside their own."""
from __future__ import annotations

import itertools
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from controller.core import budgets
from controller.core.budgets import Budget, BudgetError, Priorities, Register, Span
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.features.persona import net as persona_net
from controller.features.persona.compile import (GatewayInput, Member, PersonaNet, Policy,
                                                 compile_meters, compile_personas)
from controller.features.personality import interface as personality_interface
from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                                     compile_personality, compile_transition,
                                                     interface_zone, personality_meters)
from controller.features.personality.vpn import tunnel_port_name
from controller.features.policy import observe as policy_observe
from controller.features.policy import enforce as policy_enforce
from controller.features.policy.rules import Peer, RuleKey
from controller.pipeline import cookies, ctmark, tables
from controller.pipeline.actions import Conntrack
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import flow
from controller.pipeline.meters import MAX_PORT, meter_id_for
from controller.core.discovery import bootstrap_flows
from controller.core.topology import Host, Link, Subnet

ROUTER = "02:b5:00:00:00:01"
GW_MAC = "02:b5:00:00:00:02"


def spans(budget: Budget):
    """(namespace, span) of everything a budget takes, enumerated here independently."""
    for kind in ("tables", "zones", "meters", "groups", "ct_mark", "ct_label"):
        for s in getattr(budget, kind):
            yield kind, s
    for r in budget.registers:
        yield f"reg{r.reg}", r.bits
    for h in budget.hooks:
        yield f"priority in {h.table}", h.band


# ------------------------------------------------------------------ no overlap
def test_no_two_budgets_overlap_in_any_namespace():
    for a, b in itertools.combinations(budgets.BUDGETS, 2):
        for (kind_a, sa), (kind_b, sb) in itertools.product(spans(a), spans(b)):
            if kind_a == kind_b:
                assert not sa.overlaps(sb), f"{a.feature} {kind_a} {sa} / {b.feature} {sb}"
    budgets.check()   # and the import-time check agrees


def test_every_feature_has_a_budget():
    assert set(budgets.BY_FEATURE) == {"interface", "fabric", "personality", "persona",
                                       "shard", "shadow", "policy"}
    assert {b.cookie for b in budgets.BUDGETS if b.cookie} == set(Feature)
    assert not [b.feature for b in budgets.BUDGETS if b.reserved]
    policy = budgets.POLICY   # zones, marks or labels, and tables of its own
    assert policy.zones and (policy.ct_mark or policy.ct_label) \
        and sum(len(t) for t in policy.tables) >= 4
    shadow = budgets.SHADOW   # sampling: a register for the hash, meters and groups
    assert shadow.registers and shadow.meters and shadow.groups


def test_the_zone_space_leaves_room():
    taken = sum(len(z) for b in budgets.BUDGETS for z in b.zones)
    assert 0 not in budgets.INTERFACE_ZONES   # zone 0 is everyone else's
    assert taken <= 0xFFFF - 4096              # at least 4096 zones still free
    assert all(z.last <= 0xFFFF for b in budgets.BUDGETS for z in b.zones)


@pytest.mark.parametrize("field, a, b", [
    ("zones", (Span(10, 20),), (Span(20, 30),)),
    ("meters", (Span(0x10000, 0x1FFFF),), (Span(0x1FFFF, 0x2FFFF),)),
    ("groups", (Span(1, 1),), (Span(1, 1),)),
    ("ct_mark", (Span(0, 5),), (Span(5, 5),)),
    ("ct_label", (Span(0, 31),), (Span(31, 40),)),
    ("registers", (Register(4),), (Register(4, Span(3, 3)),)),
    ("hooks", (Priorities(0, Span(201, 214)),), (Priorities(0, Span(214, 220)),)),
    ("tables", (Span(2, 5),), (Span(5, 5),)),
])
def test_the_check_refuses_any_overlap(field, a, b):
    one = Budget("one", **{field: a})
    two = Budget("two", **{field: b})
    budgets.check_overlaps([one])
    budgets.check_overlaps([two])
    with pytest.raises(BudgetError, match="overlaps"):
        budgets.check_overlaps([one, two])


def test_the_check_refuses_an_overlap_with_the_declared_budgets():
    greedy = Budget("greedy", zones=(Span(0x9FFF, 0xA000),))      # persona's last, shard's first
    with pytest.raises(BudgetError, match="zone 40959..40960 of greedy overlaps"):
        budgets.check(budgets.BUDGETS + (greedy,))
    with pytest.raises(BudgetError, match="two budgets"):
        budgets.check(budgets.BUDGETS + (replace(budgets.SHARD, feature="shard2", tables=(),
                                                 zones=(), meters=(), groups=(), ct_mark=(),
                                                 ct_label=(), registers=(), hooks=()),))
    with pytest.raises(BudgetError, match="without a budget"):
        budgets.check(tuple(b for b in budgets.BUDGETS if b is not budgets.POLICY))
    with pytest.raises(BudgetError, match="outside"):
        budgets.check((Budget("big", zones=(Span(0, 0x10000),)),))


def test_the_layout_names_owners_whose_budgets_hold_the_tables(monkeypatch):
    for table in tables.LAYOUT:
        owner = budgets.BY_FEATURE[table.owner]
        assert any(table.id in s for s in owner.tables), table
    assert {t.owner for t in tables.LAYOUT} == {"fabric", "personality", "persona", "shard",
                                                 "shadow", "policy"}
    stray = tables.Table(30, "stray", "nobody's", "drop", owner="persona")
    monkeypatch.setattr(tables, "LAYOUT", tables.LAYOUT + (stray,))
    with pytest.raises(BudgetError, match="stray .30. is outside the tables of its owner"):
        budgets.check()
    monkeypatch.setattr(tables, "LAYOUT", tables.LAYOUT[:-1] + (replace(stray, owner="x"),))
    with pytest.raises(BudgetError, match="no budget"):
        budgets.check()


# ------------------------------------------------------------------ ownership
def test_reconcilers_own_exactly_the_union_of_declared_ranges():
    for b in budgets.BUDGETS:
        for s in b.meters:
            assert budgets.owns_meter(s.first) and budgets.owns_meter(s.last)
        for s in b.groups:
            assert budgets.owns_group(s.first) and budgets.owns_group(s.last)
    beyond = {i for s in budgets.METERS for i in (s.first - 1, s.last + 1)
              if not any(i in t for t in budgets.METERS)}
    assert beyond and not any(budgets.owns_meter(i) for i in beyond)
    assert not budgets.owns_meter(1) and not budgets.owns_group(0)
    for f in Feature:
        assert budgets.owns_cookie(cookies.make(f, "doc", 7))
    assert not budgets.owns_cookie(cookies.MAGIC << 56 | 0x77 << 48)
    assert not budgets.owns_cookie(int(Feature.PERSONA) << 48)   # no magic


def test_compilers_compute_ids_inside_their_budgets():
    assert {meter_id_for(p, d) for p in (1, MAX_PORT) for d in ("egress", "ingress")} \
        <= set(range(2, 0x10000))
    assert all(budgets.PERSONALITY.meters[0].first <= meter_id_for(p, "egress")
               for p in (1, MAX_PORT))
    first = PersonaNet(id="a", index=1, ip_range=IPv4Network("10.9.0.0/24"),
                       gateway_ip=IPv4Address("10.9.0.1"), protocols=frozenset({6}),
                       bandwidth_kbps=100)
    last = replace(first, index=persona_net.MAX_INDEX)
    for p in (first, last):
        assert p.zone in budgets.PERSONA.zones[0]
        assert all(m in budgets.PERSONA.meters[0] for m in persona_net.meter_ids(p))
    assert first.zone == budgets.PERSONA.zones[0].first
    assert last.zone == budgets.PERSONA.zones[0].last
    with pytest.raises(ValueError):
        replace(first, index=persona_net.MAX_INDEX + 1)
    assert persona_net.REAL_MARK == 1 << budgets.PERSONA.ct_mark[0].first
    for direction in (ctmark.EGRESS, ctmark.INGRESS):
        mark, mask = ctmark.commit(direction, ctmark.APP_DENIED)
        assert mask & ~budgets.PERSONALITY.ct_mark[0].mask == 0
    zones = personality_interface.ZONES
    assert zones == budgets.INTERFACE_ZONES
    assert 2 * personality_interface.MAX_PORT + 1 in zones


# ------------------------------------------------------------------ the compilers
def _fabric_flows():
    subnet = Subnet.from_body("s", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    hosts = (Host("02:00:00:00:01:01", ("10.0.1.1",), 1, 3, 1.0),
             Host("02:00:00:00:02:01", ("10.0.1.2",), 2, 4, 1.0))
    inp = FabricInput(frozenset({1, 2}), frozenset({Link.of(1, 1, 2, 1)}), hosts, (subnet,),
                      ROUTER)
    return [f for flows in compile_fabric(inp).values() for f in flows] + list(bootstrap_flows())


FULL = {"name": "full", "ip_addresses": ["10.0.1.10"],
        "firewall_rules": [{"protocol": "tcp", "port": "1000-2000", "direction": "ingress",
                            "action": "allow"},
                           {"protocol": "icmp", "direction": "egress", "action": "deny"}],
        "default_action": "allow",
        "dns_servers": ["10.0.9.53"],
        "routing_table": [{"destination": "10.8.0.0/16", "next_hop": "10.0.1.20"}],
        "qos_settings": {"priority": 3, "egress_rate_kbps": 1000, "ingress_rate_kbps": 500},
        "application_access_policy": {
            "allow": [{"name": "http", "protocol": "tcp", "port": 80, "signature": "GET "}],
            "deny": [{"name": "telnet", "protocol": "tcp", "port": 23},
                     {"name": "q", "protocol": "udp", "port": 7000, "signature": "Q"}]},
        "vpn_tunnel_config": {"type": "vxlan", "remote_ip": "192.0.2.9", "key": 7,
                              "remote_prefixes": ["10.50.0.0/16"]}}


def _personality_flows():
    iface = Interface(1, 3, "02:00:00:00:01:01", zone=budgets.INTERFACE_ZONES.last - 1)
    policy = PersonalityPolicy.from_body("full", FULL, 2)
    vpn = policy.vpn
    assert vpn is not None
    ctx = Context(router_mac=ROUTER, macs={"10.0.1.20": "02:00:00:00:01:14"},
                  tunnel_ports={tunnel_port_name(1, 3, vpn): 9})
    return (list(compile_personality(iface, policy, interface_zone(iface, 1), ctx))
            + list(compile_transition(iface, policy, interface_zone(iface, 0), ctx))
            + list(compile_personality(Interface(2, personality_interface.MAX_PORT,
                                                 "02:00:00:00:02:01"), policy)))


def _persona_input():
    common = dict(ip_range=IPv4Network("10.100.0.0/24"), gateway_ip=IPv4Address("10.100.0.1"),
                  protocols=frozenset({6, 17}),
                  policies=(Policy(6, (80, 80), "allow"), Policy(6, (22, 22), "deny")))
    a = PersonaNet(id="a", index=1, nat_range=IPv4Network("100.64.0.0/24"), owns_real=True,
                   bandwidth_kbps=1000, dscp=46,
                   members=(Member("m", 2, 5, "02:00:0a:00:01:01", IPv4Address("10.100.0.5")),),
                   **common)
    b = PersonaNet(id="b", index=persona_net.MAX_INDEX, nat_range=IPv4Network("100.64.1.0/24"),
                   bandwidth_kbps=2000, closing=True,
                   members=(Member("n", 1, 6, "02:00:0a:00:01:02", IPv4Address("10.100.0.5")),),
                   **common)
    hosts = (Host("02:00:00:00:01:01", ("10.0.1.1",), 1, 3, 1.0),)
    return GatewayInput(gateway_dpid=1, gateway_mac=GW_MAC, router_mac=ROUTER,
                        switches=frozenset({1, 2}), hops={1: {2: 1}, 2: {1: 1}}, hosts=hosts,
                        personas=(a, b))


def _policy_flows():
    member = policy_observe.Member("if-1", 1, 3, "02:00:00:00:01:01", ("10.0.1.1",),
                                   tables.PERSONALITY_EGRESS.id, tables.PERSONALITY_INGRESS.id)
    last = len(budgets.POLICY.zones[0]) - 1
    return (policy_observe.observe_flows(member, 0, policy_observe.record_cookie("web"))
            + policy_observe.observe_flows(member._replace(port=4, ingress_goto=None), last,
                                           policy_observe.record_cookie("db"))
            + _policy_enforce_flows(member._replace(port=5, egress_goto=tables.ARP.id,
                                                    ingress_goto=None), last))


def _policy_enforce_flows(member, index):
    rule = policy_enforce.EffectiveRule(
        RuleKey("egress", "tcp", 80, Peer("address", "198.51.100.1")), "allow",
        ("198.51.100.0/24",))
    infra = policy_enforce.Infrastructure(("10.0.1.254",), ("10.0.1.53",))
    return [f for mode in ("enforce", "audit")
            for f in policy_enforce.enforce_flows(policy_enforce.Enforced(
                member, index, (rule,), mode, infra, policy_enforce.review_cookie("new-web")))]


def test_every_compiled_flow_stays_inside_its_features_budget():
    inp = _persona_input()
    flows = (_fabric_flows() + _personality_flows()
             + [f for fl in compile_personas(inp).values() for f in fl] + _policy_flows())
    assert {cookies.parse(f.cookie).feature for f in flows} == {
        Feature.FABRIC, Feature.PERSONALITY, Feature.PERSONA, Feature.POLICY}
    assert budgets.audit(flows) == []
    meters = list(compile_meters(inp)) + list(personality_meters(
        Interface(1, 3, "02:00:00:00:01:01"), PersonalityPolicy.from_body("full", FULL, 2)))
    assert meters and all(budgets.owns_meter(m.meter_id) for m in meters)


@pytest.mark.parametrize("stray, what", [
    (flow(0, 300, {"in_port": 1}, cookie=cookies.make(Feature.PERSONA, "x")), "table 0 at"),
    (flow(50, 0, cookie=cookies.make(Feature.PERSONALITY, "x")), "table 50 at"),
    (flow(71, 5, cookie=cookies.make(Feature.PERSONALITY, "x")), "table 71"),
    (flow(3, 5, meter=0x10002, cookie=cookies.make(Feature.PERSONALITY, "x")), "meter"),
    (flow(3, 5, {"reg6": 1}, cookie=cookies.make(Feature.PERSONALITY, "x")), "matches reg6"),
    (flow(3, 5, {"ct_mark": (0x40, 0x40)}, cookie=cookies.make(Feature.PERSONALITY, "x")),
     "ct_mark"),
    (flow(71, 5, actions=[Conntrack(zone=2, table=72)], cookie=cookies.make(Feature.PERSONA, "x")),
     "zone 2"),
    (flow(0, 5, cookie=0), "names no budget"),
], ids=["priority", "fabric-band", "table", "meter", "register", "ct_mark", "zone", "cookie"])
def test_the_audit_finds_what_strays(stray, what):
    problems = budgets.audit([stray])
    assert len(problems) == 1 and what in problems[0], problems




# ------------------------------------------------------------------ wiring
def test_each_registered_feature_refers_to_its_own_budget():
    from controller import registry
    for plugin in registry.FEATURES:
        cls = plugin.feature_class()
        assert cls.budget is budgets.BY_FEATURE[plugin.name], plugin.name
        assert cls.budget.cookie is not None and not cls.budget.reserved


def test_the_budgets_are_core_data_that_import_no_feature():
    import subprocess
    import sys
    code = ("import sys, controller.core.budgets; "
            "print(sorted(m for m in sys.modules if m.startswith('controller.features')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
