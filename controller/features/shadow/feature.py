"""Shadow appliances as a feature: the Feature interface over the manifests and slots.

It keeps what the store holds, parsed: the valid manifests (``appliances``)
and the slots (``slots``); an invalid stored manifest or slot is logged and
left out, never half used.  Its flows are the mirror (``mirror``, given its
input by ``mirroring``: copies of sampled connections to ready instances)
and a guard on every slot's port.  The slots' agents and the
shadow instances are the manager's (``manager.ShadowManager``: the agents'
datagrams punted from ``shadow_agent``, launches, heartbeats, findings).
Findings decide their remediation (``remediation.Remediations``): a block
is a ``shadow-remediation`` record, compiled as a drop by the mirror, ended
in `tick` when its TTL is over or by a lift over REST (``documents_changed``).
An appliance is mirrored only on switches whose capability probe
(``mirror_caps.Capabilities``) found every action the mirror needs; each
probe's answer is stored (``shadow-capability``) and why an appliance is not
mirrored kept in its state, for REST.  `tick` also reads the mirror's
counters back from the switches (``counting.Counting``).
"""
from __future__ import annotations

import logging
from typing import Any

from controller.core import budgets
from controller.core.documents import DocumentInvalid
from controller.core.feature import Contribution, Feature, PacketIn
from controller.core.view import FabricView
from controller.core.interfaces import KIND as INTERFACE
from controller.features.shadow import findings
from controller.features.shadow.counting import Counting, Target
from controller.core.topology import dpid_str
from controller.features.shadow.document import (CAPABILITY, KIND, REMEDIATION, SLOT, Appliance, Slot,
                                                  parse_manifest)
from controller.features.shadow.manager import ShadowManager
from controller.features.shadow.mirror import (AGENT_METER, agent_meter, compile_mirror,
                                               guard_flows)
from controller.features.shadow.mirror_caps import Capabilities, blocking_reason
from controller.features.shadow.probe import ProbeResult
from controller.features.shadow.mirroring import Indexes, mirror_input, slot_net
from controller.features.shadow.records import READY
from controller.features.shadow.remediation import Remediations
from controller.pipeline import tables

LOG = logging.getLogger("hubshift.shadows")


