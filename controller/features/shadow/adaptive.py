"""The adaptive percentage: down when the shadows or the hub struggle, up while all is well.

An appliance whose ``adjustment.mode`` is ``adaptive`` has its share of new
connections moved by the manager once a second (`Adjuster.step`), from the
latest heartbeats of its ready instances and the hub's own load (`health_of`):

* unhealthy (an instance reports drops, or a lag above `LAG_LIMIT_MS`, or the
  hub's load per CPU is above `HOST_LOAD_LIMIT`): halved, never below ``min``;
* healthy for `HYSTERESIS` seconds in a row: one point more, never above
  ``max`` (and again after as many healthy seconds);

always within ``min``..``max``, rounded to 0.1 (the mirror samples in permille).
`next_percentage` is the rule alone (pure); `kept_percentage` is what the
manager writes when it rewrites the appliance's ``shadow-state`` for another
reason, so an adapted percentage is never put back to the manifest's.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from controller.features.shadow.document import Adjustment, Appliance
from controller.features.shadow.records import Instance, Percentage

LAG_LIMIT_MS = 500.0
HOST_LOAD_LIMIT = 1.5            # 1-minute load average per CPU
HYSTERESIS = 5                   # healthy seconds in a row before one step up
PERIOD = 1.0                     # seconds between two steps of an appliance
DECREASE, INCREASE = 0.5, 1.0    # times, and percentage points
CONFIGURED, DISABLED = "as configured", "shadowing is disabled"


class Health(NamedTuple):
    """What the shadows and the hub say now: the first problem seen (None: healthy), and
    the healthy seconds in a row so far (this one included)."""
    problem: str | None
    healthy_for: int = 0


class Step(NamedTuple):
    percentage: float
    reason: str


def host_load() -> float:
    """The hub's load: the 1-minute load average per CPU."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def problem_of(ready: Iterable[Instance], load: float) -> str | None:
    """Why the appliance is unhealthy now (its ready instances' last heartbeats, the hub's
    load), or None."""
    for i in ready:
        if i.load is None:
            continue
        if i.load.drops > 0:
            return f"instance {i.id} reports {i.load.drops} drops"
        if i.load.lag_ms > LAG_LIMIT_MS:
            return f"instance {i.id} reports a lag of {i.load.lag_ms:g} ms"
    if load > HOST_LOAD_LIMIT:
        return f"the hub's load is {load:.2f} per CPU"
    return None


def clamp(percentage: float, adjustment: Adjustment) -> float:
    return round(min(adjustment.max, max(adjustment.min, percentage)), 1)


def next_percentage(current: float, adjustment: Adjustment, health: Health) -> Step | None:
    """The next percentage and why, or None when it stays as it is."""
    current = clamp(current, adjustment)
    if health.problem is not None:
        new, reason = clamp(current * DECREASE, adjustment), health.problem
    elif health.healthy_for >= HYSTERESIS:
        new, reason = clamp(current + INCREASE, adjustment), f"healthy for {health.healthy_for} s"
    else:
        return None
    return Step(new, reason) if new != current else None


def kept_percentage(old: Percentage | None, app: Appliance | None) -> Percentage:
    """The percentage to write: 0 when disabled, the manifest's when fixed; when adaptive,
    the adapted one (within the manifest's min..max), else the manifest's clamped."""
    if app is None or not app.shadowing.shadow_enabled:
        return Percentage(current=0.0, reason=DISABLED)
    configured = app.shadowing.shadow_traffic_percentage
    if app.adjustment.mode != "adaptive":
        return Percentage(current=configured, reason=CONFIGURED)
    if old is not None and old.reason not in (CONFIGURED, DISABLED):
        return Percentage(current=clamp(old.current, app.adjustment), reason=old.reason)
    return Percentage(current=clamp(configured, app.adjustment), reason=CONFIGURED)


@dataclass
class _Track:
    last: float
    healthy_for: int = 0


@dataclass
class Adjuster:
    """Per appliance: when it was last stepped and its healthy seconds in a row."""
    tracks: dict[str, _Track] = field(default_factory=dict)

    def step(self, app_id: str, current: float, adjustment: Adjustment, problem: str | None,
             now: float) -> Step | None:
        """At most once per `PERIOD` per appliance: the change to make, or None."""
        track = self.tracks.get(app_id)
        if track is not None and now - track.last < PERIOD:
            return None
        if track is None:
            track = self.tracks[app_id] = _Track(now)
        track.last = now
        track.healthy_for = 0 if problem is not None else track.healthy_for + 1
        change = next_percentage(current, adjustment, Health(problem, track.healthy_for))
        if change is not None and problem is None:
            track.healthy_for = 0                     # the next step up waits again
        return change

    def forget(self, app_id: str) -> None:
        self.tracks.pop(app_id, None)

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until the next step is due (None: no appliance adapts)."""
        if not self.tracks:
            return None
        return max(0.0, min(t.last for t in self.tracks.values()) + PERIOD - now)
