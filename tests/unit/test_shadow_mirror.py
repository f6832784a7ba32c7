"""The mirror compiler (controller.features.shadow.mirror) and the two actions it added to
the pipeline (Clone, OutputTrunc): flow shapes, nested sampling over every hash value,
the instance split, held sources, blocks, the guard of a shadow's port, budgets,
determinism."""
from __future__ import annotations

from dataclasses import replace

import pytest
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_4

from controller.core import budgets
from controller.features.shadow.mirror import (AGENT_METER, BLOCK, COPY, GUARD_AGENT, GUARD_DROP,
                                               HELD, HOOK_CLASSIFY, HOOK_L2, IN_RANGE,
                                               NOT_AN_OPEN, UNDECIDED, UNSAMPLED, ApplianceNet,
                                               Block, Endpoint, InstanceNet, MirrorInput,
                                               ServicePort, appliance_cookie, appliance_flows,
                                               compile_mirror, guard_cookie, instance_cookie,
                                               mirror_meters, required_actions)
from controller.features.shadow.mirror_net import (BUCKET_MASK, BUCKET_OFS, DECIDED,
                                                   ORDINAL_MASK, SAMPLED, ZONES, below,
                                                   sampled_mark)
from controller.pipeline import cookies, ofcodec, tables
from controller.pipeline.actions import (CONTROLLER, Clone, Conntrack, Move, Multipath, Opaque,
                                         Output, OutputTrunc, SetField, ct_state, flat)
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowSpec, flow
from controller.pipeline.ofctl import render_action, render_flow

ROUTER = "02:b5:00:00:00:01"
PROD = Endpoint(1, 1, "02:00:0a:00:01:0a")
SH1 = InstanceNet("slot-1", 1, 3, "02:00:0a:00:01:1e", 0, "10.0.1.254")
SH2 = InstanceNet("slot-2", 2, 4, "02:00:0a:00:02:1e", 5, "10.0.2.254")
HOPS = {1: {2: 7}, 2: {1: 8}}
BLOCKED = Block("198.51.100.66", cookies.make(Feature.SHADOW, "finding:f-1"))


def appliance(**kw) -> ApplianceNet:
    base = dict(id="web", index=3, production=(PROD,), service=(ServicePort("tcp", 80),),
                permille=100, instances=(SH1,))
    return ApplianceNet(**{**base, **kw})


def compiled(*apps: ApplianceNet, switches=(1, 2)) -> dict[int, tuple[FlowSpec, ...]]:
    return compile_mirror(MirrorInput(frozenset(switches), ROUTER, HOPS, apps, 6700))


def pick(flows, table: int, priority: int | None = None) -> list[FlowSpec]:
    return [f for f in flows if f.table == table and (priority is None or f.priority == priority)]


# ------------------------------------------------------------------ the new actions
@pytest.mark.parametrize("version", [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION],
                         ids=["of13", "of14"])
@pytest.mark.parametrize("action", [
    Clone((Conntrack(zone=0xC003, table=7),)),
    Clone((Move("reg7", "in_port", 16), SetField("eth_dst", "02:00:00:00:00:03"),
           OutputTrunc(3, 128))),
    Clone((Conntrack(commit=True, zone=0xC003, mark=0x2100, mark_mask=0xFF00), Output(4))),
    OutputTrunc(0xFEFF, 14),
])
def test_clone_and_truncated_output_survive_the_wire(version, action):
    parser = ofproto_protocol.ProtocolDesc(version).ofproto_parser
    buf = bytearray()
    ofcodec.encode_action(parser, action).serialize(buf, 0)
    assert len(buf) % 8 == 0
    back = parser.OFPAction.parser(bytes(buf), 0)
    assert back.len == len(buf)
    assert ofcodec.decode_action(parser, back) == action


