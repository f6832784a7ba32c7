"""The adaptive mode's sample and hold and scaling, and the mirror's counters, on a hub over
fake switches: a finding holds its source at 100% (flows for that source alone) until the
hold ends; an overloaded instance adds one from a free slot and a long healthy spell takes
it away; the counters add each flow's growth, across a re-installed flow and a restart."""
from __future__ import annotations

from controller.agents.shadow import protocol as p
from controller.features.shadow.counting import DECIDE, Tally, growth, tallies
from controller.features.shadow.document import KIND, STATE
from controller.features.shadow.mirror import HELD, instance_cookie
from controller.features.shadow.tuning import SCALE_DOWN_AFTER, SCALE_UP_AFTER
from controller.core.channel import FlowCounters
from controller.pipeline import tables
from controller.pipeline.flowspec import flow
from tests.unit.hubtest import A, H1_IP, run
from tests.unit.test_shadow_manager import WEB, agents, fab, launched  # noqa: F401 (fixture)

EVIL = "10.0.1.20"
ADAPTIVE = {"mode": "adaptive", "min": 5.0, "max": 50.0, "hold": "30s"}


def start(fab, adjustment=ADAPTIVE, **shadowing):
    """web (adaptive unless told), one instance ready on slot-1; both agents."""
    one, two = agents(fab)
    one.hello()
    two.hello()
    fab.hub.feature("shadow").manager.tuning.host_load = lambda: 0.1
    fab.store.put(KIND, "web", {**WEB, "shadowing": {**WEB["shadowing"], **shadowing},
                                "adjustment": adjustment})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    iid, _ = launched(one)
    one.send(p.Ready(iid, ("IDS_Signature_Scan",), ()))
    return one, two, iid


def state(fab) -> dict:
    return fab.store.get(STATE, "web").body


def held_flows(fab) -> list:
    return [f for f in fab.a.flows.values() if f.priority == HELD and f.table in DECIDE]


def later(fab, seconds: float) -> None:
    fab.clock.advance(seconds)
    fab.wall.advance(seconds)
    run(fab.hub)


def shadow_events(fab) -> list[str]:
    return [m for _, _, m in fab.events("shadow")]


# -- sample and hold --------------------------------------------------------------------------

def test_a_finding_holds_its_source_at_100_percent_until_the_hold_ends(fab):
    one, _, iid = start(fab)
    assert held_flows(fab) == []
    five = p.FiveTuple("tcp", EVIL, 40000, H1_IP, 80)
    one.send(p.Findings(iid, 1, (p.Finding("IDS_Signature_Scan", "low", five, "x", 5.0),)))
    (hold,) = state(fab)["holds"]
    assert (hold["source"], hold["finding_id"]) == (EVIL, "slot-1-1-0")
    flows = held_flows(fab)
    assert flows and {dict(f.match)["ipv4_src"] for f in flows} == {EVIL}
    assert {f.table for f in flows} == DECIDE
    assert any(f"{EVIL} held" in m for m in shadow_events(fab))
    for _ in range(29):
        later(fab, 1.0)
        one.beat(iid)
    assert held_flows(fab)
    later(fab, 1.5)
    assert state(fab)["holds"] == [] and held_flows(fab) == []
    assert any(f"{EVIL} no longer held" in m for m in shadow_events(fab))


def test_no_hold_in_fixed_mode_nor_for_the_appliances_own_address(fab):
    one, _, iid = start(fab, adjustment={"mode": "fixed"})
    five = p.FiveTuple("tcp", EVIL, 40000, H1_IP, 80)
    one.send(p.Findings(iid, 1, (p.Finding("IDS_Signature_Scan", "low", five, "x", 5.0),)))
    assert state(fab)["holds"] == [] and held_flows(fab) == []

    fab.store.put(KIND, "web", {**WEB, "adjustment": ADAPTIVE})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    own = p.FiveTuple("tcp", H1_IP, 80, EVIL, 40000)
    one.send(p.Findings(iid, 2, (p.Finding("IDS_Signature_Scan", "low", own, "x", 5.0),)))
    assert state(fab)["holds"] == []


# -- scaling -----------------------------------------------------------------------------------

