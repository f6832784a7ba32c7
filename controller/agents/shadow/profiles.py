"""The analysis profiles' plug-in point: what the agent runs beside a shadow instance.

Python standard library only here; a profile may need more (a capture library, a
model), which it imports when it is built, so that the agent starts without it.
`PROFILES` maps a profile name (the manifest's `shadow_analysis_profiles`) to a
factory; for a name not there, the agent logs "profile X not available in this
agent yet", says so in READY (`unavailable`), and runs the instance without it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, Protocol

from controller.agents.shadow import anomaly, fuzzing, ids, performance
from controller.agents.shadow.protocol import MAX_METRICS, Finding, finite, metric_ok

log = logging.getLogger("hub-shadow-agent")


@dataclass(frozen=True)
class ProfileContext:
    """What a profile is started with."""
    instance_id: str
    interface: str                          # the slot's: the mirrored traffic arrives here
    addresses: tuple[IPv4Interface, ...]    # the production addresses the instance has
    gateway: IPv4Address | None
    settings: Mapping[str, Any]             # the manifest's `profiles.<name>`, maybe {}
    pgid: int                               # the image's process group
    wallclock: Callable[[], float]          # for `Finding.at`


class Profile(Protocol):
    """One analysis profile of one instance.  `poll` is called several times a second
    from the agent's loop and must not block; a profile that needs time runs its own
    thread or process from `start` and hands findings over in `poll`.

    Two members are optional, read by the agent for every HEARTBEAT when a profile
    has them: `lag_ms` (a float attribute or property: how far behind its analysis
    is; the heartbeat carries the largest) and `metrics()` (its figures, a dict of
    names of `[a-z0-9_]{1,40}` to finite numbers; the heartbeat carries them all
    merged, 16 at most).  When the image ends by itself, `poll` is called once more
    before `stop`, so that what a profile saw of the end is sent."""

    def start(self, ctx: ProfileContext) -> None:
        """Begin; an exception here is logged and the profile left out."""

    def poll(self) -> list[Finding]:
        """The findings since the last poll."""

    def stop(self) -> None:
        """End, releasing what `start` took."""


def largest_lag_ms(profiles: Mapping[str, Profile]) -> float:
    """The largest `lag_ms` of the profiles that have one (0 when none has)."""
    lags = [0.0]
    for name, profile in profiles.items():
        try:
            lag = getattr(profile, "lag_ms", 0.0)
        except Exception as exc:                     # a plug-in's failure is its own
            lag = None
            log.debug("profile %s: lag_ms: %s", name, exc)
        if finite(lag) and lag > 0:
            lags.append(float(lag))
    return max(lags)


def merged_metrics(profiles: Mapping[str, Profile],
                   logged: set[tuple[str, str]]) -> dict[str, float]:
    """The figures of the profiles that have `metrics()`, merged, in name order, at most
    MAX_METRICS: an entry that is not a name and a finite number is left out (logged
    once per (profile, name) in `logged`)."""
    merged: dict[str, float] = {}
    for name, profile in profiles.items():
        figures = getattr(profile, "metrics", None)
        if figures is None:
            continue
        try:
            given = dict(figures())
        except Exception as exc:
            log.debug("profile %s: metrics: %s", name, exc)
            continue
        for key, value in given.items():
            if metric_ok(key, value):
                merged[key] = float(value)
            elif (name, str(key)) not in logged:
                logged.add((name, str(key)))
                log.warning("profile %s: metric %r = %r left out (a name of [a-z0-9_]{1,40}"
                            " and a finite number)", name, key, value)
    return dict(sorted(merged.items())[:MAX_METRICS])


PROFILES: dict[str, Callable[[], Profile]] = {}

PROFILES[ids.NAME] = ids.IdsProfile
PROFILES[anomaly.NAME] = anomaly.AnomalyProfile
PROFILES[performance.NAME] = performance.PerformanceProfile
PROFILES[fuzzing.NAME] = fuzzing.FuzzingProfile
