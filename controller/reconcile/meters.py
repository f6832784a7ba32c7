"""Desired vs installed meters -> MeterMods, as `controller.reconcile.flows` does for flows.

The reconciler keeps, per switch, the meters it knows to be installed (read
back from the switch, then updated after each successful apply).  A change
adds the desired meters that are missing, modifies those whose rate or burst
differ (an OFPMC_MODIFY: the flows using the meter keep it), and deletes the
hub's meters that are no longer desired.

Ownership.  The hub owns exactly the meter ids inside the meter ranges its
features declare (`controller.core.budgets.owns_meter`): of the meters found
on a switch, those are deleted when no longer desired (a persona's, a
personality's, whoever's), and a desired meter outside them is refused (it
could never be deleted again).  Meters with other ids (an operator's, OVS's
virtual controller/slowpath meters) are never touched.

Order with flows.  A switch refuses a flow that names a meter it does not
have (OVS: OFPMMFC_INVALID_METER), and deleting a meter makes it remove every
flow that uses the meter, without telling the flow reconciler.  So a caller
changing both does, per switch:

    meters.sync_before_flows(desired_meters)   # add + modify, deletes nothing
    flows.sync(desired_flows)                  # flows may now use the new meters
    meters.sync_after_flows(desired_meters)    # delete: no desired flow uses them

`sync` does all three kinds at once, for when no flow uses the meters it
deletes (or the caller accepts that those flows vanish with them).  Meter mods
are not bundled: after a failed apply some of them may have taken effect, so
the next change reads the switch back first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from controller.core.budgets import owns_meter
from controller.pipeline.meters import MeterSpec

LOG = logging.getLogger("hubshift.meters")


class MeterChannel(Protocol):
    def meters(self) -> list[MeterSpec]:
        """Every meter on the switch; shapes the hub does not write come back with rate 0."""

    def apply_meters(self, add: Sequence[MeterSpec] = (), modify: Sequence[MeterSpec] = (),
                     delete: Sequence[int] = ()) -> None:
        """MeterMods ADD, MODIFY, DELETE (in that order), then a barrier; ApplyError if refused."""


@dataclass(frozen=True)
class MeterDiff:
    add: tuple[MeterSpec, ...] = ()      # meters missing on the switch
    modify: tuple[MeterSpec, ...] = ()   # installed with another rate/burst (or shape)
    delete: tuple[int, ...] = ()         # ids of hub meters no longer desired

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)

    def summary(self) -> dict:
        return {"add": len(self.add), "modify": len(self.modify), "delete": len(self.delete)}


def index(meters: Iterable[MeterSpec]) -> dict[int, MeterSpec]:
    out: dict[int, MeterSpec] = {}
    for m in meters:
        if m.meter_id in out and out[m.meter_id] != m:
            raise ValueError(f"two different meters with one id: {out[m.meter_id]} / {m}")
        out[m.meter_id] = m
    return out


def desired_index(desired: Iterable[MeterSpec]) -> dict[int, MeterSpec]:
    """Desired meters by id.  Refused: a rate of 0 (the mark of a meter in a foreign
    shape), and an id outside every budget (the hub would never delete it)."""
    want = index(desired)
    for m in want.values():
        if m.rate_kbps <= 0:
            raise ValueError(f"meter {m.meter_id}: a desired meter needs a rate above 0 kbps")
        if not owns_meter(m.meter_id):
            raise ValueError(f"meter {m.meter_id} is outside the meter ranges of every "
                             "budget (controller.core.budgets): it would never be deleted")
    return want


def diff(desired: Iterable[MeterSpec], installed: Iterable[MeterSpec]) -> MeterDiff:
    want = desired_index(desired)
    have = index(installed)
    return MeterDiff(
        add=tuple(m for i, m in sorted(want.items()) if i not in have),
        modify=tuple(m for i, m in sorted(want.items()) if i in have and have[i] != m),
        delete=tuple(i for i in sorted(have) if i not in want and owns_meter(i)))


class MeterReconciler:
    """One switch's meters, and the only path by which the hub changes them."""

    def __init__(self, channel: MeterChannel) -> None:
        self.channel = channel
        self.installed: dict[int, MeterSpec] = {}   # every meter on the switch, by id
        self.needs_readback = True

    def readback(self) -> int:
        """Read the switch's meters (all of them: a desired id may already be taken)."""
        self.installed = index(self.channel.meters())
        self.needs_readback = False
        return len(self.installed)

    def owned(self) -> dict[int, MeterSpec]:
        """The installed meters whose ids are in the hub's ranges."""
        return {i: m for i, m in self.installed.items() if owns_meter(i)}

    def _apply(self, change: MeterDiff) -> None:
        if not change:
            return
        if LOG.isEnabledFor(logging.DEBUG):
            for m in change.add:
                LOG.debug("meter add %s", m)
            for m in change.modify:
                LOG.debug("meter modify %s (installed: %s)", m, self.installed.get(m.meter_id))
            for i in change.delete:
                LOG.debug("meter delete %s", i)
        try:
            self.channel.apply_meters(list(change.add), list(change.modify), list(change.delete))
        except Exception:
            self.needs_readback = True  # meter mods are not atomic: some may have applied
            raise
        self.installed.update((m.meter_id, m) for m in change.add + change.modify)
        for i in change.delete:
            self.installed.pop(i, None)

    def _diff(self, desired: Iterable[MeterSpec]) -> MeterDiff:
        want = list(desired)
        desired_index(want)  # refuse bad input before reading the switch
        if self.needs_readback:
            self.readback()
        return diff(want, self.installed.values())

    def sync(self, desired: Iterable[MeterSpec]) -> MeterDiff:
        """Add, modify and delete in one go (see the module doc for the order with flows)."""
        change = self._diff(desired)
        self._apply(change)
        return change

    def sync_before_flows(self, desired: Iterable[MeterSpec]) -> MeterDiff:
        """Add missing and modify changed meters; delete nothing.  Before the flows' sync."""
        full = self._diff(desired)
        change = MeterDiff(add=full.add, modify=full.modify)
        self._apply(change)
        return change

    def sync_after_flows(self, desired: Iterable[MeterSpec]) -> MeterDiff:
        """Delete the hub's meters that are not desired; add nothing.  After the flows' sync."""
        full = self._diff(desired)
        change = MeterDiff(delete=full.delete)
        self._apply(change)
        return change
