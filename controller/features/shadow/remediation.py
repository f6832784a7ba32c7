"""Remediation: a finding blocks its source toward the appliance, for a while.

When a finding is taken (``findings.take``) for an appliance whose manifest's
``remediation.mode`` is ``block``, the finding names a source (its 5-tuple's
``src``, the client) and its severity is at or above ``remediation.min_severity``
(low < medium < high < critical), a ``shadow-remediation`` record is stored: the
block, whose id is the finding's.  The mirror compiler installs, for every
block in force, a drop of that source toward the production interfaces
(``mirror._blocks``), under a cookie naming the finding (`block_cookie`).
Otherwise the finding is an alert only.

* One block per (appliance, source) at a time: a later finding for a source
  already blocked extends nothing (the TTL the audit announced holds); the
  finding is recorded as covered by that block (action ``block``, its
  ``remediation_id``).
* A block ends when its ``expires_at`` passes (`Remediations.expire`, from the
  feature's tick), when it is lifted over REST (the record deleted, then
  ``documents_changed``: `Remediations.sync`), or when its appliance's
  manifest is deleted.  A manifest changed to ``alert`` keeps the blocks in
  force until they end.
* Everything is journaled under the kind ``shadow-remediation`` with the
  block's id as the subject, beside the REST lift's entry: the audit.

The records are the state: a restarted hub compiles the blocks it finds, and
removes at its first tick those whose time passed meanwhile.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from controller.features.shadow.document import REMEDIATION, SEVERITIES, Appliance
from controller.features.shadow.mirror_net import Block
from controller.features.shadow.records import Finding, Remediation
from controller.pipeline import cookies
from controller.store import Store

LOG = logging.getLogger("hubshift.shadows")
RANK = {severity: n for n, severity in enumerate(SEVERITIES)}
BLOCK, ALERT, ALREADY_BLOCKED, EXPIRED, LIFTED = ("block", "alert", "already_blocked",
                                                   "expired", "lifted")
ACTIONS = (BLOCK, ALERT, ALREADY_BLOCKED, EXPIRED, LIFTED)


def block_cookie(finding_id: str) -> int:
    """The cookie of a block's drops: it names the finding that caused it."""
    return cookies.make(cookies.Feature.SHADOW, f"block:{finding_id}")


def at_or_above(severity: str, minimum: str) -> bool:
    return RANK[severity] >= RANK[minimum]


def stored(store: Store) -> dict[str, Remediation]:
    """Every block the store holds, by id (one that does not fit is logged and left out)."""
    out = {}
    for doc in store.list(REMEDIATION):
        try:
            out[doc.id] = Remediation.from_doc(doc)
        except ValidationError as exc:
            LOG.error("ignoring remediation %s that does not fit its record: %s", doc.id,
                      exc.errors()[0].get("msg"))
    return out


def blocks_by_appliance(store: Store) -> dict[str, tuple[Block, ...]]:
    """What the mirror compiler drops: each appliance's blocks in force, by source."""
    out: dict[str, list[Block]] = {}
    for r in stored(store).values():
        out.setdefault(r.appliance_id, []).append(Block(r.source, block_cookie(r.finding_id)))
    return {aid: tuple(sorted(blocks, key=lambda b: b.source_ip))
            for aid, blocks in out.items()}


class RemediationMetrics(NamedTuple):
    blocks: Gauge
    remediations: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> RemediationMetrics:
        return cls(Gauge("hub_shadow_blocks", "Blocks in force, by appliance", ["appliance"],
                         registry=registry),
                   Counter("hub_shadow_remediations", "What remediation did, by appliance: a "
                           "block installed, an alert only, a finding on a source already "
                           "blocked, a block expired or lifted", ["appliance", "action"],
                           registry=registry))


