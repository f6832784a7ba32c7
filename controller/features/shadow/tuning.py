"""The adaptive mode at run time: the percentage, sample and hold, and scaling on load.

For each appliance whose ``adjustment.mode`` is ``adaptive`` (a fixed one keeps
the manifest's percentage and count), once a second, from the latest
heartbeats of its ready instances and the hub's own load:

* **percentage**: halved on a problem, one point up after healthy seconds
  (`adaptive.Adjuster`, the rule and its hysteresis);
* **scaling**: an instance overloaded (a problem) for `SCALE_UP_AFTER` checks in
  a row adds one instance, if a slot is free and the appliance runs fewer
  than ``max_instances`` (default twice ``shadow_instance_count``); after
  `SCALE_DOWN_AFTER` healthy checks in a row, one added instance goes again;
* **sample and hold**: a finding that names a source (not one of the
  appliance's own addresses) mirrors every new connection of that source
  for ``adjustment.hold`` seconds (a hold again extends it), through flows
  for that source alone (``mirror``'s held sources); the hold ends at its time.

Every change is one write of the appliance's ``shadow-state`` (so one
recompile, one bundle per switch) and one journal entry of kind ``shadow``
with its reason.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from controller.features.shadow.adaptive import PERIOD, Adjuster, problem_of
from controller.features.shadow.document import Appliance
from controller.features.shadow.records import READY, Finding, Hold, Percentage, ShadowState

SCALE_UP_AFTER = 3          # checks (seconds) in a row with a problem before one more instance
SCALE_DOWN_AFTER = 60       # healthy checks in a row before an added instance goes


@dataclass
class _Load:
    last: float = float("-inf")    # the last check
    overloaded: int = 0            # checks in a row
    healthy: int = 0


@dataclass
class Tuning:
    """Writes what it changes through `put` (appliance id, new state) and says what it did
    through `journal`; `free_slot` says whether an instance could be added."""
    ctx: object
    put: Callable[[str, ShadowState], None]
    free_slot: Callable[[], bool]
    host_load: Callable[[], float]
    adjuster: Adjuster = field(default_factory=Adjuster)
    loads: dict[str, _Load] = field(default_factory=dict)

    def _journal(self, app_id: str, message: str, **data) -> None:
        self.ctx.journal("shadow", app_id, message, **data)

    # -- once a second ------------------------------------------------------------------

    def adapt(self, appliances: dict[str, Appliance], states: dict[str, ShadowState]) -> None:
        mono, load = self.ctx.clock(), self.host_load()
        for app_id in sorted(states):
            app, state = appliances.get(app_id), states[app_id]
            ready = [i for i in state.instances if i.state == READY]
            if (app is None or not app.shadowing.shadow_enabled or not ready
                    or app.adjustment.mode != "adaptive" or state.percentage is None):
                self.adjuster.forget(app_id)
                self.loads.pop(app_id, None)
                continue
            problem = problem_of(ready, load)
            step = self.adjuster.step(app_id, state.percentage.current, app.adjustment,
                                      problem, mono)
            if step is not None:
                old = state.percentage.current
                state = state.model_copy(update={"percentage": Percentage(
                    current=step.percentage, reason=step.reason)})
                self.put(app_id, state)
                self._journal(app_id, f"percentage {old:.1f} -> {step.percentage:.1f}: "
                              f"{step.reason}", previous=old, percentage=step.percentage,
                              reason=step.reason)
            self._scale(app_id, app, state, problem, mono)

    def _scale(self, app_id: str, app: Appliance, state: ShadowState, problem: str | None,
               mono: float) -> None:
        track = self.loads.setdefault(app_id, _Load())
        if mono - track.last < PERIOD:
            return
        track.last = mono
        if problem is not None:
            track.overloaded, track.healthy = track.overloaded + 1, 0
        else:
            track.overloaded, track.healthy = 0, track.healthy + 1
        count = app.shadowing.shadow_instance_count
        most = app.adjustment.max_instances or 2 * count
        if track.overloaded >= SCALE_UP_AFTER and count + state.added < most and self.free_slot():
            track.overloaded = 0
            self.put(app_id, state.model_copy(update={"added": state.added + 1}))
            self._journal(app_id, f"one more instance ({count + state.added + 1}): {problem}",
                          instances=count + state.added + 1, reason=problem)
        elif track.healthy >= SCALE_DOWN_AFTER and state.added > 0:
            track.healthy = 0
            self.put(app_id, state.model_copy(update={"added": state.added - 1}))
            self._journal(app_id, f"one instance less ({count + state.added - 1}): healthy for "
                          f"{SCALE_DOWN_AFTER} s", instances=count + state.added - 1,
                          reason=f"healthy for {SCALE_DOWN_AFTER} s")

    # -- sample and hold ----------------------------------------------------------------

    def hold(self, app: Appliance, state: ShadowState, finding: Finding,
             own: set[str]) -> ShadowState | None:
        """The state with the finding's source held (None: nothing to hold)."""
        source = finding.five_tuple.src if finding.five_tuple else None
        if app.adjustment.mode != "adaptive" or source is None or source in own:
            return None
        until = self.ctx.wallclock() + app.adjustment.hold
        holds = [h for h in state.holds if h.source != source]
        extended = len(holds) != len(state.holds)
        holds.append(Hold(source=source, until=until, finding_id=finding.id))
        self._journal(finding.appliance_id, f"{source} held: all its new connections mirrored "
                      f"for {app.adjustment.hold} s ({'extended, ' if extended else ''}finding "
                      f"{finding.id})", source=source, until=until, finding_id=finding.id)
        return state.model_copy(update={"holds": sorted(holds, key=lambda h: h.source)})

    def expire_holds(self, states: dict[str, ShadowState]) -> None:
        now = self.ctx.wallclock()
        for app_id, state in sorted(states.items()):
            kept = [h for h in state.holds if h.until > now]
            if len(kept) == len(state.holds):
                continue
            self.put(app_id, state.model_copy(update={"holds": kept}))
            for h in state.holds:
                if h not in kept:
                    self._journal(app_id, f"{h.source} no longer held: its time is over",
                                  source=h.source, finding_id=h.finding_id)

    def next_wakeup(self, states: dict[str, ShadowState]) -> float | None:
        """Seconds until something is due (None: nothing)."""
        times = []
        if (due := self.adjuster.next_wakeup(self.ctx.clock())) is not None:
            times.append(due)
        now = self.ctx.wallclock()
        times += [max(0.0, h.until - now) for s in states.values() for h in s.holds]
        return min(times) if times else None


def wanted(app: Appliance | None, state: ShadowState | None) -> int:
    """How many instances the appliance should run now."""
    if app is None or not app.shadowing.shadow_enabled:
        return 0
    added = state.added if state is not None and app.adjustment.mode == "adaptive" else 0
    return app.shadowing.shadow_instance_count + added

