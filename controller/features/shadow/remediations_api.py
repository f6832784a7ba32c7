"""Remediations over REST: ``/v1/remediations``, the blocks in force.

The runtime stores a ``shadow-remediation`` when a finding at or above an
appliance's ``min_severity`` installs a block (remediation mode ``block``),
and removes it when its TTL ends.  ``DELETE`` lifts one early: the record
goes, the lift is journaled (the audit), and the runtime, told of the
change, removes the drop.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from controller.api.context import Ctx
from controller.api.problems import problem_responses
from controller.api.revisions import ID_SCHEMA
from controller.features.shadow.document import REMEDIATION
from controller.features.shadow.records import Remediation, read, read_all
from controller.store import NotFound

RemediationId = Annotated[str, Path(description="Remediation id",
                                    json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]

router = APIRouter(prefix="/v1/remediations", tags=["remediations"],
                   responses=problem_responses(500))


@router.get("", summary="The blocks in force, newest first",
            description="Each block with its reason, its finding, its TTL and when it ends.",
            responses={200: {"model": list[Remediation]}, **problem_responses(422)})
def list_remediations(
    ctx: Ctx,
    appliance_id: Annotated[str | None, Query(description="only this appliance's")] = None,
) -> JSONResponse:
    found = [r for r in read_all(ctx.store, REMEDIATION, Remediation)
             if appliance_id is None or r.appliance_id == appliance_id]
    found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return JSONResponse([r.model_dump() for r in found])


@router.delete("/{id}", summary="Lift a block early",
               description="The block is removed from the fabric; the lift is journaled.",
               responses={200: {"model": Remediation, "description": "The lifted block"},
                          **problem_responses(404)})
def lift_remediation(id: RemediationId, ctx: Ctx) -> JSONResponse:
    with ctx.store.transaction():
        doc = ctx.store.find(REMEDIATION, id)
        if doc is None:
            raise NotFound(REMEDIATION, id)
        ctx.store.delete(REMEDIATION, id)
        ctx.store.append_event(REMEDIATION, id, "lifted", {
            "appliance_id": doc.body.get("appliance_id"), "finding_id": doc.body.get("finding_id"),
            "source": doc.body.get("source"), "by": "rest"})
    ctx.hub.documents_changed(REMEDIATION)
    lifted = read(Remediation, doc, id=id)   # a record that does not fit is lifted all the same
    return JSONResponse(lifted.model_dump() if lifted else {"id": id, **doc.body})
