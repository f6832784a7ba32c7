"""The meter reconciler against a fake switch that keeps meters as OVS does."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from controller.core import budgets
from controller.features.persona.net import PersonaNet, meter_ids, persona_meters

from controller.reconcile.meters import MeterDiff, MeterReconciler, diff
from controller.pipeline import cookies
from controller.pipeline.actions import Output
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowKey, FlowSpec, flow
from controller.pipeline.meters import EGRESS, INGRESS, MeterSpec, meter_id_for
from controller.reconcile.flows import ApplyError, FlowDiff, Reconciler

HUB = cookies.make(Feature.POLICY, "ratelimit")
E1, I1, E2 = meter_id_for(1, EGRESS), meter_id_for(1, INGRESS), meter_id_for(2, EGRESS)


class FakeSwitch:
    """Meters and flows with OVS's rules.

    ADD of an existing meter and MODIFY of a missing one are refused; a flow
    naming a missing meter is refused; deleting a meter removes the flows that
    use it.  Meter mods are applied one by one (not atomic).
    """

    def __init__(self, meters=(), flows=()) -> None:
        self.meter_table: dict[int, MeterSpec] = {m.meter_id: m for m in meters}
        self.flows: dict[FlowKey, FlowSpec] = {f.key: f for f in flows}
        self.log: list[tuple] = []  # ("meters", add ids, modify ids, delete ids), ("flows", diff)
        self.reads = 0
        self.flows_lost: list[FlowSpec] = []

    # MeterChannel
    def meters(self) -> list[MeterSpec]:
        self.reads += 1
        return list(self.meter_table.values())

    def apply_meters(self, add=(), modify=(), delete=()) -> None:
        self.log.append(("meters", tuple(m.meter_id for m in add),
                         tuple(m.meter_id for m in modify), tuple(delete)))
        errors = 0
        for m in add:
            if m.meter_id in self.meter_table:
                errors += 1          # OFPMMFC_METER_EXISTS
            else:
                self.meter_table[m.meter_id] = m
        for m in modify:
            if m.meter_id not in self.meter_table:
                errors += 1          # OFPMMFC_UNKNOWN_METER
            else:
                self.meter_table[m.meter_id] = m
        for i in delete:
            self.meter_table.pop(i, None)
            for key, f in list(self.flows.items()):
                if f.meter == i:
                    self.flows_lost.append(f)
                    del self.flows[key]
        if errors:
            raise ApplyError(f"{errors} meter mod(s) refused")

    # FlowChannel
    def dump_flows(self, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        return [f for f in self.flows.values() if f.cookie & cookie_mask == cookie & cookie_mask]

    def apply(self, change: FlowDiff) -> None:
        self.log.append(("flows", change))
        for f in change.add:
            if f.meter is not None and f.meter not in self.meter_table:
                raise ApplyError("OFPMMFC_INVALID_METER")  # the bundle rolls back
        table = dict(self.flows)
        for f in change.delete:
            table.pop(f.key, None)
        for f in change.add:
            table[f.key] = f
        self.flows = table


FREE = 0x30000   # a meter id no budget declares (an operator may use it)


def test_diff_adds_modifies_and_deletes_only_hub_meters():
    installed = [MeterSpec(E1, 1000), MeterSpec(I1, 2000), MeterSpec(E2, 3000, 100),
                 MeterSpec(1, 5), MeterSpec(FREE, 5), MeterSpec(0xFFFF0000, 5), MeterSpec(9, 0),
                 MeterSpec(65538, 5)]
    desired = [MeterSpec(E1, 1000), MeterSpec(I1, 2500), MeterSpec(E2, 3000),
               MeterSpec(20, 10), MeterSpec(9, 100), MeterSpec(65538, 5)]
    assert diff(desired, installed) == MeterDiff(
        add=(MeterSpec(20, 10),),
        modify=(MeterSpec(I1, 2500), MeterSpec(E2, 3000),   # E2: burst 100 -> the default
                MeterSpec(9, 100)),
        delete=())
    # ids outside every budget's meter ranges are never deleted; those inside are, when not
    # desired (65538: a persona's, 2..65535: a personality's)
    assert diff([], installed).delete == (E1, I1, E2, 9, 65538)
    assert all(budgets.owns_meter(i) for i in diff([], installed).delete)
    assert not any(budgets.owns_meter(i) for i in (1, FREE, 0xFFFF0000))


def test_diff_refuses_bad_desired_meters():
    with pytest.raises(ValueError, match="two different meters"):
        diff([MeterSpec(E1, 1), MeterSpec(E1, 2)], [])
    assert diff([MeterSpec(E1, 1), MeterSpec(E1, 1)], []) == MeterDiff(add=(MeterSpec(E1, 1),))
    with pytest.raises(ValueError, match="above 0"):
        diff([MeterSpec(E1, 0)], [])
    for foreign in (1, FREE, 0xFFFF0000):   # the hub could never delete it again
        with pytest.raises(ValueError, match="outside the meter ranges"):
            diff([MeterSpec(foreign, 10)], [])


def _persona(index: int, kbps: int | None) -> PersonaNet:
    return PersonaNet(id=f"p{index}", index=index, ip_range=IPv4Network(f"10.{index}.0.0/24"),
                      gateway_ip=IPv4Address(f"10.{index}.0.1"), protocols=frozenset({6}),
                      bandwidth_kbps=kbps)


def test_a_persona_meter_is_deleted_once_the_persona_no_longer_wants_it():
    """Persona meters lie beyond 65535: they are the hub's too, and go with their persona."""
    a, b = _persona(1, 10_000), _persona(2, 5_000)
    sw = FakeSwitch()
    rec = MeterReconciler(sw)
    rec.sync(persona_meters(a) + persona_meters(b))
    assert set(sw.meter_table) == set(meter_ids(a)) | set(meter_ids(b))
    assert min(sw.meter_table) > 65535
    # b deleted (or expired): its two meters leave the gateway, a's stay
    change = rec.sync_after_flows(persona_meters(a))
    assert change == MeterDiff(delete=tuple(meter_ids(b)))
    assert set(sw.meter_table) == set(meter_ids(a))
    # a loses its bandwidth limit: nothing of the personas is left
    rec.sync(persona_meters(replace(a, bandwidth_kbps=None)))
    assert sw.meter_table == {}
    # and a restarted hub (reading the switch back) finds and removes leftovers too
    left = FakeSwitch(meters=persona_meters(b) + (MeterSpec(FREE, 7),))
    MeterReconciler(left).sync([])
    assert left.meter_table == {FREE: MeterSpec(FREE, 7)}