class ShadowFeature(Feature):
    name = "shadow"
    budget = budgets.SHADOW
    document_kinds = (KIND, SLOT, REMEDIATION)             # a remediation: lifted over REST
    punt_tables = frozenset({tables.SHADOW_AGENT.id})      # the agents' datagrams

    def __init__(self, ctx: Any, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.appliances: dict[str, Appliance] = {}
        self.slots: dict[str, Slot] = {}
        self.remediations = Remediations(ctx, lambda aid: self.appliances.get(aid))
        self.manager = ShadowManager(ctx, self.remediations.remedy)   # agents, instances
        self.counting = Counting(ctx, self.manager.count)  # what was mirrored, from the switches
        self.caps = Capabilities(ctx, on_result=self._probed)   # what each switch can do
        self.unmirrored: dict[str, str] = {}               # appliance -> why it is not mirrored
        self.indexes = Indexes(ctx.store)                  # each appliance's conntrack zone

    def load(self) -> None:
        self.reload()
        self.manager.load(self.appliances, self.slots)
        self.counting.running_at_load(t.instance_id for t in self.targets())
        self.remediations.sync(set(self.appliances))

    def documents_changed(self, kind: str) -> None:
        changed = self.reload()
        self.manager.reload(self.appliances, self.slots)
        self.remediations.sync(set(self.appliances))     # changes itself when a block went
        findings.prune(self.ctx, set(self.appliances), self.ctx.wallclock())
        if changed:
            self.ctx.changed()

    def contribute(self, view: FabricView) -> Contribution:
        """The mirror of every appliance with a ready instance, and a guard on every slot's
        port (a slot's host only ever talks to the hub, running an instance or not)."""
        self._note_unmirrored(self._unable(view))
        inp = mirror_input(self.ctx.store, view, self.appliances, self.indexes.of, self.slots,
                           self.unmirrored)
        flows = {d: list(f) for d, f in compile_mirror(inp).items()}
        guarded = {i.slot_id for a in inp.appliances for i in a.instances}
        for slot in sorted(self.slots.values(), key=lambda s: s.id):
            net = None if slot.id in guarded else slot_net(self.ctx.store, view, slot)
            if net is not None and net.dpid in view.switches:
                flows.setdefault(net.dpid, []).extend(
                    guard_flows(view.router_mac, inp.agent_port, net))
        meter = (agent_meter(),)
        return Contribution(
            flows={d: tuple(f) for d, f in flows.items()},
            meters={d: meter for d, f in flows.items() if any(x.meter == AGENT_METER for x in f)})

    def _unable(self, view: FabricView) -> dict[str, str]:
        """Probe the production switches of the enabled appliances; why each appliance that
        cannot be mirrored now is not (a switch lacks an action, or is not probed yet)."""
        dpids = {aid: self._dpids(a) for aid, a in self.appliances.items()
                 if a.shadowing.shadow_enabled}
        self.caps.sync(view.switches, {d for ds in dpids.values() for d in ds})
        reasons = {aid: blocking_reason(self.caps, ds, self.appliances[aid].mirror.snaplen
                                        is not None) for aid, ds in dpids.items()}
        return {aid: why for aid, why in reasons.items() if why is not None}

    def _note_unmirrored(self, unable: dict[str, str]) -> None:
        """Keep why each appliance is not mirrored in its state, for REST (when it changed)."""
        self.unmirrored = unable
        for aid, state in sorted(self.manager.states.items()):
            if state.unmirrored != unable.get(aid):
                self.manager.write_state(aid, state.model_copy(
                    update={"unmirrored": unable.get(aid)}))

    def _probed(self, result: ProbeResult) -> None:
        """A probe's answer, stored for REST's checks."""
        self.ctx.store.put(CAPABILITY, dpid_str(result.dpid),
                           {"missing": result.missing(), "probed_at": self.ctx.wallclock()})

    def _dpids(self, app: Appliance) -> tuple[int, ...]:
        docs = [self.ctx.store.find(INTERFACE, i) for i in app.interfaces]
        return tuple(sorted({int(d.body["datapath"], 16) for d in docs if d is not None}))

    def on_packet_in(self, punt: PacketIn) -> None:
        self.manager.on_packet_in(punt)

    def tick(self) -> None:
        self.manager.tick()
        self.remediations.expire()
        self.counting.poll(self.targets())

    def next_wakeup(self) -> float | None:
        times = [t for t in (self.manager.next_wakeup(), self.remediations.next_wakeup())
                 if t is not None]
        if any(i.state == READY for s in self.manager.states.values() for i in s.instances):
            times.append(self.counting.next_wakeup(self.ctx.clock()))
        if (retry := self.caps.next_wakeup()) is not None:
            times.append(retry)
        return min(times) if times else None

    def targets(self) -> list[Target]:
        """The ready instances, and the switches their copies are made on."""
        out = []
        for app_id, state in sorted(self.manager.states.items()):
            app = self.appliances.get(app_id)
            dpids = self._dpids(app) if app is not None else ()
            out += [Target(app_id, i.id, i.slot_id, dpids) for i in state.instances
                    if i.state == READY and dpids]
        return out

    def reload(self) -> bool:
        """Re-read the manifests and slots; True if anything changed."""
        appliances = {}
        for doc in self.ctx.store.list(KIND):
            try:
                appliances[doc.id] = parse_manifest(doc.body)
            except DocumentInvalid as exc:
                LOG.error("ignoring invalid appliance manifest %s: %s", doc.id, exc)
        slots = {}
        for doc in self.ctx.store.list(SLOT):
            try:
                slots[doc.id] = Slot.from_body(doc.id, doc.body)
            except (KeyError, TypeError) as exc:
                LOG.error("ignoring invalid shadow slot %s: missing %s", doc.id, exc)
        changed = (appliances, slots) != (self.appliances, self.slots)
        self.appliances, self.slots = appliances, slots
        self.indexes.sync(set(appliances))
        return changed
