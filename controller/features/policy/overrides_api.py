"""Policy overrides over REST: ``/v1/interfaces/{id}/policy-overrides``.

An override is one rule for one interface alone (kind `rules.OVERRIDE`):
``{interface_id, action, direction, protocol, port, peer, reason, created_at}``;
the runtime puts an interface's overrides before its mirrored policy, and its
effective policy names them (origin ``override``).

* ``POST`` adds one (201; the id ``ov-<n>``, n from a counter in the store's meta);
* ``GET`` lists the interface's, oldest first;
* ``DELETE .../{oid}`` removes one (404 when it is not that interface's).

Refused: an unknown interface (404), a port outside 1-65535 or with a protocol
without ports (``body.port``), a peer that is not ``kind:name`` or an address
peer that is not IPv4 (``body.peer``), an action other than allow or deny
(``body.action``).  Each write is journaled, announced as
``documents_changed(rules.OVERRIDE)`` and recorded in the audit trail.
"""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.crud import view
from controller.api.problems import problem_responses
from controller.api.revisions import ID_SCHEMA
from controller.api.routes_interfaces import InterfaceId
from controller.core.documents import DocumentInvalid, errors_of
from controller.features.policy import audit
from controller.features.policy.document import OverrideRequest, OverrideView
from controller.features.policy.rules import OVERRIDE
from controller.store import Document, NotFound

PATH = "/v1/interfaces/{id}/policy-overrides"
SEQ_KEY = "policy.override.seq"
ACTOR = "rest"

OverrideId = Annotated[str, Path(description="Override id, e.g. ov-1",
                                 json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


def of_interface(ctx: ApiContext, interface_id: str) -> list[Document]:
    docs = [d for d in ctx.store.list(OVERRIDE) if d.body.get("interface_id") == interface_id]
    return sorted(docs, key=lambda d: (d.created_at, d.id))


def add(ctx: ApiContext, interface_id: str, body: dict[str, Any]) -> Document:
    """Store one override (with its journal and audit entries); 404, 422 as documented."""
    try:
        request = OverrideRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), OVERRIDE) from None
    now = time.time()
    with ctx.store.transaction():
        ctx.store.get("interface", interface_id)
        n = int(ctx.store.get_meta(SEQ_KEY) or 0) + 1
        while ctx.store.find(OVERRIDE, f"ov-{n}") is not None:
            n += 1
        ctx.store.set_meta(SEQ_KEY, str(n))
        doc = ctx.store.create(OVERRIDE, f"ov-{n}", {
            "interface_id": interface_id, **request.model_dump(mode="json"), "created_at": now})
        ctx.store.append_event(OVERRIDE, doc.id, "created", {"interface_id": interface_id})
        audit.record(ctx.store, ACTOR, f"{OVERRIDE}.created", request.reason, None, view(doc),
                     now, subject=doc.id)
    ctx.hub.documents_changed(OVERRIDE)
    return doc


def remove(ctx: ApiContext, interface_id: str, oid: str) -> Document:
    with ctx.store.transaction():
        doc = ctx.store.get(OVERRIDE, oid)
        if doc.body.get("interface_id") != interface_id:
            raise NotFound(OVERRIDE, oid)
        ctx.store.delete(OVERRIDE, oid)
        ctx.store.append_event(OVERRIDE, oid, "deleted", {"interface_id": interface_id})
        audit.record(ctx.store, ACTOR, f"{OVERRIDE}.deleted", None, view(doc), None,
                     time.time(), subject=oid)
    ctx.hub.documents_changed(OVERRIDE)
    return doc


router = APIRouter(prefix=PATH, tags=["policy overrides"], responses=problem_responses(500))


@router.post("", status_code=201, summary="Add a policy override to one interface",
             description="One rule for this interface alone, before its mirrored policy "
                         "(origin override in its effective policy). 404 for an unknown "
                         "interface; 422 naming the field for a bad port, peer or action.",
             responses={201: {"model": OverrideView, "description": "Created"},
                        **problem_responses(400, 404, 415, 422)},
             openapi_extra=model_body(OverrideRequest))
def add_override(id: InterfaceId, body: Body, ctx: Ctx) -> JSONResponse:
    doc = add(ctx, id, body)
    return JSONResponse(view(doc), status_code=201,
                        headers={"Location": f"{PATH.format(id=id)}/{doc.id}",
                                 "ETag": f'"{doc.revision}"'})


@router.get("", summary="An interface's policy overrides, oldest first",
            responses={200: {"model": list[OverrideView]}, **problem_responses(404)})
def list_overrides(id: InterfaceId, ctx: Ctx) -> JSONResponse:
    ctx.store.get("interface", id)
    return JSONResponse([view(d) for d in of_interface(ctx, id)])


@router.delete("/{oid}", summary="Remove a policy override",
               responses={200: {"model": OverrideView, "description": "The removed override"},
                          **problem_responses(404)})
def delete_override(id: InterfaceId, oid: OverrideId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(view(remove(ctx, id, oid)))