class Remediations:
    """The blocks in force (the store's records), kept on the worker."""

    def __init__(self, ctx, manifest_of: Callable[[str], Appliance | None]) -> None:
        self.ctx, self.manifest_of = ctx, manifest_of
        self.metrics = RemediationMetrics.on(ctx.registry)
        self.known: dict[str, Remediation] = {}
        self.shown: set[str] = set()               # appliances with a gauge value

    def remedy(self, finding: Finding) -> Finding:
        """The finding as it is to be stored: with action ``block`` (and the block stored,
        journaled, compiled) when its manifest asks for it, else ``alert``."""
        app = self.manifest_of(finding.appliance_id)
        policy = app.remediation if app is not None else None
        source = finding.five_tuple.src if finding.five_tuple is not None else None
        if (policy is None or policy.mode != "block" or source is None
                or not at_or_above(finding.severity, policy.min_severity)):
            self._count(finding.appliance_id, ALERT)
            return finding.model_copy(update={"action": "alert", "remediation_id": None})
        held = next((r for r in self.known.values()
                     if (r.appliance_id, r.source) == (finding.appliance_id, source)), None)
        if held is not None:
            self.ctx.journal(REMEDIATION, held.id, f"{source} already blocked toward "
                             f"{finding.appliance_id}: finding {finding.id} extends nothing",
                             appliance_id=finding.appliance_id, source=source,
                             finding_id=finding.id, expires_at=held.expires_at)
            self._count(finding.appliance_id, ALREADY_BLOCKED)
            return finding.model_copy(update={"action": "block", "remediation_id": held.id})
        block = self._install(finding, source, policy.ttl)
        return finding.model_copy(update={"action": "block", "remediation_id": block.id})

    def _install(self, finding: Finding, source: str, ttl: int) -> Remediation:
        now = self.ctx.wallclock()
        evidence = str(finding.evidence.get("text", "")) or finding.profile
        block = Remediation(id=finding.id, appliance_id=finding.appliance_id,
                            finding_id=finding.id, source=source,
                            reason=f"{finding.severity} finding of {finding.profile}: "
                                   f"{evidence[:160]}",
                            severity=finding.severity, ttl=int(ttl), created_at=now,
                            expires_at=now + ttl)
        self.ctx.store.put(REMEDIATION, block.id, block.to_body())
        self.known[block.id] = block
        self.ctx.journal(REMEDIATION, block.id, f"blocked {source} toward {block.appliance_id} "
                         f"for {block.ttl} s: finding {finding.id} ({block.reason})",
                         appliance_id=block.appliance_id, source=source, finding_id=finding.id,
                         severity=block.severity, ttl=block.ttl, expires_at=block.expires_at,
                         cookie=block_cookie(finding.id))
        self._count(block.appliance_id, BLOCK)
        self.publish()
        self.ctx.changed()
        return block

    # ------------------------------------------------------------ ending
    def expire(self) -> None:
        """Remove the blocks whose time is over."""
        now = self.ctx.wallclock()
        for r in sorted(self.known.values(), key=lambda r: r.id):
            if r.expires_at <= now:
                self._remove(r, EXPIRED, "TTL over")

    def sync(self, appliance_ids: set[str]) -> None:
        """The store may have changed (a lift over REST, journaled there), or manifests
        were deleted (their blocks go): take what it holds now."""
        now = stored(self.ctx.store)
        for rid in sorted(set(self.known) - set(now)):
            gone = self.known.pop(rid)
            self._count(gone.appliance_id, LIFTED)
            LOG.info("block of %s toward %s lifted", gone.source, gone.appliance_id)
            self.ctx.changed()
        for rid in sorted(set(now) - set(self.known)):
            self.known[rid] = now[rid]             # loaded (a restart), or another writer's
            self.ctx.changed()
        for r in sorted(self.known.values(), key=lambda r: r.id):
            if r.appliance_id not in appliance_ids:
                self._remove(r, LIFTED, "appliance deleted")
        self.publish()

    def _remove(self, r: Remediation, action: str, why: str) -> None:
        self.known.pop(r.id, None)
        if self.ctx.store.find(REMEDIATION, r.id) is not None:
            self.ctx.store.delete(REMEDIATION, r.id)
        self.ctx.journal(REMEDIATION, r.id, f"block of {r.source} lifted: {why}",
                         appliance_id=r.appliance_id, source=r.source, finding_id=r.finding_id,
                         by="hub")
        self._count(r.appliance_id, action)
        self.publish()
        self.ctx.changed()

    # ------------------------------------------------------------ reads
    def next_wakeup(self) -> float | None:
        """Seconds until the next block ends (wall-clock time, as stored)."""
        if not self.known:
            return None
        return max(0.0, min(r.expires_at for r in self.known.values()) - self.ctx.wallclock())

    def publish(self) -> None:
        counts: dict[str, int] = {}
        for r in self.known.values():
            counts[r.appliance_id] = counts.get(r.appliance_id, 0) + 1
        for aid in sorted(self.shown | set(counts)):
            self.metrics.blocks.labels(aid).set(counts.get(aid, 0))
        self.shown |= set(counts)

    def _count(self, appliance_id: str, action: str) -> None:
        self.metrics.remediations.labels(appliance_id, action).inc()
