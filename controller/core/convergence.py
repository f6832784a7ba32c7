"""Desired state of every switch, reconciled; and how far each switch has got.

A *generation* counts changes of intent or topology (`changed`).  Every
reconcile of a switch records the generation it realized, or that it refused
it, so a feature's state machine can ask `realization(dpid, generation)`
instead of converging by itself.  A switch that just connected settles for
`settle` seconds (links are discovered) before its first full reconcile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from controller.core.channel import SwitchChannel
from controller.core.context import Realization
from controller.core.feature import Contribution
from controller.core.metrics import Metrics
from controller.core.topology import dpid_str
from controller.pipeline import tables
from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.meters import MeterSpec
from controller.reconcile.flows import Reconciler
from controller.reconcile.meters import MeterReconciler


@dataclass
class SwitchState:
    """The reconcilers of one connected switch and what they have realized."""
    flows: Reconciler
    meters: MeterReconciler
    settling_until: float
    synced: int = -1                 # the generation last realized
    failed: int = -1                 # the generation last refused
    reconciled_at: float | None = None
    desired: tuple[FlowSpec, ...] = field(default=())


class Convergence:
    def __init__(self, metrics: Metrics, clock: Callable[[], float],
                 wallclock: Callable[[], float], settle: float,
                 journal: Callable[..., None]) -> None:
        self.metrics = metrics
        self.clock = clock
        self.wallclock = wallclock
        self.settle = settle
        self.journal = journal
        self.generation = 0
        self.switches: dict[int, SwitchState] = {}

    # ---------------------------------------------------------- generations
    def changed(self) -> int:
        self.generation += 1
        return self.generation

    def dirty(self, ready: Iterable[int]) -> bool:
        return any(self.switches[d].synced != self.generation for d in ready)

    def in_sync(self, dpid: int) -> bool:
        state = self.switches.get(dpid)
        return state is not None and state.synced == self.generation \
            and not self.settling(dpid)

    def realization(self, dpid: int, generation: int) -> Realization:
        state = self.switches.get(dpid)
        if state is None:
            return Realization.FAILED
        if state.synced >= generation:
            return Realization.DONE
        if state.failed >= generation:
            return Realization.FAILED
        return Realization.PENDING

    # ---------------------------------------------------------- switches
    def connect(self, channel: SwitchChannel) -> int:
        """A switch (re)connected: read back what it holds; the flow count."""
        state = SwitchState(Reconciler(channel, self.clock, ignore_tables=tables.LEARNED),
                            MeterReconciler(channel), self.clock() + self.settle)
        self.switches[channel.dpid] = state
        installed = state.flows.readback()
        state.meters.readback()
        return installed

    def disconnect(self, dpid: int) -> None:
        self.switches.pop(dpid, None)

    def ensure(self, dpid: int, flows: Sequence[FlowSpec]) -> None:
        self.switches[dpid].flows.ensure(flows)

    def settling(self, dpid: int) -> bool:
        state = self.switches.get(dpid)
        return state is not None and state.settling_until > 0

    def next_settle(self) -> float | None:
        now = self.clock()
        waits = [s.settling_until - now for s in self.switches.values() if s.settling_until > 0]
        return min(waits) if waits else None

    def settle_due(self) -> bool:
        """End the settle time of switches whose time is up; True if one ended."""
        now = self.clock()
        ended = False
        for state in self.switches.values():
            if 0 < state.settling_until <= now:
                state.settling_until = 0
                ended = True
        return ended

    # ---------------------------------------------------------- reconcile
    def reconcile(self, ready: Iterable[int], contributions: Sequence[Contribution]) -> None:
        """Every ready switch not at the current generation gets its desired state."""
        flows: dict[int, list[FlowSpec]] = {}
        meters: dict[int, list[MeterSpec]] = {}
        for c in contributions:
            for dpid, fl in c.flows.items():
                flows.setdefault(dpid, []).extend(fl)
            for dpid, ms in c.meters.items():
                meters.setdefault(dpid, []).extend(ms)
        for dpid in sorted(ready):
            state = self.switches[dpid]
            if state.synced != self.generation:
                state.desired = tuple(flows.get(dpid, ()))
                self._reconcile(dpid, state, tuple(meters.get(dpid, ())))

    def _reconcile(self, dpid: int, state: SwitchState, desired_meters: tuple) -> None:
        name = dpid_str(dpid)
        try:
            with self.metrics.reconcile_seconds.time():
                state.meters.sync_before_flows(desired_meters)  # flows name only existing meters
                result = state.flows.sync(state.desired)
                state.meters.sync_after_flows(desired_meters)   # no flow uses what goes now
        except Exception as exc:
            state.failed = self.generation
            self.metrics.bundles.labels(name, "failed").inc()
            self.journal("reconcile", name, f"failed: {exc}")
            return  # retried at the next change (readback first)
        state.synced = self.generation
        state.reconciled_at = self.wallclock()
        self.metrics.flows_desired.labels(name).set(len(state.desired))
        self.metrics.flows_installed.labels(name).set(len(state.flows.realized))
        if result.diff:
            self.metrics.bundles.labels(name, "applied").inc()
            self.metrics.flow_changes.labels(name, "add").inc(len(result.diff.add))
            self.metrics.flow_changes.labels(name, "delete").inc(len(result.diff.delete))
            self.journal("reconcile", name, "applied", **result.diff.summary(),
                         ms=round(result.seconds * 1000, 3))