def test_clone_is_nxast_clone_with_its_actions_after_six_pad_bytes():
    parser = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION).ofproto_parser
    buf = bytearray()
    ofcodec.encode_action(parser, Clone((Output(2),))).serialize(buf, 0)
    # experimenter header (type 0xffff, len 32, Nicira), subtype 42, 6 pad, output:2
    assert buf.hex() == ("ffff0020" "00002320" "002a" "000000000000"
                         "00000010" "00000002" "0000" "000000000000")


def test_an_unknown_nested_action_decodes_the_clone_as_opaque():
    parser = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION).ofproto_parser
    clone = parser.NXActionClone([parser.NXActionExit()])
    assert isinstance(ofcodec.decode_action(parser, clone), Opaque)


def test_the_new_actions_render_as_ovs_ofctl_writes_them():
    assert render_action(OutputTrunc(3, 128)) == "output(port=3,max_len=128)"
    assert render_action(Clone((Conntrack(zone=49155, table=7),))) == \
        "clone(ct(zone=49155,table=7))"
    assert render_action(Clone((SetField("eth_dst", "02:00:00:00:00:03"), Output(3)))) == \
        "clone(set_field:02:00:00:00:00:03->eth_dst,output:3)"


@pytest.mark.parametrize("bad", [
    lambda: Clone(()), lambda: Clone([Output(1)]), lambda: Clone((Clone((Output(1),)),)),
    lambda: Clone((Opaque("x"),)), lambda: OutputTrunc(0, 64), lambda: OutputTrunc(CONTROLLER, 64),
    lambda: OutputTrunc(3, 13)])
def test_the_new_actions_refuse_what_they_cannot_be(bad):
    with pytest.raises(ValueError):
        bad()


def test_a_clone_is_held_to_the_layout_and_the_budgets_like_its_actions():
    backward = flow(tables.L2.id, HOOK_L2, {}, [Clone((Conntrack(zone=0xC000, table=7),))],
                    cookie=cookies.make(Feature.SHADOW))
    with pytest.raises(tables.LayoutError, match="ct resumes in"):
        tables.check([backward])
    stray = flow(tables.CLASSIFY.id, HOOK_CLASSIFY, {},
                 [Clone((Conntrack(zone=0x6000, table=7),))], cookie=cookies.make(Feature.SHADOW))
    assert any("conntrack zone 24576" in p for p in budgets.audit([stray]))
    assert flat((Output(1), Clone((Output(2), Output(3))))) == (
        Output(1), Clone((Output(2), Output(3))), Output(2), Output(3))


# ------------------------------------------------------------------ the hooks
def test_the_hooks_copy_with_a_clone_and_carry_the_packet_on_as_the_fabric_would():
    flows = compiled(appliance())[1]
    c, zone = appliance_cookie("web"), ZONES.first + 3
    (out_hook,) = pick(flows, tables.CLASSIFY.id, HOOK_CLASSIFY)
    assert out_hook.match == flow(0, 0, {"in_port": 1, "eth_src": PROD.mac, "eth_type": 0x0800,
                                         "ip_proto": 6, "tcp_src": 80}).match
    assert out_hook.actions == (Clone((Conntrack(zone=zone, table=tables.SHADOW_FROM.id),)),)
    assert out_hook.goto == tables.ARP.id and out_hook.cookie == c
    (in_hook,) = pick(flows, tables.L2.id, HOOK_L2)
    assert in_hook.match == flow(0, 0, {"eth_dst": PROD.mac, "eth_type": 0x0800,
                                        "ip_proto": 6, "tcp_dst": 80}).match
    assert in_hook.actions == (Clone((Conntrack(zone=zone, table=tables.SHADOW_TO.id),)),
                               Output(PROD.port))
    assert in_hook.goto is None


def test_a_personality_interface_keeps_its_tables_after_the_hooks():
    prod = replace(PROD, egress_goto=tables.PERSONALITY_EGRESS.id,
                   ingress_goto=tables.PERSONALITY_INGRESS.id)
    flows = compiled(appliance(production=(prod,)))[1]
    (out_hook,) = pick(flows, tables.CLASSIFY.id, HOOK_CLASSIFY)
    (in_hook,) = pick(flows, tables.L2.id, HOOK_L2)
    assert out_hook.goto == tables.PERSONALITY_EGRESS.id
    assert in_hook.goto == tables.PERSONALITY_INGRESS.id
    assert in_hook.actions == (Clone((Conntrack(zone=ZONES.first + 3,
                                                table=tables.SHADOW_TO.id),)),)


