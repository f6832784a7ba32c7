"""Findings from the agents: each stored once (``shadow-finding``), journaled and counted.

A finding's id is ``<slot>-<seq>-<index>``: the agent numbers a FINDINGS batch
once (`seq`) and sends the same numbers again in a retransmission, so a batch
taken before is not taken twice, across a hub restart too.  What is done about
it (an alert, or a block as well) is decided by `remedy` before it is stored
(``remediation.Remediations.remedy``), so the record says it.  Alerts in
``/v1/alerts`` are the persona feature's (per persona and condition) and are
not raised here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from controller.agents.shadow import protocol as p
from controller.features.shadow.agentd import AgentMetrics
from controller.features.shadow.document import FINDING
from controller.features.shadow.records import FiveTuple, Finding

LOG = logging.getLogger("hubshift.shadows")


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
    ctx.store.put(FINDING, fid, record.to_body())
    ctx.journal("shadow", app_id, f"{record.severity} finding of {record.profile}: "
                f"{found.evidence[:200]}", finding_id=fid, instance_id=instance_id,
                profile=record.profile, severity=record.severity, action=record.action,
                remediation_id=record.remediation_id,
                five_tuple=None if record.five_tuple is None else record.five_tuple.model_dump())
    metrics.findings.labels(app_id, record.profile, record.severity).inc()
    return record
