"""Findings from the agents: each stored once (``shadow-finding``), journaled and counted.

A finding's id is ``<slot>-<seq>-<index>``: the agent numbers a FINDINGS batch
once (`seq`) and sends the same numbers again in a retransmission, so a batch
taken before is not taken twice, across a hub restart too.  What is done about
it (an alert, or a block as well) is decided by `remedy` before it is stored
(``remediation.Remediations.remedy``), so the record says it.

Every finding is also an alert, in ``/v1/alerts`` beside the personas' (the
same ``alert`` documents): id ``finding:<finding id>``, kind ``shadow_finding``,
``appliance_id`` and ``finding_id`` set, ``persona_id`` null, severity
``warning`` for a low or medium finding and ``critical`` for a high or critical
one (the finding's own in ``finding_severity``), counted in
``hub_alerts_total{kind="shadow_finding"}``.  A finding is an event, so its
alert is raised once and stays until it is pruned.  An appliance keeps its
latest `KEPT` findings (and their alerts); `prune` drops older ones, and all
of a deleted appliance (journaled as cleared; the journal keeps the history).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from controller.agents.shadow import protocol as p
from controller.features.shadow.agentd import AgentMetrics
from controller.features.shadow.document import FINDING
from controller.core.alerts import KIND as ALERT, rfc3339
from controller.features.shadow.records import FiveTuple, Finding

LOG = logging.getLogger("hubshift.shadows")
ALERT_KIND = "shadow_finding"
ALERT_SEVERITY = {"low": "warning", "medium": "warning", "high": "critical",
                  "critical": "critical"}
KEPT = 1000                       # findings kept per appliance


def take(ctx, metrics: AgentMetrics, fid: str, app_id: str, instance_id: str,
         found: p.Finding, remedy: Callable[[Finding], Finding] = lambda f: f) -> Finding | None:
    """Store one finding unless it is stored already; the record, or None."""
    if ctx.store.find(FINDING, fid) is not None:
        return None                                  # a retransmission, taken before
    try:
        record = Finding(id=fid, appliance_id=app_id, instance_id=instance_id,
                         profile=found.profile, severity=found.severity,
                         five_tuple=None if found.five_tuple is None else
                         FiveTuple.model_validate(found.five_tuple.to_json()),
                         evidence={"text": found.evidence}, at=found.at, action="alert")
    except ValidationError as exc:
        LOG.warning("finding %s of %s dropped: %s", fid, app_id, exc.errors()[0].get("msg"))
        return None
    record = remedy(record)
    alert = _alert(record, found.evidence)
    with ctx.store.transaction():
        ctx.store.put(FINDING, fid, record.to_body())
        ctx.store.put(ALERT, alert_id(fid), alert)
    ctx.journal("shadow", app_id, f"{record.severity} finding of {record.profile}: "
                f"{found.evidence[:200]}", finding_id=fid, instance_id=instance_id,
                profile=record.profile, severity=record.severity, action=record.action,
                remediation_id=record.remediation_id,
                five_tuple=None if record.five_tuple is None else record.five_tuple.model_dump())
    ctx.journal(ALERT, app_id, f"{alert['severity']} {ALERT_KIND}: {alert['message']}",
                state="raised", alert_kind=ALERT_KIND, severity=alert["severity"],
                appliance_id=app_id, finding_id=fid, at=alert["at"])
    metrics.findings.labels(app_id, record.profile, record.severity).inc()
    ctx.metrics.alerts.labels(ALERT_KIND, alert["severity"]).inc()
    return record


def alert_id(finding_id: str) -> str:
    return f"finding:{finding_id}"


def _alert(record: Finding, evidence: str) -> dict:
    return {"kind": ALERT_KIND, "severity": ALERT_SEVERITY[record.severity],
            "subject": record.appliance_id, "persona_id": None,
            "appliance_id": record.appliance_id, "finding_id": record.id,
            "finding_severity": record.severity, "profile": record.profile,
            "message": f"{record.profile}: {evidence[:200]}", "value": None, "threshold": None,
            "at": rfc3339(record.at), "cleared_at": None}


def prune(ctx, appliance_ids: set[str], now: float) -> int:
    """Drop the findings (and alerts) of deleted appliances, clearing their active alerts
    first, and all but the latest `KEPT` of each appliance; how many went."""
    by_app: dict[str, list] = {}
    for doc in ctx.store.list(FINDING):
        by_app.setdefault(str(doc.body.get("appliance_id")), []).append(doc)
    gone = []
    for app_id, docs in by_app.items():
        docs.sort(key=lambda d: (d.body.get("at") or 0, d.id))
        gone += docs if app_id not in appliance_ids else docs[:-KEPT]
    if not gone:
        return 0
    with ctx.store.transaction():
        for doc in gone:
            ctx.store.delete(FINDING, doc.id)
            if ctx.store.find(ALERT, alert_id(doc.id)) is not None:
                ctx.store.delete(ALERT, alert_id(doc.id))
    for app_id in sorted({str(d.body.get("appliance_id")) for d in gone} - appliance_ids):
        ctx.journal(ALERT, app_id, f"cleared {ALERT_KIND}: appliance deleted", state="cleared",
                    alert_kind=ALERT_KIND, appliance_id=app_id, at=rfc3339(now))
    return len(gone)
