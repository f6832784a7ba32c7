"""What a switch must accept for the mirror (`controller.features.shadow.mirror`), and what
each switch was found to accept: `Capabilities`, filled by the OpenFlow probe
(`controller.features.shadow.probe`).  Nothing is read over OVSDB: the hub may be far
from its switches, and OVSDB's Datapath:capabilities is empty on the userspace datapath.

How the shadow feature uses it:

1. **Probe each production switch of an appliance when it connects.**  `probe(dpid)` asks
   the switch (off the worker, `ctx.request`) the first time the mirror needs it;
   `forget(dpid)` on a disconnect makes the next connect probe it again (`sync` does
   both from the connected and the needed switches).  A result recompiles
   (`ctx.changed`); a switch that lacks something is journaled.
2. **An appliance whose production switch lacks a requirement is not mirrored at all**
   (no hook, no copy: never everything, never part of it), and its GET shows the reason
   (the appliance's ``shadow-state`` keeps it as ``unmirrored``):
   `blocking_reason(caps, dpids, snaplen)`, from mirroring.  The same call names a
   switch not probed yet (or not connected): the mirror waits for it rather than mirror
   the appliance on some of its switches.
3. **A POST/PATCH whose production interfaces sit on a switch known to lack one is
   refused 422 naming `interfaces`**: each answer is stored (``shadow-capability``, id
   the dpid, `on_result`), and REST reads it there with `describe` (REST never waits for
   the worker: it writes inside a store transaction the worker may be waiting for).  A
   switch not probed yet does not refuse a manifest: it is waited for, as in 2.

`snaplen`: the manifest's `mirror.snaplen` is set, so the copies need truncation.  A
probe asks for every requirement (truncation too), so a snaplen set later needs none.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future
from collections.abc import Callable, Mapping
from typing import Any, Iterable, NamedTuple

from controller.core.topology import dpid_str
from controller.features.shadow.mirror_net import (DECIDED, HASH_REGISTER, MARK, SAMPLE_BASIS,
                                                   SAMPLE_BITS, SAMPLE_LINKS, BUCKET_BASIS,
                                                   BUCKET_BITS, BUCKET_OFS, ZONES,
                                                   sampled_mark)
from controller.features.shadow.probe import PROBE_PORT, ProbeResult, run_probe
from controller.pipeline import tables
from controller.pipeline.actions import (Action, Clone, Conntrack, Multipath, OutputTrunc,
                                         SetField, ct_state)
from controller.pipeline.flowspec import MatchValue

LOG = logging.getLogger("hubshift.shadows")
RETRY_SECONDS = 5.0              # after a probe that got no answer (lost channel, timeout)


class Requirement(NamedTuple):
    """One thing the mirror writes that a switch might refuse, in the mirror's own shape:
    its probe flow carries `actions` (and `match`, `goto`) exactly as the mirror does."""
    action: str                                       # as ovs-ofctl names it
    why: str
    actions: tuple[Action, ...]
    match: tuple[tuple[str, MatchValue], ...] = ()
    goto: int | None = None


_ZONE, _BUCKETS = ZONES.first, 2
REQUIREMENTS = (
    Requirement("ct", "conntrack with zones and marks: a connection is decided once, by its "
                      "first packet",
                (Conntrack(commit=True, zone=_ZONE, mark=sampled_mark(0), mark_mask=MARK.mask),),
                match=(("ct_state", ct_state("+trk")), ("ct_zone", _ZONE),
                       ("ct_mark", (0, DECIDED)))),
    Requirement("multipath", "a flow-consistent hash of the connection into a register",
                (Multipath(SAMPLE_LINKS, HASH_REGISTER, SAMPLE_BITS, 0, basis=SAMPLE_BASIS),
                 Multipath(_BUCKETS, HASH_REGISTER, BUCKET_BITS, BUCKET_OFS,
                           basis=BUCKET_BASIS))),
    Requirement("clone", "copies that leave the packet itself as it was",
                (Clone((Conntrack(zone=_ZONE, table=tables.SHADOW_FROM.id),)),),
                goto=tables.ARP.id),
)
TRUNCATE = Requirement("output_trunc", "copies cut to the manifest's snaplen",
                       (SetField("eth_dst", "02:00:00:00:00:01"), OutputTrunc(PROBE_PORT, 128)))
ALL = REQUIREMENTS + (TRUNCATE,)


def required_actions(snaplen: bool = False) -> tuple[Requirement, ...]:
    """What a switch must support to mirror an appliance (with a snaplen: truncation too)."""
    return REQUIREMENTS + ((TRUNCATE,) if snaplen else ())


class Capabilities:
    """Per switch, what its probe found (on the worker; the probe itself runs off it)."""

    def __init__(self, ctx: Any, requirements: tuple[Requirement, ...] = ALL,
                 on_result: Callable[[ProbeResult], None] = lambda result: None) -> None:
        self.ctx = ctx
        self.requirements = requirements
        self.on_result = on_result                # each answer, once believed (to store it)
        self.known: dict[int, ProbeResult] = {}
        self.asking: dict[int, int] = {}          # dpid -> the generation of its probe
        self.retry_at: dict[int, float] = {}      # dpid -> no probe before (monotonic)
        self._generation = 0

    # ------------------------------------------------------------ asking
    def probe(self, dpid: int) -> bool:
        """Ask `dpid` unless it is known, being asked, or just failed to answer; False
        when nothing was asked (the switch stays as it was: known, or unknown)."""
        if dpid in self.known or dpid in self.asking \
                or self.ctx.clock() < self.retry_at.get(dpid, float("-inf")):
            return False
        self._generation += 1
        generation, requirements = self._generation, self.requirements
        asked = self.ctx.request(dpid, lambda ch: run_probe(ch, dpid, requirements),
                                 lambda answer: self._answered(dpid, generation, answer))
        if asked:
            self.asking[dpid] = generation
        return asked

    def forget(self, dpid: int) -> None:
        """The switch went away: unknown again, a probe under way is not believed."""
        self.known.pop(dpid, None)
        self.asking.pop(dpid, None)
        self.retry_at.pop(dpid, None)

    def sync(self, connected: Iterable[int], needed: Iterable[int]) -> None:
        """Forget the switches no longer connected; probe the needed ones that are."""
        connected = set(connected)
        for dpid in set(self.known) | set(self.asking) | set(self.retry_at):
            if dpid not in connected:
                self.forget(dpid)
        for dpid in sorted(set(needed) & connected):
            self.probe(dpid)

    def _answered(self, dpid: int, generation: int, answer: Future) -> None:
        if self.asking.get(dpid) != generation:
            return                                # forgotten meanwhile: a new one decides
        del self.asking[dpid]
        error = answer.exception()
        if error is not None:
            LOG.warning("switch %s: the mirror's capability probe got no answer (%s); "
                        "again in %.0f s", dpid_str(dpid), error, RETRY_SECONDS)
            self.retry_at[dpid] = self.ctx.clock() + RETRY_SECONDS
            return
        result: ProbeResult = answer.result()
        self.known[dpid] = result
        self.retry_at.pop(dpid, None)
        self.on_result(result)
        why = self.reason(dpid, snaplen=True)
        if why is None:
            LOG.info("switch %s accepts every action the mirror needs", dpid_str(dpid))
        else:
            LOG.warning("%s", why)
            self.ctx.journal("shadow", dpid_str(dpid), why,
                             missing=sorted(result.missing()))
        self.ctx.changed()

    def next_wakeup(self) -> float | None:
        """Seconds until a switch that failed to answer may be asked again."""
        if not self.retry_at:
            return None
        return max(0.0, min(self.retry_at.values()) - self.ctx.clock())

    # ------------------------------------------------------------ answers
    def unknown(self, dpid: int) -> bool:
        """Not probed (yet, or since it reconnected)."""
        return dpid not in self.known

    def reason(self, dpid: int, snaplen: bool) -> str | None:
        """Why switch `dpid` cannot mirror (with truncation if `snaplen`); None when it
        can, and when it is unknown (see `unknown`)."""
        result = self.known.get(dpid)
        return None if result is None else describe(dpid, result.missing(), snaplen)


def describe(dpid: int, missing: Mapping[str, str], snaplen: bool) -> str | None:
    """Why a switch that refused `missing` (action -> its error) cannot mirror (with
    truncation if `snaplen`), or None when it can."""
    lacking = [r for r in required_actions(snaplen) if r.action in missing]
    if not lacking:
        return None
    return (f"switch {dpid_str(dpid)} lacks what the mirror needs: "
            + "; ".join(f"{r.action} ({r.why}): refused with {missing[r.action]}"
                        for r in lacking))


def lacking_reason(caps: Capabilities, dpids: Iterable[int], snaplen: bool) -> str | None:
    """Why these switches cannot mirror, from those known to lack a requirement; None when
    none is known to (a switch not probed yet is no reason to refuse a manifest)."""
    reasons = [r for r in (caps.reason(d, snaplen) for d in sorted(set(dpids))) if r]
    return "; ".join(reasons) if reasons else None


def blocking_reason(caps: Capabilities, dpids: Iterable[int], snaplen: bool) -> str | None:
    """Why an appliance on these switches is not mirrored now; None: every one of them
    is probed and able.  A lack is named first; else the switches still unknown."""
    dpids = sorted(set(dpids))
    lacking = lacking_reason(caps, dpids, snaplen)
    if lacking is not None:
        return lacking
    waiting = [dpid_str(d) for d in dpids if caps.unknown(d)]
    if waiting:
        return ("waiting for the capability probe of switch " + ", ".join(waiting)
                + " (not connected, or not answered yet)")
    return None
