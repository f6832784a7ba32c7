"""What the mirror compiler is given: manifests, instances and the fabric, as `MirrorInput`.

Read on the worker at every compile, from what the store holds now: the
valid manifests, the runtime's `shadow-state` (instances and the current
percentage), the slots, the interface records and the blocks in force
(``shadow-remediation``).  An appliance mirrors only while it is enabled and
has an instance that is ready; its blocks are dropped whether it mirrors or
not (shadowing disabled keeps them); its index (its conntrack zone) is
allocated once and kept (`Indexes`), so a change elsewhere never re-decides
its connections.  A source held (sample and hold, adaptive mode: the state's
``holds``) has all its new connections mirrored until the hold ends.
"""
from __future__ import annotations

import logging
from typing import Mapping

from pydantic import ValidationError

from controller.core.interfaces import KIND as INTERFACE
from controller.core.view import FabricView
from controller.features.shadow.document import AGENT_PORT, STATE, Appliance, Slot
from controller.features.shadow.mirror_net import (ApplianceNet, Block, Endpoint, InstanceNet,
                                                   MirrorInput, ServicePort, ZONES)
from controller.features.shadow.remediation import blocks_by_appliance
from controller.features.shadow.records import ACTIVE, READY, ShadowState
from controller.pipeline import tables
from controller.store import Store

LOG = logging.getLogger("hubshift.shadows")
ALLOCATION_KIND, INDEXES = "allocation", "shadow-index"    # body: {appliance id: index}


class Indexes:
    """Each appliance's index (zone 0xC000 + index), allocated once, stored, freed on delete."""

    def __init__(self, store: Store) -> None:
        self.store = store
        doc = store.find(ALLOCATION_KIND, INDEXES)
        self.of: dict[str, int] = dict(doc.body) if doc else {}

    def sync(self, appliance_ids: set[str]) -> None:
        """Give new appliances the lowest free index, forget deleted ones; stored if changed."""
        of = {k: v for k, v in self.of.items() if k in appliance_ids}
        used = set(of.values())
        for aid in sorted(appliance_ids - set(of)):
            free = next((i for i in range(len(ZONES)) if i not in used), None)
            if free is None:
                LOG.error("no conntrack zone left for appliance %s", aid)
                continue
            of[aid] = free
            used.add(free)
        if of != self.of:
            self.of = of
            self.store.put(ALLOCATION_KIND, INDEXES, of)


def _endpoint(store: Store, interface_id: str) -> Endpoint | None:
    doc = store.find(INTERFACE, interface_id)
    if doc is None:
        return None
    b = doc.body
    personality = b.get("personality_id") is not None
    return Endpoint(int(b["datapath"], 16), int(b["port"]), b["mac"],
                    egress_goto=tables.PERSONALITY_EGRESS.id if personality else tables.ARP.id,
                    ingress_goto=tables.PERSONALITY_INGRESS.id if personality else None)


def _state(store: Store, appliance_id: str) -> ShadowState | None:
    doc = store.find(STATE, appliance_id)
    if doc is None:
        return None
    try:
        return ShadowState.from_doc(doc)
    except ValidationError as exc:
        LOG.error("ignoring the unreadable state of appliance %s: %s", appliance_id, exc)
        return None


def slot_net(store: Store, view: FabricView, slot: Slot, ordinal: int = 0,
             ready: bool = False) -> InstanceNet | None:
    """Where a slot's host is plugged in, and its gateway (where its agent talks to)."""
    where = store.find(INTERFACE, slot.interface_id)
    if where is None:
        return None
    b = where.body
    gateway = view.gateway_of(b.get("ips") or ())
    return InstanceNet(slot.id, int(b["datapath"], 16), int(b["port"]), b["mac"], ordinal,
                       gateway, ready=ready)


def _instances(store: Store, view: FabricView, slots: Mapping[str, Slot],
               state: ShadowState) -> tuple[InstanceNet, ...]:
    out = []
    for inst in state.instances:
        slot = slots.get(inst.slot_id)
        if inst.state not in ACTIVE or slot is None or inst.ordinal is None:
            continue
        net = slot_net(store, view, slot, inst.ordinal, inst.state == READY)
        if net is not None:
            out.append(net)
    return tuple(out)


def appliance_net(store: Store, view: FabricView, aid: str, a: Appliance, index: int,
                  slots: Mapping[str, Slot],
                  blocks: tuple[Block, ...] = (), mirrored: bool = True) -> ApplianceNet | None:
    state = _state(store, aid)
    mirrored = mirrored and a.shadowing.shadow_enabled and state is not None
    if not mirrored and not blocks:
        return None
    production = tuple(e for e in (_endpoint(store, i) for i in a.interfaces) if e is not None)
    if not mirrored:
        return ApplianceNet(aid, index, production, blocks=blocks)
    # The manifest's percentage, unless the adaptive mode has moved it (state.percentage).
    adapted = a.adjustment.mode == "adaptive" and state.percentage is not None
    percentage = (state.percentage.current if adapted
                  else a.shadowing.shadow_traffic_percentage)
    return ApplianceNet(aid, index, production,
                        service=tuple(ServicePort(s.protocol, s.port) for s in a.service or ()),
                        permille=int(round(percentage * 10)),
                        instances=_instances(store, view, slots, state),
                        snaplen=a.mirror.snaplen, blocks=blocks,
                        held_sources=tuple(h.source for h in state.holds) if adapted else ())


def mirror_input(store: Store, view: FabricView, appliances: Mapping[str, Appliance],
                 indexes: Mapping[str, int], slots: Mapping[str, Slot],
                 unable: Mapping[str, str] = {}) -> MirrorInput:
    """`unable`: appliances not mirrored at all (a switch lacks what the mirror needs, or
    is not probed yet), their blocks compiled all the same."""
    nets, blocks = [], blocks_by_appliance(store)
    for aid in sorted(appliances):
        if aid not in indexes:
            continue
        net = appliance_net(store, view, aid, appliances[aid], indexes[aid], slots,
                            blocks.get(aid, ()), mirrored=aid not in unable)
        if net is not None and net.production:
            nets.append(net)
    return MirrorInput(view.switches, view.router_mac, view.hops, tuple(nets), AGENT_PORT)