def test_without_a_service_all_ipv4_is_hooked_and_with_two_ports_each_is():
    bare = compiled(appliance(service=()))[1]
    assert [dict(f.match) for f in pick(bare, tables.L2.id, HOOK_L2)] == [
        {"eth_dst": PROD.mac, "eth_type": 0x0800}]
    two = compiled(appliance(service=(ServicePort("tcp", 80), ServicePort("udp", 53))))[1]
    assert sorted(dict(f.match).get("udp_src", 0) + dict(f.match).get("tcp_src", 0)
                  for f in pick(two, tables.CLASSIFY.id, HOOK_CLASSIFY)) == [53, 80]


def test_no_ready_instance_means_no_hooks_but_the_guard_and_the_blocks_stay():
    waiting = replace(SH1, ready=False)
    flows = compiled(appliance(instances=(waiting,), blocks=(BLOCKED,)))[1]
    assert {(f.table, f.priority) for f in flows} == {
        (tables.L2.id, BLOCK), (tables.CLASSIFY.id, GUARD_DROP), (tables.CLASSIFY.id, GUARD_AGENT),
        (tables.SHADOW_AGENT.id, 200), (tables.SHADOW_AGENT.id, 100)}


# ------------------------------------------------------------------ sampling
def covered(pairs) -> set[int]:
    """The 10-bit values some (value, mask) pair matches."""
    out: set[int] = set()
    for value, mask in pairs:
        free = ~mask & 0x3FF
        assert free & (free + 1) == 0 and value & free == 0, "a prefix mask, value inside"
        out |= set(range(value, value + free + 1))
    return out


def test_below_covers_exactly_the_values_below_its_limit_once():
    for limit in range(0, 1025):
        pairs = below(limit)
        assert covered(pairs) == set(range(limit)), limit
        assert sum(len(covered([p])) for p in pairs) == limit, limit    # disjoint
        assert len(pairs) == bin(limit).count("1")
    assert below(1000) == ((0, 0x200), (512, 0x300), (768, 0x380), (896, 0x3C0),
                           (960, 0x3E0), (992, 0x3F8))


def test_below_is_nested():
    for a in range(0, 1001, 7):
        for b in range(a, 1001, 13):
            assert covered(below(a)) <= covered(below(b))


def decide(flows, table: int, hash_value: int, bucket: int, source: str = "10.9.9.9"):
    """The decide-table flow a non-TCP first packet with this hash takes (what OVS picks:
    the highest priority whose match holds)."""
    reg0 = bucket << BUCKET_OFS | hash_value
    hits = []
    for f in pick(flows, table):
        m = dict(f.match)
        if "ip_proto" in m or m.get("ipv4_src", source) != source:
            continue
        value, mask = m.get("reg0", (0, 0))
        if reg0 & mask == value:
            hits.append(f)
    return max(hits, key=lambda f: f.priority)


def sampled_values(flows, table: int, buckets: int = 1) -> dict[int, int]:
    """hash value -> the ordinal its connection is marked with, for the sampled ones."""
    out = {}
    for h in range(1000):
        for k in range(buckets):
            f = decide(flows, table, h, k)
            (ct,) = [a for a in f.actions if isinstance(a, Conntrack)]
            assert ct.commit and ct.mark & DECIDED
            if ct.mark & SAMPLED:
                out[(h, k)] = (ct.mark & ORDINAL_MASK) >> 9
    return out


