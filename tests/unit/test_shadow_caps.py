"""The mirror's capability check: the probe flows, the probe against a switch that refuses
some of them, and `Capabilities` (what each switch was found to accept) on the worker.
The same probe against a real Open vSwitch: tests/trace/test_shadow_probe_trace.py."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core import budgets
from controller.core.channel import ChannelClosed
from controller.features.shadow import mirror_caps
from controller.features.shadow.mirror import compile_mirror
from controller.features.shadow.mirror_caps import (ALL, Capabilities, blocking_reason,
                                                    lacking_reason, required_actions)
from controller.features.shadow.mirror_net import (ApplianceNet, Endpoint, InstanceNet,
                                                   MirrorInput, ServicePort)
from controller.features.shadow.probe import (PROBE_BIT, PROBE_COOKIE, PROBE_PRIORITY,
                                              PROBE_TABLE, error_text, probe_flows, run_probe)
from controller.pipeline import cookies, tables
from controller.pipeline.actions import (Clone, Conntrack, Move, Multipath, Output, OutputTrunc,
                                         SetField, flat)
from controller.reconcile.flows import ApplyError, refuse_foreign
from controller.store import open_store
from tests.unit.fakecontext import FakeCore, fake_context
from tests.unit.hubtest import FakeSwitch, FakeClock, ports_a

A, B, C = 1, 2, 3
MAC = "02:00:0a:00:01:0a"


# ------------------------------------------------------------------ the probe's flows
def test_probe_flows_sit_where_no_packet_matches_them_and_are_the_hubs():
    flows = probe_flows(ALL)
    assert len({f.key for f in flows}) == len(ALL) == 4
    band = next(h.band for h in budgets.SHADOW.hooks if h.table == tables.CLASSIFY.id)
    hooks = [h.band.first for h in budgets.SHADOW.hooks if h.table == tables.CLASSIFY.id]
    for f in flows:
        assert (f.table, f.priority, f.cookie) == (PROBE_TABLE, PROBE_PRIORITY, PROBE_COOKIE)
        assert PROBE_TABLE == tables.CLASSIFY.id and PROBE_PRIORITY in band
        assert PROBE_PRIORITY == min(hooks)            # below the mirror's hooks (260)
        value, mask = dict(f.match)["reg0"]            # classify: every register is zero
        assert value & PROBE_BIT and mask & PROBE_BIT
    info = cookies.parse(PROBE_COOKIE)
    assert info.feature is cookies.Feature.SHADOW and budgets.owns_cookie(PROBE_COOKIE)
    refuse_foreign(flows)                              # the reconciler may delete a leftover
    tables.check(flows)


def _shape(action):
    """What a switch might refuse of an action: its kind and the options it carries."""
    if isinstance(action, Conntrack):
        return ("ct", action.commit, action.mark is not None, action.table is not None,
                action.nat is not None)
    if isinstance(action, Multipath):
        return ("multipath", action.fields, action.algorithm, action.dst)
    if isinstance(action, Clone):
        return ("clone",) + tuple(_shape(a) for a in action.actions if _shape(a))
    if isinstance(action, OutputTrunc):
        return ("output_trunc",)
    assert isinstance(action, (Output, SetField, Move)), f"the probe does not know {action}"
    return None                                        # plain OpenFlow


def _shapes(flows):
    return {s for f in flows for a in f.actions for s in (_shape(a),) if s}


def test_the_probe_asks_for_every_action_the_mirror_writes_in_its_shape():
    """Fails as soon as the mirror writes an action (or an option of one) nobody probes."""
    i1 = InstanceNet("s1", A, 3, "02:00:0a:00:01:1f", 0, "10.0.1.254")
    i2 = InstanceNet("s2", B, 4, "02:00:0a:00:01:20", 1, "10.0.1.254")
    app = ApplianceNet("web", 3, (Endpoint(A, 1, MAC),), (ServicePort("tcp", 80),), 500,
                       (i1, i2), snaplen=128, held_sources=("198.51.100.7",))
    inp = MirrorInput(frozenset({A, B}), "02:b5:00:00:00:01", {A: {B: 9}, B: {A: 9}},
                      (app,), 6700)
    mirrored = [f for flows in compile_mirror(inp).values() for f in flows]
    assert _shapes(mirrored) == _shapes(probe_flows(required_actions(snaplen=True)))
    untruncated = [f for flows in compile_mirror(replace(inp, appliances=(
        replace(app, snaplen=None),))).values() for f in flows]
    assert _shapes(untruncated) == _shapes(probe_flows(required_actions()))
    probed = {k for f in probe_flows(ALL) for k, _ in f.match}
    assert {k for f in mirrored for k, _ in f.match if k.startswith("ct_")} <= probed


# ------------------------------------------------------------------ the probe
class RefusingSwitch(FakeSwitch):
    """Refuses, as OVS does (nothing of the change applied), a flow with a kind of action."""

    def __init__(self, dpid: int, refuse: dict[type, tuple[int, int]] | None = None) -> None:
        super().__init__(dpid, ports_a())
        self.refuse = refuse or {}
        self.closed = False

    def apply(self, diff) -> None:
        if self.closed:
            self.log.append(("apply", diff))
            raise ChannelClosed(f"switch {self.dpid:016x} disconnected")
        for f in diff.add:
            for a in flat(f.actions):
                if type(a) in self.refuse:
                    self.log.append(("apply", diff))
                    kind, code = self.refuse[type(a)]
                    raise ApplyError(f"switch {self.dpid:016x} refused the change "
                                     f"(type={kind} code={code}); 1 error(s)")
        super().apply(diff)


def test_an_able_switch_accepts_each_flow_alone_and_keeps_none():
    sw = RefusingSwitch(A)
    result = run_probe(sw, A, ALL)
    assert result.dpid == A and result.refused == () and result.missing() == {}
    flows = probe_flows(ALL)
    assert [d.add for d in sw.applies] == [(f,) for f in flows] + [()]
    assert sw.applies[-1].delete == flows
    assert sw.flows == {}


def test_a_refused_flow_marks_its_requirement_missing_with_the_switchs_error():
    sw = RefusingSwitch(A, {Clone: (2, 0), OutputTrunc: (2, 5)})
    missing = run_probe(sw, A, ALL).missing()
    assert missing == {"clone": "OFPET_BAD_ACTION/OFPBAC_BAD_TYPE (type 2, code 0)",
                       "output_trunc": "OFPET_BAD_ACTION/OFPBAC_BAD_ARGUMENT (type 2, code 5)"}
    assert sw.flows == {}                      # the accepted ones are deleted too


def test_a_lost_switch_is_no_answer():
    sw = RefusingSwitch(A)
    sw.closed = True
    with pytest.raises(ChannelClosed):
        run_probe(sw, A, ALL)
    assert len(sw.applies) == 2                # the first add, then the delete was tried


@pytest.mark.parametrize("text, shown", [
    ("switch 01 refused the change (type=2 code=10); 1 error(s)",
     "OFPET_BAD_ACTION/OFPBAC_MATCH_INCONSISTENT (type 2, code 10)"),
    ("refused (type=3 code=2)", "OFPET_BAD_INSTRUCTION/OFPBIC_BAD_TABLE_ID (type 3, code 2)"),
    ("refused (type=2 code=99)", "OFPET_BAD_ACTION (type 2, code 99)"),
    ("refused (type=42 code=1)", "type 42 (type 42, code 1)"),
    ("bundle refused", "bundle refused"),
])
def test_error_text_names_the_openflow_error(text, shown):
    assert error_text(ApplyError(text)) == shown


# ------------------------------------------------------------------ Capabilities
@pytest.fixture
def core():
    return FakeCore(switches={A, B})


@pytest.fixture
def clock():
    return FakeClock(100.0)


@pytest.fixture
def caps(core, clock):
    return Capabilities(fake_context(core, open_store(":memory:"), clock=clock))


def test_a_probe_is_asked_off_the_worker_and_believed_when_it_answers(core, caps):
    assert caps.probe(A) is True
    assert len(core.requests) == 1 and caps.unknown(A)      # nothing ran on the worker
    assert caps.probe(A) is False and len(core.requests) == 1   # one at a time
    assert blocking_reason(caps, [A], snaplen=False).startswith(
        "waiting for the capability probe of switch 0000000000000001")
    generation = core.generation
    assert core.answer(RefusingSwitch(A)) == 1
    assert not caps.unknown(A) and caps.reason(A, snaplen=True) is None
    assert blocking_reason(caps, [A], snaplen=True) is None
    assert core.generation == generation + 1 and core.events == []   # recompiled
    assert caps.probe(A) is False and core.requests == []          # known: not asked again


def test_a_switch_lacking_a_requirement_blocks_the_mirror_with_the_reason(core, caps):
    caps.probe(A)
    core.answer(RefusingSwitch(A, {Clone: (2, 0)}))
    why = caps.reason(A, snaplen=False)
    assert why == ("switch 0000000000000001 lacks what the mirror needs: clone (copies that "
                   "leave the packet itself as it was): refused with "
                   "OFPET_BAD_ACTION/OFPBAC_BAD_TYPE (type 2, code 0)")
    assert blocking_reason(caps, [A], snaplen=False) == why
    assert lacking_reason(caps, [A, A], snaplen=False) == why
    [(kind, subject, message, data)] = core.events
    assert (kind, subject, message, data) == ("shadow", "0000000000000001", why,
                                               {"missing": ["clone"]})


def test_truncation_is_needed_only_with_a_snaplen(core, caps):
    caps.probe(A)
    core.answer(RefusingSwitch(A, {OutputTrunc: (2, 0)}))
    assert caps.reason(A, snaplen=False) is None
    assert blocking_reason(caps, [A], snaplen=False) is None
    assert "output_trunc (copies cut to the manifest's snaplen)" in caps.reason(A, snaplen=True)
    assert lacking_reason(caps, [A], snaplen=True) == caps.reason(A, snaplen=True)


def test_a_switch_not_connected_stays_unknown_and_waits(core, caps):
    assert caps.probe(C) is False and core.requests == []
    assert caps.unknown(C) and caps.reason(C, snaplen=True) is None
    assert lacking_reason(caps, [C], snaplen=True) is None     # no 422 for what is unknown
    assert "switch 0000000000000003" in blocking_reason(caps, [C], snaplen=True)


def test_a_lack_is_named_before_a_wait(core, caps):
    caps.probe(A)
    core.answer(RefusingSwitch(A, {Multipath: (2, 5)}))
    why = blocking_reason(caps, [C, A], snaplen=False)
    assert why.startswith("switch 0000000000000001 lacks") and "multipath (" in why
    caps.probe(B)
    core.answer(RefusingSwitch(B))
    assert blocking_reason(caps, [B], snaplen=True) is None
    assert blocking_reason(caps, [], snaplen=True) is None


def test_a_reconnected_switch_is_probed_again_and_an_old_answer_is_not_believed(core, caps):
    caps.probe(A)
    core.answer(RefusingSwitch(A, {Conntrack: (2, 0)}))
    assert caps.reason(A, snaplen=False)
    caps.forget(A)                                          # disconnected
    assert caps.unknown(A)
    caps.probe(A)                                           # connected again
    stale = core.requests.pop()
    caps.forget(A)
    caps.probe(A)
    fresh = core.requests.pop()
    core.requests = [stale]
    core.answer(RefusingSwitch(A, {Conntrack: (2, 0)}))     # the probe before the forget
    assert caps.unknown(A)
    core.requests = [fresh]
    core.answer(RefusingSwitch(A))                          # its switch since: able
    assert not caps.unknown(A) and caps.reason(A, snaplen=True) is None


def test_no_answer_leaves_the_switch_unknown_and_is_asked_again_later(core, caps, clock):
    caps.probe(A)
    lost = RefusingSwitch(A)
    lost.closed = True
    generation = core.generation
    core.answer(lost)
    assert caps.unknown(A) and core.generation == generation    # nothing to recompile
    assert caps.next_wakeup() == mirror_caps.RETRY_SECONDS
    assert caps.probe(A) is False and core.requests == []
    clock.advance(mirror_caps.RETRY_SECONDS)
    assert caps.next_wakeup() == 0.0
    assert caps.probe(A) is True
    core.answer(RefusingSwitch(A))
    assert not caps.unknown(A) and caps.next_wakeup() is None


def test_sync_forgets_the_gone_and_probes_the_needed(core, caps):
    caps.sync(connected={A, B}, needed={A, C})
    assert [r.dpid for r in core.requests] == [A]           # B not needed, C not connected
    core.answer(RefusingSwitch(A))
    assert not caps.unknown(A)
    caps.sync(connected={B}, needed={A})                    # A went away
    assert caps.unknown(A) and core.requests == []
    caps.sync(connected={A, B}, needed={A})                 # and came back
    assert [r.dpid for r in core.requests] == [A]


# -- on the hub: the feature wired to its probe -------------------------------------------------

def test_a_switch_refusing_clone_leaves_the_appliance_unmirrored_and_refuses_new_manifests():
    from controller.agents.shadow import protocol as p
    from controller.features.shadow.document import KIND
    from controller.features.shadow.mirror import HOOK_L2
    from tests.unit.hubtest import A, run
    from tests.unit.test_shadow_manager import WEB, agents, launched
    from tests.unit.test_shadow_manager import fab as fixture

    fab = fixture.__wrapped__() if hasattr(fixture, "__wrapped__") \
        else fixture._get_wrapped_function()()
    accept = fab.a.apply

    def apply(diff):
        if any(f.cookie == PROBE_COOKIE and any(isinstance(a, Clone) for a in f.actions)
               for f in diff.add):
            raise ApplyError("OFPBAC_BAD_TYPE (type 2, code 1)")
        accept(diff)
    fab.a.apply = apply
    one, _ = agents(fab)
    one.hello()
    fab.store.put(KIND, "web", WEB)
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    iid, _ = launched(one)
    one.send(p.Ready(iid, ("IDS_Signature_Scan",), ()))
    hooks = [f for f in fab.a.flows.values() if f.table == tables.L2.id and f.priority == HOOK_L2]
    assert hooks == [], "nothing mirrored"
    why = fab.store.get("shadow-state", "web").body["unmirrored"]
    assert why.startswith(f"switch {A:016x} lacks what the mirror needs: clone") \
        and "OFPBAC_BAD_TYPE" in why
    stored = fab.store.get("shadow-capability", f"{A:016x}").body["missing"]
    assert list(stored) == ["clone"] and "OFPBAC_BAD_TYPE" in stored["clone"]
    assert not [f for f in fab.a.flows.values() if f.cookie == PROBE_COOKIE]
