"""Desired vs installed flows -> the smallest change, applied atomically.

The reconciler keeps, per switch, the flows it knows to be *realized* (read
back from the switch on connect, then updated after each successful apply).
A change is the diff of desired against realized: strict deletes of flows the
hub owns that are no longer wanted, and adds of flows that are missing or
whose actions/cookie changed.  The channel applies it as one ordered, atomic
bundle followed by a barrier.  Nothing ever deletes by wildcard, so a table
carrying traffic is never emptied.

Ownership.  The hub owns exactly the flows whose cookie carries its magic
and a feature byte some budget declares (`controller.core.budgets.owns_cookie`):
those are read back, and deleted when no longer desired.  Every other flow
(an operator's, one of a feature byte nobody declares) is never touched, and
a desired flow the hub would not own is refused: it could never be deleted.
Flows of learned tables (`ignore_tables`: the switch writes them) are not
read back.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from controller.core.budgets import COOKIE_PREFIXES, owns_cookie
from controller.pipeline import cookies, tables
from controller.pipeline.flowspec import FlowKey, FlowSpec

LOG = logging.getLogger("hubshift.reconcile")


@dataclass(frozen=True)
class FlowDiff:
    add: tuple[FlowSpec, ...] = ()      # new flows, and replacements (same key, new behaviour)
    delete: tuple[FlowSpec, ...] = ()   # strict deletes of flows no longer desired

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.delete)

    def summary(self) -> dict:
        return {"add": len(self.add), "delete": len(self.delete)}


class ApplyError(RuntimeError):
    """The switch refused a change; with a bundle, nothing of it was applied."""


class FlowChannel(Protocol):
    def dump_flows(self, cookie: int, cookie_mask: int) -> list[FlowSpec]: ...
    def apply(self, diff: FlowDiff) -> None: ...


def refuse_foreign(flows: tuple[FlowSpec, ...]) -> None:
    """Raise ValueError for a flow to send that the hub would not own (nor ever delete).

    Checked on what a change adds, not on every desired flow: what is already
    realized was read back as the hub's or checked when it was added.
    """
    if {f.cookie >> 48 for f in flows} <= COOKIE_PREFIXES:
        return
    bad = next(f for f in flows if not owns_cookie(f.cookie))
    raise ValueError(f"cookie {bad.cookie:#x} is not the hub's (no budget declares its "
                     f"feature byte): the flow could never be deleted: {bad}")


def index(flows: Iterable[FlowSpec]) -> dict[FlowKey, FlowSpec]:
    out: dict[FlowKey, FlowSpec] = {}
    for f in flows:
        key = f.key
        known = out.get(key)
        if known is not None and known != f:
            raise ValueError(f"two different flows with one identity: {known} / {f}")
        out[key] = f
    return out


def diff(desired: Iterable[FlowSpec], installed: Iterable[FlowSpec]) -> FlowDiff:
    return _diff(index(desired), index(installed))


def _diff(want: dict[FlowKey, FlowSpec], have: dict[FlowKey, FlowSpec]) -> FlowDiff:
    add = tuple(f for k, f in want.items() if k not in have or not have[k].same_behaviour(f))
    delete = tuple(f for k, f in have.items() if k not in want)
    return FlowDiff(add=add, delete=delete)


@dataclass(frozen=True)
class SyncResult:
    diff: FlowDiff
    seconds: float


class Reconciler:
    """One switch's realized flows, and the only path by which they change."""

    def __init__(self, channel: FlowChannel, clock: Callable[[], float] = time.monotonic,
                 ignore_tables: frozenset[int] = tables.LEARNED):
        self.channel = channel
        self.clock = clock
        self.ignore_tables = ignore_tables  # filled by the switch itself (learned flows)
        self.realized: dict[FlowKey, FlowSpec] = {}
        self.needs_readback = True
        self.last_synced_at: float | None = None

    def readback(self) -> int:
        cookie, mask = cookies.hub_mask()
        self.realized = index(f for f in self.channel.dump_flows(cookie, mask)
                              if f.table not in self.ignore_tables and owns_cookie(f.cookie))
        self.needs_readback = False
        return len(self.realized)

    def _apply(self, change: FlowDiff) -> None:
        refuse_foreign(change.add)
        if LOG.isEnabledFor(logging.DEBUG):
            for f in change.add:
                LOG.debug("add %s (installed: %s)", f, self.realized.get(f.key))
            for f in change.delete:
                LOG.debug("delete %s", f)
        try:
            self.channel.apply(change)
        except Exception:
            # A bundle rolled back, but a non-bundle switch may hold part of it.
            self.needs_readback = True
            raise

    def ensure(self, flows: Iterable[FlowSpec]) -> FlowDiff:
        """Add these flows where missing or different; delete nothing."""
        if self.needs_readback:
            self.readback()
        change = FlowDiff(add=tuple(f for f in flows if self.realized.get(f.key) != f))
        if change:
            self._apply(change)
            self.realized.update((f.key, f) for f in change.add)
        return change

    def sync(self, desired: Iterable[FlowSpec]) -> SyncResult:
        start = self.clock()
        desired = list(desired)
        if self.needs_readback:
            self.readback()
        want = index(desired)  # once: realized is already indexed, and becomes `want`
        change = _diff(want, self.realized)
        if change:
            self._apply(change)
            self.realized = want
        self.last_synced_at = self.clock()
        return SyncResult(change, self.last_synced_at - start)
