"""The reconciler against a fake switch: smallest diffs, atomic applies, foreign flows kept."""
from __future__ import annotations

import pytest

from controller.core import budgets
from controller.pipeline import cookies
from controller.pipeline.actions import Output
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import FlowKey, FlowSpec, flow
from controller.reconcile.flows import ApplyError, FlowDiff, Reconciler, diff, index

HUB = cookies.make(Feature.FABRIC, "base")
HOST = cookies.make(Feature.FABRIC, "host:a")
OPERATOR = 0x0000_0000_0000_BEEF  # an operator's own flow: no hub magic


class FakeSwitch:
    """A flow table keyed like a switch: (table, priority, match); applies are atomic."""

    def __init__(self, flows=()) -> None:
        self.flows: dict[FlowKey, FlowSpec] = {f.key: f for f in flows}
        self.applies: list[FlowDiff] = []
        self.dumps: list[tuple[int, int]] = []
        self.fail_next = False

    def dump_flows(self, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        self.dumps.append((cookie, cookie_mask))
        return [f for f in self.flows.values() if f.cookie & cookie_mask == cookie & cookie_mask]

    def apply(self, change: FlowDiff) -> None:
        self.applies.append(change)
        if self.fail_next:
            self.fail_next = False
            raise ApplyError("refused")
        table = dict(self.flows)
        hub_cookie, hub_mask = cookies.hub_mask()
        for f in change.delete:  # strict, and only flows carrying the hub's cookie
            have = table.get(f.key)
            if have is not None and have.cookie & hub_mask == hub_cookie:
                del table[f.key]
        for f in change.add:     # an add replaces a flow of the same identity
            table[f.key] = f
        self.flows = table


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def base_flows():
    return [flow(0, 0, actions=[Output.controller()], cookie=HUB),
            flow(10, 0, goto=40, cookie=HUB),
            flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(3)], cookie=HOST)]


def test_first_sync_reads_back_and_adds_everything():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    desired = base_flows()
    result = rec.sync(desired)
    assert sw.dumps == [cookies.hub_mask()]
    assert result.diff == FlowDiff(add=tuple(desired), delete=())
    assert len(sw.applies) == 1
    assert set(sw.flows.values()) == set(desired)
    assert rec.realized == index(desired)
    assert not rec.needs_readback
    assert result.seconds == 0.25
    assert rec.last_synced_at == 100.5


def test_second_sync_with_same_desired_sends_nothing():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    rec.sync(base_flows())
    result = rec.sync(base_flows())
    assert not result.diff and len(result.diff) == 0
    assert len(sw.applies) == 1
    assert len(sw.dumps) == 1  # no readback once in sync


def test_switch_already_holding_the_flows_gets_nothing():
    sw = FakeSwitch(base_flows())
    rec = Reconciler(sw, Clock())
    assert not rec.sync(base_flows()).diff
    assert sw.applies == []


def test_changed_action_replaces_just_that_flow():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    rec.sync(base_flows())
    desired = base_flows()
    desired[2] = flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(4)], cookie=HOST)
    result = rec.sync(desired)
    assert result.diff == FlowDiff(add=(desired[2],), delete=())
    assert sw.flows[desired[2].key].actions == (Output(4),)
    assert len(sw.flows) == 3


def test_changed_cookie_or_goto_replaces():
    a = flow(10, 0, goto=40, cookie=HUB)
    assert diff([flow(10, 0, goto=50, cookie=HUB)], [a]).add == (flow(10, 0, goto=50, cookie=HUB),)
    newer = cookies.make(Feature.FABRIC, "base", 1)
    assert diff([flow(10, 0, goto=40, cookie=newer)], [a]) == \
        FlowDiff(add=(flow(10, 0, goto=40, cookie=newer),))


def test_removed_flow_is_deleted_strictly():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    rec.sync(base_flows())
    gone = base_flows()[2]
    result = rec.sync(base_flows()[:2])
    assert result.diff == FlowDiff(add=(), delete=(gone,))
    assert gone.key not in sw.flows
    assert set(sw.flows.values()) == set(base_flows()[:2])


def test_foreign_flows_are_never_read_back_nor_deleted():
    mine = flow(0, 5, {"in_port": 9}, [Output(1)], cookie=OPERATOR)
    stale_hub = flow(0, 7, {"in_port": 8}, [Output(2)], cookie=HUB)
    sw = FakeSwitch([mine, stale_hub])
    rec = Reconciler(sw, Clock())
    result = rec.sync(base_flows())
    assert mine.key not in rec.realized
    assert result.diff.delete == (stale_hub,)
    assert sw.flows[mine.key] == mine
    # and never later either
    rec.needs_readback = True
    assert not rec.sync(base_flows()).diff
    rec.sync([])
    assert list(sw.flows.values()) == [mine]


