"""The adaptive percentage: the rule (halved when unhealthy, one point up after the
hysteresis, within min..max, rounded), and on a hub over fake switches an agent reporting
lag brings it down (shadow-state, the compiled sampling, the journal) and recovery up."""
from __future__ import annotations

import pytest

from controller.agents.shadow import protocol as p
from controller.features.shadow.adaptive import (HYSTERESIS, Adjuster, Health, Step,
                                                 kept_percentage, next_percentage, problem_of)
from controller.features.shadow.document import KIND, STATE, Adjustment, parse_manifest
from controller.features.shadow.mirroring import mirror_input
from controller.features.shadow.records import Instance, Load, Percentage
from tests.unit.hubtest import A, run
from tests.unit.test_shadow_manager import WEB, agents, fab, launched  # noqa: F401 (fixture)

ADAPT = Adjustment(mode="adaptive", min=5.0, max=50.0)
HEALTHY = Health(None, HYSTERESIS)


def ready(drops: int = 0, lag_ms: float = 0.0) -> Instance:
    return Instance(id="web-1", slot_id="slot-1", state="ready",
                    load=Load(pps=10, drops=drops, lag_ms=lag_ms))


# -- the rule --------------------------------------------------------------------------------

def test_unhealthy_halves_down_to_min_and_rounds():
    assert next_percentage(40.0, ADAPT, Health("lag")) == Step(20.0, "lag")
    assert next_percentage(12.5, ADAPT, Health("lag")) == Step(6.2, "lag")     # 6.25 -> 0.1
    assert next_percentage(7.0, ADAPT, Health("lag")) == Step(5.0, "lag")      # floor
    assert next_percentage(5.0, ADAPT, Health("lag")) is None                  # already there


def test_healthy_goes_up_one_point_only_after_the_hysteresis_up_to_max():
    assert next_percentage(20.0, ADAPT, Health(None, HYSTERESIS - 1)) is None
    assert next_percentage(20.0, ADAPT, HEALTHY) == Step(21.0, f"healthy for {HYSTERESIS} s")
    assert next_percentage(49.6, ADAPT, HEALTHY).percentage == 50.0            # ceiling
    assert next_percentage(50.0, ADAPT, HEALTHY) is None
    assert next_percentage(80.0, ADAPT, Health("lag")).percentage == 25.0      # from max


def test_problems_are_drops_lag_and_the_hubs_load():
    assert problem_of([ready()], 0.2) is None
    assert problem_of([ready(drops=12)], 0.2) == "instance web-1 reports 12 drops"
    assert problem_of([ready(lag_ms=800)], 0.2) == "instance web-1 reports a lag of 800 ms"
    assert problem_of([ready(lag_ms=400)], 0.2) is None
    assert problem_of([ready()], 2.0) == "the hub's load is 2.00 per CPU"
    assert problem_of([ready().model_copy(update={"load": None})], 0.2) is None


def test_the_adjuster_steps_once_a_second_and_waits_the_hysteresis_between_steps_up():
    adj, t, current, changes = Adjuster(), 0.0, 20.0, []
    assert adj.step("web", 20.0, ADAPT, "lag", t) == Step(10.0, "lag")
    assert adj.step("web", 10.0, ADAPT, "lag", t + 0.5) is None                 # same second
    current = 10.0
    for n in range(1, 2 * HYSTERESIS + 1):
        step = adj.step("web", current, ADAPT, None, t + n)
        if step is not None:
            changes.append(n)
            current = step.percentage
    assert changes == [HYSTERESIS, 2 * HYSTERESIS] and current == 12.0
    assert adj.next_wakeup(t + 2 * HYSTERESIS + 0.25) == 0.75
    adj.forget("web")
    assert adj.next_wakeup(0.0) is None


def test_kept_percentage_keeps_an_adapted_one_and_otherwise_the_manifests():
    fixed = parse_manifest({**WEB, "shadowing": {**WEB["shadowing"],
                                                 "shadow_traffic_percentage": 80.0}})
    adaptive = fixed.model_copy(update={"adjustment": ADAPT})
    adapted = Percentage(current=20.0, reason="lag")
    assert kept_percentage(adapted, fixed) == Percentage(current=80.0, reason="as configured")
    assert kept_percentage(adapted, adaptive) == adapted
    assert kept_percentage(None, adaptive) == Percentage(current=50.0, reason="as configured")
    assert kept_percentage(adapted, None).current == 0.0