@pytest.mark.parametrize("table", [tables.SHADOW_FROM_DECIDE.id, tables.SHADOW_TO_DECIDE.id])
def test_exactly_permille_of_the_hash_values_are_sampled_and_smaller_shares_nest(table):
    shares = {}
    for permille in (0, 1, 50, 100, 333, 500, 999, 1000):
        flows = compiled(appliance(permille=permille))[1]
        shares[permille] = {h for h, _ in sampled_values(flows, table)}
        assert len(shares[permille]) == permille
    assert shares[50] <= shares[100] <= shares[333] <= shares[500] <= shares[1000]
    assert shares[1000] == set(range(1000)) and shares[0] == set()


def test_the_masked_ranges_of_50_are_inside_those_of_100():
    ranges = {p: [dict(f.match)["reg0"] for f in
                  pick(compiled(appliance(permille=p))[1], tables.SHADOW_TO_DECIDE.id, IN_RANGE)]
              for p in (50, 100)}
    assert covered((v, m & 0x3FF) for v, m in ranges[50]) <= \
        covered((v, m & 0x3FF) for v, m in ranges[100])
    assert all(m & BUCKET_MASK == BUCKET_MASK for p in ranges for _, m in ranges[p])


def test_the_second_hash_splits_sampled_connections_over_the_ready_instances():
    waiting = InstanceNet("slot-3", 1, 5, "02:00:0a:00:01:1f", 2, "10.0.1.254", ready=False)
    a = appliance(instances=(SH2, waiting, SH1), permille=200)
    flows = compiled(a)[1]
    (hashing,) = pick(flows, tables.SHADOW_FROM.id, UNDECIDED)
    assert hashing.actions == (Multipath(1000, "reg0", 10, 0, basis=0),
                               Multipath(2, "reg0", 4, 16, basis=1))
    assert dict(hashing.match)["ct_state"] == ct_state("+trk+new")
    assert dict(hashing.match)["ct_mark"] == (0, DECIDED)
    split = sampled_values(flows, tables.SHADOW_FROM_DECIDE.id, buckets=2)
    # bucket k goes to the k-th ready instance by ordinal: SH1 (0), then SH2 (5)
    assert {k: {o for (h, kk), o in split.items() if kk == k} for k in (0, 1)} == {0: {0}, 1: {5}}
    assert len(split) == 2 * 200
    copies = {f.cookie: f for f in pick(flows, tables.SHADOW_FROM.id, COPY)}
    assert set(copies) == {instance_cookie("web", "slot-1"), instance_cookie("web", "slot-2")}
    local = copies[instance_cookie("web", "slot-1")]
    assert dict(local.match)["ct_mark"] == (sampled_mark(0), DECIDED | SAMPLED | ORDINAL_MASK)
    assert local.actions == (SetField("eth_dst", SH1.mac), Output(SH1.port))
    remote = copies[instance_cookie("web", "slot-2")]   # through the link, in_port cleared
    assert remote.actions == (Move("reg7", "in_port", 16), SetField("eth_dst", SH2.mac),
                              Output(HOPS[1][2]))
    # even when the link's port number is the instance's own on its switch
    same_number = compile_mirror(MirrorInput(frozenset({1}), ROUTER, {1: {2: SH2.port}},
                                             (a,), 6700))[1]
    (far,) = [f for f in pick(same_number, tables.SHADOW_FROM.id, COPY)
              if f.cookie == instance_cookie("web", "slot-2")]
    assert far.actions[0] == Move("reg7", "in_port", 16) and far.actions[-1] == Output(SH2.port)


def test_snaplen_truncates_every_copy_and_an_unreachable_instance_gets_none():
    flows = compiled(appliance(instances=(SH1, SH2), snaplen=128), switches=(1,))[1]
    outs = [a for f in flows if f.table in (7, 8, 80, 81) for a in f.actions
            if isinstance(a, (Output, OutputTrunc))]
    assert outs and all(isinstance(a, OutputTrunc) and a.max_len == 128 for a in outs)
    lonely = compile_mirror(MirrorInput(frozenset({1}), ROUTER, {}, (appliance(
        instances=(SH1, SH2)),), 6700))[1]
    assert {f.cookie for f in pick(lonely, tables.SHADOW_TO.id, COPY)} == {
        instance_cookie("web", "slot-1")}
    # slot-2's connections are still decided (committed sampled), just not copied from here
    to_sh2 = [f for f in pick(lonely, tables.SHADOW_TO_DECIDE.id, IN_RANGE)
              if f.cookie == instance_cookie("web", "slot-2")]
    assert to_sh2 and all(len(f.actions) == 1 for f in to_sh2)