def test_the_hub_owns_exactly_the_cookie_feature_bytes_its_budgets_declare():
    """Magic plus an undeclared feature byte (a newer hub's, a typo) is not ours either."""
    undeclared = cookies.MAGIC << 56 | 0x77 << 48 | 5
    theirs = flow(0, 9, {"in_port": 7}, [Output(1)], cookie=undeclared)
    persona = flow(50, 120, {"eth_dst": "02:00:00:00:00:0b"}, [Output(2)],
                   cookie=cookies.make(Feature.PERSONA, "p"))
    sw = FakeSwitch([theirs, persona])
    rec = Reconciler(sw, Clock())
    result = rec.sync(base_flows())
    assert result.diff.delete == (persona,)          # every declared feature's, when undesired
    assert theirs.key not in rec.realized and sw.flows[theirs.key] == theirs
    assert all(budgets.owns_cookie(f.cookie) for f in base_flows() + [persona])
    assert not budgets.owns_cookie(undeclared) and not budgets.owns_cookie(OPERATOR)


@pytest.mark.parametrize("cookie", [0, OPERATOR, cookies.MAGIC << 56 | 0x77 << 48],
                         ids=["zero", "operator", "undeclared-feature"])
def test_a_desired_flow_the_hub_would_not_own_is_refused(cookie):
    """It would be installed and then never deleted: refused before anything is sent."""
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    for call in (rec.sync, rec.ensure):
        with pytest.raises(ValueError, match="not the hub's"):
            call(base_flows() + [flow(0, 3, {"in_port": 3}, cookie=cookie)])
    assert sw.applies == []


def test_fake_switch_honours_cookie_mask():
    sw = FakeSwitch(base_flows() + [flow(0, 5, cookie=OPERATOR)])
    assert len(sw.dump_flows(*cookies.hub_mask())) == 3
    assert sw.dump_flows(*cookies.document_mask(Feature.FABRIC, "host:a")) == [base_flows()[2]]
    assert len(sw.dump_flows(0, 0)) == 4


def test_failed_apply_raises_keeps_realized_and_forces_readback():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    rec.sync(base_flows())
    before = dict(rec.realized)
    table_before = dict(sw.flows)
    sw.fail_next = True
    changed = base_flows()[:1]
    with pytest.raises(ApplyError):
        rec.sync(changed)
    assert rec.realized == before
    assert sw.flows == table_before  # atomic: nothing of it was applied
    assert rec.needs_readback
    dumps = len(sw.dumps)
    result = rec.sync(changed)
    assert len(sw.dumps) == dumps + 1
    assert result.diff == FlowDiff(delete=tuple(base_flows()[1:]))
    assert set(sw.flows.values()) == set(changed)


def test_readback_after_failure_sees_what_the_switch_really_holds():
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    rec.sync(base_flows())
    sw.fail_next = True
    with pytest.raises(ApplyError):
        rec.sync([])
    # meanwhile someone removed a hub flow behind our back
    del sw.flows[base_flows()[1].key]
    result = rec.sync(base_flows())
    assert result.diff == FlowDiff(add=(base_flows()[1],))


def test_duplicate_keys_with_different_behaviour_raise():
    a = flow(50, 100, {"eth_dst": "00:00:00:00:00:0a"}, [Output(1)], cookie=HOST)
    b = flow(50, 100, {"eth_dst": "00:00:00:00:00:0A"}, [Output(2)], cookie=HOST)
    sw = FakeSwitch()
    rec = Reconciler(sw, Clock())
    with pytest.raises(ValueError):
        rec.sync([a, b])
    assert sw.applies == []
    # identical duplicates are one flow
    assert rec.sync([a, a]).diff == FlowDiff(add=(a,))


def test_diff_ordering_and_contents_exact():
    f = [flow(0, p, {"in_port": p}, [Output(p)], cookie=HUB) for p in range(1, 7)]
    changed3 = flow(0, 3, {"in_port": 3}, [Output(33)], cookie=HUB)
    installed = [f[5], f[0], f[2], f[4], f[1]]
    desired = [f[3], changed3, f[0], f[1]]
    d = diff(desired, installed)
    # adds in desired order (new and replaced), deletes in installed order
    assert d.add == (f[3], changed3)
    assert d.delete == (f[5], f[4])
    assert len(d) == 4 and bool(d)
    assert d.summary() == {"add": 2, "delete": 2}
    assert not FlowDiff() and FlowDiff().summary() == {"add": 0, "delete": 0}


def test_meta_alone_is_no_change():
    a = flow(0, 1, cookie=HUB)
    b = FlowSpec(a.table, a.priority, a.match, a.actions, a.goto, a.cookie, meta={"why": "x"})
    assert not diff([b], [a])