def test_diff_summary_and_truth():
    d = MeterDiff(add=(MeterSpec(2, 1),), modify=(MeterSpec(3, 1), MeterSpec(4, 1)), delete=(5,))
    assert d and len(d) == 4
    assert d.summary() == {"add": 1, "modify": 2, "delete": 1}
    assert not MeterDiff() and len(MeterDiff()) == 0


def test_first_sync_reads_back_then_adds():
    sw = FakeSwitch()
    rec = MeterReconciler(sw)
    desired = [MeterSpec(E1, 10_000, 1000), MeterSpec(I1, 5000)]
    change = rec.sync(desired)
    assert sw.reads == 1
    assert change == MeterDiff(add=tuple(desired))
    assert sw.meter_table == {E1: desired[0], I1: desired[1]}
    assert rec.installed == sw.meter_table and not rec.needs_readback
    # in sync: nothing sent, nothing read
    assert not rec.sync(desired)
    assert sw.reads == 1 and len(sw.log) == 1


def test_sync_modifies_changed_and_deletes_undesired():
    foreign = MeterSpec(1, 42)  # an operator's meter, outside the hub's range
    sw = FakeSwitch(meters=[MeterSpec(E1, 1000), MeterSpec(I1, 2000), MeterSpec(E2, 7, 7),
                            MeterSpec(99, 0), foreign])
    rec = MeterReconciler(sw)
    change = rec.sync([MeterSpec(E1, 1000), MeterSpec(I1, 3000), MeterSpec(99, 10)])
    assert change == MeterDiff(modify=(MeterSpec(I1, 3000), MeterSpec(99, 10)), delete=(E2,))
    assert sw.log == [("meters", (), (I1, 99), (E2,))]
    assert sw.meter_table == {E1: MeterSpec(E1, 1000), I1: MeterSpec(I1, 3000),
                              99: MeterSpec(99, 10), 1: foreign}
    assert rec.installed == sw.meter_table
    assert rec.owned() == {i: m for i, m in sw.meter_table.items() if i != 1}


