"""The mirror's counters, read back from the switches: what each instance was sent.

Every `PERIOD` seconds, for each active instance, the flows under its cookie
(``mirror.instance_cookie``) are read with flow stats from the switches of its
appliance's production interfaces, where the copies are decided and made
(the decide and track tables of both hooks; a copy crossing other switches
on its way is not counted twice):

* a flow of a decide table counts one packet per connection it sampled, so
  their packets are the connections mirrored;
* packets and bytes are those of all of them: each copy passes exactly one.

Counters start again from zero when a flow is installed anew (a percentage
change replaces the sampling ranges), so each flow's reading is kept apart
and only its growth is added (`growth`): a flow whose counters went down, or
that is new, adds all it has; a flow gone adds nothing more; totals never go
backwards.  After a restart the first reading of an instance that was already
running is only a baseline, since what it counted before was added then.
Dropped copies are not seen here: the agents report them (heartbeats).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import NamedTuple

from controller.core.channel import FlowCounters
from controller.features.shadow.mirror import instance_cookie
from controller.pipeline import tables
from controller.pipeline.flowspec import FlowKey

LOG = logging.getLogger("hubshift.shadows")
PERIOD = 2.0                   # seconds between two readings of an instance
ALL_BITS = (1 << 64) - 1
DECIDE = frozenset({tables.SHADOW_FROM_DECIDE.id, tables.SHADOW_TO_DECIDE.id})
COUNTED = DECIDE | {tables.SHADOW_FROM.id, tables.SHADOW_TO.id}


class Tally(NamedTuple):
    connections: int = 0
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Tally) -> Tally:           # type: ignore[override]
        return Tally(self.connections + other.connections, self.packets + other.packets,
                     self.bytes + other.bytes)

    def below(self, other: Tally) -> bool:
        return any(a < b for a, b in zip(self, other))


class Target(NamedTuple):
    """An instance to read: its appliance, and the switches its copies are made on."""
    appliance_id: str
    instance_id: str
    slot_id: str
    dpids: tuple[int, ...]


Readings = dict[tuple[int, FlowKey], Tally]          # (dpid, flow) -> what it counted


def tallies(dpid: int, flows: Iterable[FlowCounters]) -> Readings:
    """What each counted flow of one switch says."""
    return {(dpid, c.flow.key): Tally(c.packets if c.flow.table in DECIDE else 0,
                                      c.packets, c.bytes)
            for c in flows if c.flow.table in COUNTED}


def growth(last: Mapping[tuple[int, FlowKey], Tally], now: Readings) -> Tally:
    """How much more the flows counted since `last` (new or restarted flows: all of it)."""
    total = Tally()
    for key, tally in now.items():
        before = last.get(key)
        total += tally if before is None or tally.below(before) else Tally(
            *(a - b for a, b in zip(tally, before)))
    return total


class Counting:
    """Reads the targets' counters off the worker and hands each growth to `add`
    (appliance id, instance id, Tally) on the worker."""

    def __init__(self, ctx, add: Callable[[str, str, Tally], None]) -> None:
        self.ctx, self.add = ctx, add
        self.last: dict[str, Readings] = {}            # instance id -> its flows' last readings
        self.at_load: set[str] = set()                  # running at load: first readings add 0
        self.read: set[tuple[str, int]] = set()         # (instance, dpid) read once at least
        self.asked: set[tuple[str, int]] = set()        # (instance, dpid) being read
        self.due = 0.0

    def running_at_load(self, instance_ids: Iterable[str]) -> None:
        self.at_load = set(instance_ids)

    def next_wakeup(self, mono: float) -> float:
        return max(0.0, self.due - mono)

    def poll(self, targets: Iterable[Target]) -> None:
        mono = self.ctx.clock()
        if mono < self.due:
            return
        self.due = mono + PERIOD
        targets = list(targets)
        live = {t.instance_id for t in targets}
        for iid in set(self.last) - live:
            del self.last[iid]
        self.read = {r for r in self.read if r[0] in live}
        for t in targets:
            cookie = instance_cookie(t.appliance_id, t.slot_id)
            for dpid in t.dpids:
                if (t.instance_id, dpid) in self.asked:
                    continue
                asked = self.ctx.request(
                    dpid, lambda ch, c=cookie: ch.flow_counters(None, c, ALL_BITS),
                    lambda answer, t=t, dpid=dpid: self._read(t, dpid, answer))
                if asked:
                    self.asked.add((t.instance_id, dpid))

    def _read(self, t: Target, dpid: int, answer: Future) -> None:
        self.asked.discard((t.instance_id, dpid))
        if answer.exception() is not None:
            LOG.debug("counters of %s on %016x not read: %s", t.instance_id, dpid,
                      answer.exception())
            return
        now = tallies(dpid, answer.result())
        last = self.last.setdefault(t.instance_id, {})
        mine = {k: v for k, v in last.items() if k[0] == dpid}
        first = (t.instance_id, dpid) not in self.read
        self.read.add((t.instance_id, dpid))
        grown = Tally() if first and t.instance_id in self.at_load else growth(mine, now)
        for key in mine:
            del last[key]
        last.update(now)
        if grown != Tally():
            self.add(t.appliance_id, t.instance_id, grown)