def test_a_tcp_connection_is_sampled_only_from_its_opening_syn():
    flows = compiled(appliance(permille=1000))[1]
    opening = pick(flows, tables.SHADOW_TO_DECIDE.id, NOT_AN_OPEN)
    assert sorted(dict(f.match)["tcp_flags"] for f in opening) == [(0, 0x2), (0x12, 0x12)]
    for f in opening:
        (ct,) = f.actions
        assert ct.mark == DECIDED and ct.mark_mask == 0xFF00
    assert max(f.priority for f in pick(flows, tables.SHADOW_TO_DECIDE.id)
               if f.priority != NOT_AN_OPEN) < NOT_AN_OPEN
    (rest,) = pick(flows, tables.SHADOW_TO_DECIDE.id, UNSAMPLED)
    assert rest.actions == (Conntrack(commit=True, zone=ZONES.first + 3, mark=DECIDED,
                                      mark_mask=0xFF00),)


def test_held_sources_are_sampled_at_every_hash_above_the_ranges():
    flows = compiled(appliance(permille=0, instances=(SH1, SH2), held_sources=("10.0.5.5",)))[1]
    held = pick(flows, tables.SHADOW_TO_DECIDE.id, HELD)
    assert len(held) == 2 and all(dict(f.match)["ipv4_src"] == "10.0.5.5" for f in held)
    assert HELD > IN_RANGE > UNSAMPLED
    for h in (0, 511, 999):
        for k in (0, 1):
            f = decide(flows, tables.SHADOW_TO_DECIDE.id, h, k, source="10.0.5.5")
            assert f.priority == HELD and f.cookie == instance_cookie(
                "web", ("slot-1", "slot-2")[k])
            other = decide(flows, tables.SHADOW_TO_DECIDE.id, h, k, source="10.0.5.6")
            assert other.priority == UNSAMPLED


def test_a_block_drops_the_source_toward_production_above_everything_of_the_appliance():
    flows = compiled(appliance(blocks=(BLOCKED,)))[1]
    (block,) = pick(flows, tables.L2.id, BLOCK)
    assert block.actions == () and block.goto is None and block.cookie == BLOCKED.cookie
    assert dict(block.match) == {"eth_dst": PROD.mac, "eth_type": 0x0800,
                                 "ipv4_src": BLOCKED.source_ip}
    assert BLOCK == max(f.priority for f in pick(flows, tables.L2.id))
    assert BLOCK in budgets.SHADOW.hooks[2].band and BLOCK == budgets.SHADOW.hooks[2].band.last


# ------------------------------------------------------------------ a shadow's port
def test_everything_a_shadow_sends_is_dropped_but_its_agents_datagrams_and_gateway_arp():
    flows = compiled(appliance())[1]
    c = guard_cookie("slot-1")
    guard = [f for f in flows if f.cookie == c]
    (drop,) = pick(guard, tables.CLASSIFY.id, GUARD_DROP)
    assert dict(drop.match) == {"in_port": SH1.port} and drop.actions == () and drop.goto is None
    exceptions = pick(guard, tables.CLASSIFY.id, GUARD_AGENT)
    assert {f.goto for f in exceptions} == {tables.SHADOW_AGENT.id}
    agent = {"in_port": 3, "eth_type": 0x0800, "ip_proto": 17, "ipv4_dst": "10.0.1.254",
             "udp_dst": 6700}
    assert sorted(dict(f.match).get("eth_type") for f in exceptions) == [0x0800, 0x0806]
    (punt,) = [f for f in pick(guard, tables.SHADOW_AGENT.id) if dict(f.match) == agent]
    assert punt.actions == (Output.controller(),) and punt.meter == AGENT_METER
    (arp,) = [f for f in pick(guard, tables.SHADOW_AGENT.id) if f is not punt]
    assert arp.actions[-1] == Output(0xFFFFFFF8)  # answered back out of its own port
    # above every other hook of classify: the guard wins whatever the shadow sends
    others = [b.band.last for b in budgets.BUDGETS for b in b.hooks
              if b.table == tables.CLASSIFY.id and b is not budgets.SHADOW.hooks[1]]
    assert GUARD_DROP in budgets.SHADOW.hooks[1].band and GUARD_DROP > max(others)
    lonely = compiled(appliance(instances=(replace(SH1, gateway_ip=None),)))[1]
    assert [f for f in lonely if f.cookie == c] == [drop]