def test_before_flows_never_deletes_and_after_flows_only_deletes():
    sw = FakeSwitch(meters=[MeterSpec(E1, 1000), MeterSpec(E2, 1000)])
    rec = MeterReconciler(sw)
    desired = [MeterSpec(E1, 2000), MeterSpec(I1, 500)]
    before = rec.sync_before_flows(desired)
    assert before == MeterDiff(add=(MeterSpec(I1, 500),), modify=(MeterSpec(E1, 2000),))
    assert E2 in sw.meter_table
    after = rec.sync_after_flows(desired)
    assert after == MeterDiff(delete=(E2,))
    assert sw.meter_table == {E1: MeterSpec(E1, 2000), I1: MeterSpec(I1, 500)}
    assert not rec.sync_before_flows(desired) and not rec.sync_after_flows(desired)
    assert [entry[0] for entry in sw.log] == ["meters", "meters"]  # empty changes send nothing


def test_failed_apply_reads_back_next_time():
    sw = FakeSwitch()
    rec = MeterReconciler(sw)
    rec.sync([MeterSpec(E1, 1000)])
    # someone else adds the meter the hub thinks is missing: ADD is refused
    sw.meter_table[I1] = MeterSpec(I1, 1)
    with pytest.raises(ApplyError):
        rec.sync([MeterSpec(E1, 1000), MeterSpec(I1, 500)])
    assert rec.needs_readback
    change = rec.sync([MeterSpec(E1, 1000), MeterSpec(I1, 500)])
    assert sw.reads == 2
    assert change == MeterDiff(modify=(MeterSpec(I1, 500),))
    assert sw.meter_table[I1] == MeterSpec(I1, 500)


def test_bad_desired_meters_are_refused_before_touching_the_switch():
    sw = FakeSwitch()
    rec = MeterReconciler(sw)
    with pytest.raises(ValueError):
        rec.sync_before_flows([MeterSpec(E1, 0)])
    assert sw.reads == 0 and sw.log == []


def metered_flows(meters: dict[int, int]) -> list[FlowSpec]:
    """One flow per (port, meter id)."""
    return [flow(3, 100, {"in_port": port}, [Output(9)], cookie=HUB, meter=mid)
            for port, mid in sorted(meters.items())]


def change_both(sw, meters: MeterReconciler, flows: Reconciler, want_meters, want_flows):
    meters.sync_before_flows(want_meters)
    flows.sync(want_flows)
    meters.sync_after_flows(want_meters)


def test_ordering_with_flows_keeps_every_desired_flow():
    sw = FakeSwitch()
    meters, flows = MeterReconciler(sw), Reconciler(sw)
    # 1. rate-limit port 1 egress and port 2 egress
    m1 = [MeterSpec(E1, 1000), MeterSpec(E2, 2000)]
    f1 = metered_flows({1: E1, 2: E2})
    change_both(sw, meters, flows, m1, f1)
    assert set(sw.flows.values()) == set(f1)
    # 2. port 2 switches to meter I1, port 1 is no longer rate-limited
    m2 = [MeterSpec(I1, 3000)]
    f2 = metered_flows({2: I1})
    change_both(sw, meters, flows, m2, f2)
    assert set(sw.flows.values()) == set(f2)
    assert set(sw.meter_table) == {I1}
    assert sw.flows_lost == []   # no desired flow vanished with a deleted meter
    kinds = [entry if entry[0] == "meters" else "flows" for entry in sw.log]
    assert kinds == [("meters", (E1, E2), (), ()), "flows",    # nothing to delete after step 1
                     ("meters", (I1,), (), ()), "flows", ("meters", (), (), (E1, E2))]
    assert flows.realized == {f.key: f for f in f2}


def test_the_wrong_order_fails_or_loses_flows():
    """Why the order matters: the fake refuses and removes what OVS does."""
    sw = FakeSwitch()
    flows = Reconciler(sw)
    with pytest.raises(ApplyError, match="INVALID_METER"):
        flows.sync(metered_flows({1: E1}))          # flows before their meter
    sw2 = FakeSwitch()
    meters, flows2 = MeterReconciler(sw2), Reconciler(sw2)
    change_both(sw2, meters, flows2, [MeterSpec(E1, 1000)], metered_flows({1: E1}))
    meters.sync([])                                  # meter deleted while a flow uses it
    assert sw2.flows == {} and len(sw2.flows_lost) == 1