def test_an_overloaded_instance_adds_one_and_a_long_healthy_spell_removes_it(fab):
    one, two, iid = start(fab)
    for _ in range(SCALE_UP_AFTER + 1):              # (a tick sees the heartbeat before)
        later(fab, 1.0)
        one.send(p.Heartbeat(iid, 10.0, 0, 900.0, 95.0))       # lagging
        two.beat(None)
    assert state(fab)["added"] == 1
    second, _ = launched(two)
    two.send(p.Ready(second, ("IDS_Signature_Scan",), ()))
    assert [i["state"] for i in state(fab)["instances"]] == ["ready", "ready"]
    assert any(m.startswith("one more instance (2)") for m in shadow_events(fab))

    for _ in range(SCALE_DOWN_AFTER + 1):
        later(fab, 1.0)
        one.beat(iid)
        two.beat(second)
    assert state(fab)["added"] == 0
    assert any(m.startswith("one instance less (1)") for m in shadow_events(fab))
    assert [i["id"] for i in state(fab)["instances"] if i["state"] in ("ready", "launching")] \
        == [iid]


def test_no_scaling_without_a_free_slot_or_past_max_instances(fab):
    one, two, iid = start(fab, adjustment={**ADAPTIVE, "max_instances": 1})
    for _ in range(2 * SCALE_UP_AFTER):
        later(fab, 1.0)
        one.send(p.Heartbeat(iid, 10.0, 5, 0.0, 95.0))
        two.beat(None)
    assert state(fab)["added"] == 0


# -- counters ----------------------------------------------------------------------------------

def counted(table: int, priority: int, packets: int, nbytes: int) -> FlowCounters:
    return FlowCounters(flow(table, priority, {"reg0": priority}), packets, nbytes)


def test_growth_adds_each_flows_growth_and_all_of_a_new_or_restarted_one():
    t1 = tallies(A, [counted(tables.SHADOW_TO_DECIDE.id, 1, 3, 300),
                     counted(tables.SHADOW_TO.id, 2, 10, 1000),
                     counted(tables.L2.id, 3, 99, 9999)])             # not a mirror table
    assert sum(t1.values(), Tally()) == Tally(3, 13, 1300)
    t2 = tallies(A, [counted(tables.SHADOW_TO_DECIDE.id, 1, 5, 500),
                     counted(tables.SHADOW_TO.id, 2, 4, 400),         # re-installed: 4 new
                     counted(tables.SHADOW_FROM_DECIDE.id, 7, 1, 60)])  # new
    assert growth(t1, t2) == Tally(2 + 1, 2 + 4 + 1, 200 + 400 + 60)
    assert growth(t2, t2) == Tally()


def test_get_shows_the_connections_packets_and_bytes_read_from_the_switch(fab):
    one, _, iid = start(fab, adjustment={"mode": "fixed"})      # the sampling flows stay
    cookie = instance_cookie("web", "slot-1")
    mine = [f for f in fab.a.flows.values() if f.cookie == cookie]
    decide = next(f for f in mine if f.table in DECIDE)
    track = next(f for f in mine if f.table not in DECIDE)
    fab.a.counts = {decide.key: (4, 400), track.key: (20, 3000)}
    later(fab, 2.5)
    counters = state(fab)["counters"]
    assert (counters["connections"], counters["packets"], counters["bytes"]) == (4, 24, 3400)
    (inst,) = state(fab)["instances"]
    assert inst["counters"]["connections"] == 4
    one.send(p.Heartbeat(iid, 10.0, 7, 0.0, 1.0))                # 7 dropped at the slot
    fab.a.counts = {decide.key: (6, 600), track.key: (25, 3500)}
    later(fab, 2.5)
    counters = state(fab)["counters"]
    assert counters == {"connections": 6, "packets": 31, "bytes": 4100, "dropped": 7}
    registry = fab.hub.metrics.registry
    assert registry.get_sample_value("hub_shadow_mirrored_total",
                                     {"appliance": "web", "what": "connections"}) == 6

    fab.hub = fab.make_hub()                  # a restart: the switch's counters stay as they are
    fab.connect()
    fab.settle()
    later(fab, 2.5)
    assert state(fab)["counters"]["packets"] == 31               # a baseline, not added again
    fab.a.counts = {decide.key: (7, 700), track.key: (30, 4000)}
    later(fab, 2.5)
    assert state(fab)["counters"]["packets"] == 37