# -- on the hub ------------------------------------------------------------------------------

def percentage(fab) -> dict:
    return fab.store.get(STATE, "web").body["percentage"]


def permille(fab) -> int:
    shadow = fab.hub.feature("shadow")
    inp = mirror_input(fab.store, fab.hub.view(), shadow.appliances, shadow.indexes.of,
                       shadow.slots)
    (net,) = inp.appliances
    return net.permille


def installed(fab) -> bool:
    """The switch holds what the feature compiles now (its sampling included)."""
    flows = fab.hub.feature("shadow").contribute(fab.hub.view()).flows[A]
    return set(flows) <= set(fab.a.flows.values())


def test_lag_brings_the_percentage_down_and_recovery_brings_it_back_up(fab):
    one, two = agents(fab)
    one.hello()
    two.hello()
    fab.hub.feature("shadow").manager.tuning.host_load = lambda: 0.1
    fab.store.put(KIND, "web", {**WEB, "shadowing": {**WEB["shadowing"],
                                                     "shadow_traffic_percentage": 40.0},
                                "adjustment": {"mode": "adaptive", "min": 5.0, "max": 50.0}})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    iid, _ = launched(one)
    one.send(p.Ready(iid, (), ()))
    assert percentage(fab) == {"current": 40.0, "reason": "as configured"}
    assert permille(fab) == 400 and installed(fab)
    bundles = len(fab.a.applies)

    fab.clock.advance(1.0)
    one.send(p.Heartbeat(iid, 10.0, 0, 900.0, 1.5))          # lagging
    assert percentage(fab) == {"current": 20.0,
                               "reason": f"instance {iid} reports a lag of 900 ms"}
    assert permille(fab) == 200 and installed(fab)
    assert len(fab.a.applies) == bundles + 1                  # one bundle for the change
    entries = [m for _, _, m in fab.events("shadow") if m.startswith("percentage")]
    assert entries == [f"percentage 40.0 -> 20.0: instance {iid} reports a lag of 900 ms"]

    one.send(p.Heartbeat(iid, 10.0, 0, 900.0, 1.5))          # same second: no second step
    assert percentage(fab)["current"] == 20.0

    seen = []
    for _ in range(2 * HYSTERESIS):
        fab.clock.advance(1.0)
        one.beat(iid)                                         # healthy again
        seen.append(percentage(fab)["current"])
    assert seen == [20.0] * (HYSTERESIS - 1) + [21.0] + [21.0] * (HYSTERESIS - 1) + [22.0]
    assert percentage(fab)["reason"] == f"healthy for {HYSTERESIS} s"
    assert permille(fab) == 220 and installed(fab)    # (each heartbeat rewrote the state)


@pytest.mark.parametrize("drops, load", [(12, 0.1), (0, 3.0)])
def test_drops_or_the_hubs_load_bring_it_down_to_min(fab, drops, load):
    one, _ = agents(fab)
    one.hello()
    fab.hub.feature("shadow").manager.tuning.host_load = lambda: load
    fab.store.put(KIND, "web", {**WEB, "adjustment": {"mode": "adaptive", "min": 5.0}})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    iid, _ = launched(one)
    one.send(p.Ready(iid, (), ()))
    for _ in range(4):
        fab.clock.advance(1.0)
        one.send(p.Heartbeat(iid, 10.0, drops, 0.0, 1.5))
    reason = f"instance {iid} reports 12 drops" if drops else "the hub's load is 3.00 per CPU"
    entries = [m for _, _, m in fab.events("shadow") if m.startswith("percentage")]
    assert entries == [f"percentage 12.5 -> 6.2: {reason}", f"percentage 6.2 -> 5.0: {reason}"]
    assert percentage(fab) == {"current": 5.0, "reason": reason} and permille(fab) == 50
    assert installed(fab)
