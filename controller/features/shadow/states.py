"""The records the shadow manager keeps, and their writes: a mixin of `ShadowManager`.

``shadow-slot-state`` (`SlotState`, per slot: what its agent is doing) and
``shadow-state`` (`ShadowState`, per appliance: its instances, the percentage,
the counters, the holds and the instances added on load) live in memory as
`slot_states` and `states` and are written through to the store by the
methods here, the only writers of both kinds.  `production_addresses` says
which addresses an appliance's production instance has.
"""
from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Interface

from pydantic import ValidationError

from controller.core.interfaces import KIND as INTERFACE
from controller.features.shadow.adaptive import kept_percentage
from controller.features.shadow.counting import Tally
from controller.features.shadow.document import SLOT_STATE, STATE, Appliance
from controller.features.shadow.records import (ACTIVE, Counters, Instance, ShadowState,
                                                SlotState)

LOG = logging.getLogger("hubshift.shadows")
ENDED_KEPT = 8                    # failed and stopped instances listed per appliance


class ShadowRecords:
    """Needs `ctx`, `metrics` (`agentd.AgentMetrics`), `appliances`, `slot_states` and
    `states` on the instance (the manager sets them)."""

    def slot(self, sid: str) -> SlotState:
        return self.slot_states.get(sid) or SlotState()

    def instances(self, appliance_id: str) -> list[Instance]:
        state = self.states.get(appliance_id)
        return list(state.instances) if state else []

    def _owner(self, sid: str, instance_id: str) -> str | None:
        """The appliance of an instance that is or was on the slot."""
        return next((app for app, state in self.states.items() for i in state.instances
                     if i.id == instance_id and i.slot_id == sid), None)

    # ------------------------------------------------------------ writes
    def _put_slot(self, sid: str, **changes) -> SlotState:
        st = self.slot(sid).model_copy(update={**changes, "updated_at": self.ctx.wallclock()})
        self.slot_states[sid] = st
        self.ctx.store.put(SLOT_STATE, sid, st.to_body())
        return st

    def _put_state(self, app_id: str, instances: list[Instance], launched: int | None = None) -> None:
        old = self.states.get(app_id) or ShadowState()
        percentage = kept_percentage(old.percentage, self.appliances.get(app_id))
        ended = [i for i in instances if i.state not in ACTIVE][-ENDED_KEPT:]
        kept = [i for i in instances if i.state in ACTIVE or i in ended]
        self.write_state(app_id, old.model_copy(update={
            "instances": kept, "percentage": percentage,
            "launched": old.launched if launched is None else launched}))

    def write_state(self, app_id: str, state: ShadowState) -> None:
        self.states[app_id] = state
        self.ctx.store.put(STATE, app_id, state.to_body())

    def _store_state(self, app_id: str, state: ShadowState) -> None:
        """A change the mirror compiles (percentage, holds, instance count)."""
        self.write_state(app_id, state)
        self.ctx.changed()

    def count(self, app_id: str, instance_id: str, grown: Tally, dropped: int = 0) -> None:
        """Add to what was mirrored to an instance, and to its appliance's totals."""
        state = self.states.get(app_id)
        if state is None:
            return
        def more(c: Counters) -> Counters:
            return Counters(connections=c.connections + grown.connections,
                            packets=c.packets + grown.packets, bytes=c.bytes + grown.bytes,
                            dropped=c.dropped + dropped)
        instances = [i.model_copy(update={"counters": more(i.counters)})
                     if i.id == instance_id else i for i in state.instances]
        self.write_state(app_id, state.model_copy(update={"instances": instances,
                                                           "counters": more(state.counters)}))
        for what, n in (("connections", grown.connections), ("packets", grown.packets),
                        ("bytes", grown.bytes), ("dropped", dropped)):
            if n:
                self.metrics.mirrored.labels(app_id, what).inc(n)

    def _set_instance(self, app_id: str, instance_id: str, **changes) -> Instance | None:
        found = None
        out = []
        for i in self.instances(app_id):
            if i.id == instance_id:
                i = found = i.model_copy(update=changes)
            out.append(i)
        if found is not None:
            self._put_state(app_id, out)
        return found


def production_addresses(ctx, app: Appliance) -> tuple[tuple[IPv4Interface, ...], IPv4Address | None]:
    """The production instance's addresses (ip/prefix of their subnet, /32 if none is
    known) from its interfaces' records, and the gateway of the first with a subnet."""
    view = ctx.view()
    addresses, gateway = [], None
    for iid in app.interfaces:
        doc = ctx.store.find(INTERFACE, iid)
        for ip in (doc.body.get("ips") or ()) if doc else ():
            subnet = view.subnet_of(ip)
            addresses.append(IPv4Interface(f"{ip}/{subnet.cidr.prefixlen if subnet else 32}"))
            if subnet is not None and gateway is None:
                gateway = subnet.gateway
    return tuple(dict.fromkeys(addresses)), gateway


def read_records(store, kind: str, model) -> dict:
    """Every stored record of `kind` that fits `model`, by id (the rest logged, left out)."""
    out = {}
    for doc in store.list(kind):
        try:
            out[doc.id] = model.from_doc(doc)
        except ValidationError as exc:
            LOG.error("ignoring %s %s that does not fit its record: %s", kind, doc.id,
                      exc.errors()[0].get("msg"))
    return out