def test_the_agent_meter_is_on_every_switch_with_a_punting_guard():
    inp = MirrorInput(frozenset({1, 2}), ROUTER, HOPS, (appliance(instances=(SH1, SH2)),), 6700)
    meters = mirror_meters(inp)
    assert set(meters) == {1, 2}
    assert all(m.meter_id == AGENT_METER and m.meter_id in budgets.SHADOW.meters[0]
               for ms in meters.values() for m in ms)
    assert mirror_meters(replace(inp, appliances=())) == {}


# ------------------------------------------------------------------ whole compiles
def test_every_flow_stays_inside_the_shadow_budget():
    apps = (appliance(instances=(SH1, SH2), held_sources=("10.0.5.5",), blocks=(BLOCKED,),
                      snaplen=96),
            appliance(id="db", index=4, production=(Endpoint(2, 9, "02:00:0a:00:02:09"),),
                      service=(), permille=1000,
                      instances=(replace(SH2, slot_id="slot-9", port=6, ordinal=0),)))
    out = compiled(*apps)
    for dpid, flows in out.items():
        assert budgets.audit(flows) == [], dpid
        assert {cookies.parse(f.cookie).feature for f in flows} == {Feature.SHADOW}
        tables.check(flows)
        keys = [f.key for f in flows]
        assert len(keys) == len(set(keys)), "two flows with one identity on a switch"
        for f in flows:
            render_flow(f)     # each can be written for ovs-ofctl


def test_compiling_is_deterministic_and_each_appliance_owns_its_flows():
    web, db = appliance(), appliance(id="db", index=4, instances=(replace(SH1, slot_id="s9"),),
                                     production=(Endpoint(1, 2, "02:00:0a:00:01:0b"),))
    both = compiled(web, db)
    appliance_flows.cache_clear()
    assert compiled(web, db) == both
    alone = compiled(web)
    assert set(both[1]) - set(alone[1]) == set(compiled(db)[1])
    # a new percentage changes only the decide tables of that appliance
    changed = set(compiled(replace(web, permille=50), db)[1]) ^ set(both[1])
    assert changed and {f.table for f in changed} == {8, 81}


def test_appliance_zones_follow_the_index_inside_the_budget():
    assert appliance(index=0).zone == ZONES.first and appliance(index=4095).zone == ZONES.last
    for bad in (dict(index=4096), dict(index=-1), dict(permille=1001),
                dict(instances=(SH1, replace(SH2, ordinal=0))),
                dict(instances=(replace(SH1, ordinal=16),)),
                dict(service=(ServicePort("sctp", 80),)), dict(held_sources=("10.0.0.0/8",))):
        with pytest.raises(ValueError):
            appliance(**bad)


# ------------------------------------------------------------------ capabilities
def test_required_actions_name_what_the_datapath_must_do():
    assert [r.action for r in required_actions()] == ["ct", "multipath", "clone"]
    assert [r.action for r in required_actions(snaplen=True)][-1] == "output_trunc"
    # what a switch is found to accept: tests/unit/test_shadow_caps.py
