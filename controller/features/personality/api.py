"""Personality operations: switch, revert, A/B apply, and the operation records.

The API only validates, persists and notifies: an accepted request becomes a
``pending`` operation document (``controller.features.personality.operations``), locks its
interface, and ``hub.operations_changed()`` tells the coordinator on the hub's
worker thread to walk it through its states.  A refused request (4xx) stores
nothing.  Dry runs are answered by the hub and store nothing either.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from controller.core.documents import DocumentInvalid
from controller.core.documents import DocumentModel, errors_of, fail
from controller.features.personality import operations
from controller.features.persona import store as persona_store
from controller.features.personality.operations import Drain, HealthCheck, SwitchRequest
from controller.store import Document, Store

from controller.api.context import ApiContext, Ctx
from controller.api.problems import Problem, field_error, problem_responses, read_document_body
from controller.api.routes_documents import _inline

INTERFACE, PERSONALITY = "interface", "personality"


async def read_optional_body(request: Request) -> dict[str, Any]:
    """Like ``read_document_body``, but an empty body is an empty object."""
    if not (await request.body()).strip():
        return {}
    return await read_document_body(request)


Body = Annotated[dict[str, Any], Depends(read_document_body)]
OptionalBody = Annotated[dict[str, Any], Depends(read_optional_body)]

router = APIRouter(prefix="/v1", tags=["operations"],
                   responses=problem_responses(400, 404, 409, 415, 422, 500))


# -- request and response models (documentation; bodies are parsed by hand) ---------

class RevertRequest(DocumentModel):
    """Optional body of ``POST /v1/interfaces/{id}/revert``."""
    drain: Drain = Field(default_factory=Drain)
    health_checks: list[HealthCheck] = Field(default_factory=list)


_DPID = re.compile(r"[0-9a-f]{16}")


class Selector(DocumentModel):
    """Interfaces chosen by what they are: every field given must match."""
    datapath: str | None = Field(default=None, description="16 hex digits, e.g. 0000000000000a01")
    personality_id: str | None = Field(default=None, description="current personality; null: none")

    @field_validator("datapath")
    @classmethod
    def _dpid(cls, value: str | None) -> str | None:
        if value is not None and not _DPID.fullmatch(value.lower()):
            fail(f"{value!r} is not a datapath id (16 hex digits, such as 0000000000000a01)")
        return None if value is None else value.lower()


class ApplyRequest(DocumentModel):
    """Body of ``POST /v1/personalities/{id}/apply``: ``interfaces`` or ``selector``."""
    interfaces: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    selector: Selector | None = None
    drain: Drain = Field(default_factory=Drain)
    health_checks: list[HealthCheck] = Field(default_factory=list)


class Operation(BaseModel):
    """An operation record (``controller.features.personality.operations``)."""
    id: str = Field(examples=["op-3f2a9c0d1b7e"])
    revision: int
    interface_id: str
    kind: Literal[operations.KINDS]
    from_personality_id: str | None
    to_personality_id: str
    drain: Drain
    health_checks: list[HealthCheck]
    state: Literal[operations.STATES]
    connections: Any = None
    result: str | None = None
    reason: str | None = None
    log: list[dict[str, Any]]
    created_at: float
    finished_at: float | None = None


class DryRun(BaseModel):
    interface_id: str
    from_personality_id: str | None
    to_personality_id: str
    flows: dict[str, list[str]] = Field(description='{"add": [...], "delete": [...]}')
    connections: list[dict[str, Any]]
    would_cut: int


class HistoryEntry(BaseModel):
    operation: str
    kind: str
    at: float
    finished_at: float | None
    from_: str | None = Field(alias="from")
    to: str
    state: str
    result: str | None
    reason: str | None


class ApplyAnswer(BaseModel):
    operations: list[Operation]
    unchanged: list[str] = Field(description="selected interfaces already on the personality")


def _body_schema(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": schema}, "application/yaml": {"schema": schema}}}}


# -- helpers ------------------------------------------------------------------------

def _invalid(exc: DocumentInvalid, what: str) -> Problem:
    fields = ", ".join(dict.fromkeys(e["field"] for e in exc.errors))
    return Problem(422, detail=f"invalid {what}: {fields}", errors=exc.errors)


def _parse_switch(body: dict[str, Any]) -> SwitchRequest:
    try:
        return operations.parse_switch_request(body)
    except DocumentInvalid as exc:
        raise _invalid(exc, "switch request") from None


def _parse(model: type[DocumentModel], body: dict[str, Any], what: str) -> Any:
    """Validate ``body`` as ``model``, then its drain and health checks as a switch's."""
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(DocumentInvalid(errors_of(exc), what), what) from None
    options = {k: body[k] for k in ("drain", "health_checks") if k in body}
    try:  # the same per-check rules as a switch request (targets, ports)
        operations.parse_switch_request({"personality_id": "-", **options})
    except DocumentInvalid as exc:
        raise _invalid(exc, what) from None
    return parsed


def _personality(store: Store, pid: str, field: str) -> Document:
    doc = store.find(PERSONALITY, pid)
    if doc is None:
        raise Problem(422, "Unknown personality", detail=f"no personality with id {pid!r}",
                      errors=[field_error(field, f"no personality with id {pid!r}")])
    return doc


def check_targets(store: Store, checks: list[HealthCheck], personality: Document) -> None:
    """422 for a gateway or dns check left without target the personality cannot fill in."""
    errors = []
    body = personality.body
    for i, check in enumerate(checks):
        if check.target is not None:
            continue
        field = f"body.health_checks[{i}].target"
        if check.type == "gateway":
            sid = body.get("subnet_id")
            if sid is None:
                errors.append(field_error(field, f"personality {personality.id!r} has no subnet, so "
                                          "there is no gateway to check; give a target"))
            elif store.find("subnet", sid) is None:
                errors.append(field_error(field, f"the subnet {sid!r} of personality "
                                          f"{personality.id!r} does not exist; give a target"))
        elif check.type == "dns" and not body.get("dns_servers"):
            errors.append(field_error(field, f"personality {personality.id!r} has no dns_servers; "
                                      "give a target"))
    if errors:
        raise Problem(422, detail="invalid health checks: " + ", ".join(e["field"] for e in errors),
                      errors=errors)


def busy_with(store: Store, iface: Document) -> str | None:
    """The unfinished operation locking ``iface``, if any."""
    op_id = iface.body.get("operation_id")
    if not op_id:
        return None
    op = store.find(operations.KIND, op_id)
    return op_id if op is not None and op.body.get("state") not in operations.FINAL else None


def _busy(busy: list[tuple[str, str]]) -> Problem:
    names = ", ".join(f"{i} (operation {o})" for i, o in busy)
    extra: dict[str, Any] = {"busy": [{"interface_id": i, "operation_id": o} for i, o in busy]}
    if len(busy) == 1:
        extra.update(interface_id=busy[0][0], operation_id=busy[0][1])
    return Problem(409, "Interface busy",
                   detail=f"an unfinished operation holds interface {names}; "
                          "wait for it to finish (GET /v1/operations/{id})", extra=extra)


def _not_in_persona(store: Store, interface_ids: list[str]) -> None:
    """An interface attached to a persona takes its behavior from the persona."""
    for iid in interface_ids:
        persona = persona_store.attached_to(store, iid)
        if persona is not None:
            raise Problem(409, "Interface in a persona",
                          detail=f"interface {iid} is attached to persona {persona!r}; detach "
                                 f"it first (DELETE /v1/personas/{persona}/attachments/{iid})",
                          extra={"interface_id": iid, "persona_id": persona})


def _create(ctx: ApiContext, interface_id: str, to: str, kind: str, drain: Drain,
            checks: list[HealthCheck], reason: str | None = None) -> Document:
    try:
        return operations.create(ctx.store, interface_id, to, kind=kind, now=time.time(),
                                 drain=drain, health_checks=checks, reason=reason)
    except operations.Busy as exc:
        raise _busy([(exc.interface_id, exc.operation_id)]) from None


def _accepted(doc: Document) -> JSONResponse:
    return JSONResponse(operations.view(doc), status_code=202,
                        headers={"Location": f"/v1/operations/{doc.id}"})


def _on_active(iface: Document, pid: str) -> bool:
    b = iface.body
    return b.get("personality_id") == pid and b.get("personality_state", "active") == "active"


def _dry_run(ctx: ApiContext, interface_id: str, personality_id: str) -> dict[str, Any]:
    try:
        return ctx.hub.dry_run_switch(interface_id, personality_id)
    except TimeoutError:
        raise Problem(503, detail="the hub did not answer the dry run in time",
                      headers={"Retry-After": "1"}) from None
    except LookupError as exc:
        raise Problem(404, detail=str(exc).strip("'\"") or "unknown interface or personality") from None
    except ValueError as exc:
        raise Problem(422, "Cannot compile",
                      detail=f"personality {personality_id!r} cannot be compiled for "
                             f"interface {interface_id!r}: {exc}",
                      errors=[field_error("body.personality_id", str(exc) or "cannot be compiled")]
                      ) from None


# -- interfaces -------------------------------------------------------------------------

@router.post("/interfaces/{id}/switch", status_code=202,
             summary="Switch an interface to a personality (or dry-run it)",
             responses={202: {"model": Operation, "description": "Accepted: the operation, see Location"},
                        200: {"model": DryRun, "description": "Dry run: what the switch would do"},
                        **problem_responses(503)},
             openapi_extra=_body_schema(SwitchRequest))
def switch(id: str, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(INTERFACE, id)
    _not_in_persona(ctx.store, [id])
    request = _parse_switch(body)
    personality = _personality(ctx.store, request.personality_id, "body.personality_id")
    check_targets(ctx.store, request.health_checks, personality)
    if request.dry_run:
        return JSONResponse(_dry_run(ctx, id, request.personality_id))
    doc = _create(ctx, id, request.personality_id, "switch", request.drain, request.health_checks)
    ctx.hub.operations_changed()
    return _accepted(doc)


@router.post("/interfaces/{id}/revert", status_code=202,
             summary="Switch an interface back to its default (last-known-good) personality",
             responses={202: {"model": Operation, "description": "Accepted: the operation, see Location"}},
             openapi_extra=_body_schema(RevertRequest, required=False))
def revert(id: str, body: OptionalBody, ctx: Ctx) -> JSONResponse:
    iface = ctx.store.get(INTERFACE, id)
    request: RevertRequest = _parse(RevertRequest, body, "revert request")
    target = iface.body.get("default_personality_id")
    if target is None:
        raise Problem(409, "No default personality",
                      detail=f"interface {id!r} has no default personality to revert to; set one "
                             f"with PUT /v1/interfaces/{id}", extra={"interface_id": id})
    if _on_active(iface, target):
        raise Problem(409, "Already on the default personality",
                      detail=f"interface {id!r} already runs its default personality {target!r}",
                      extra={"interface_id": id, "personality_id": target})
    personality = ctx.store.find(PERSONALITY, target)
    if personality is None:
        raise Problem(409, "Default personality missing",
                      detail=f"the default personality {target!r} of interface {id!r} does not exist",
                      extra={"interface_id": id, "personality_id": target})
    check_targets(ctx.store, request.health_checks, personality)
    doc = _create(ctx, id, target, "revert", request.drain, request.health_checks)
    ctx.hub.operations_changed()
    return _accepted(doc)


@router.get("/interfaces/{id}/history", summary="Every operation of an interface, oldest first",
            responses={200: {"model": list[HistoryEntry]}})
def history(id: str, ctx: Ctx) -> list[dict[str, Any]]:
    ctx.store.get(INTERFACE, id)
    return operations.history(ctx.store, id)


# -- operations ---------------------------------------------------------------------------

@router.get("/operations", summary="Operations, newest first",
            responses={200: {"model": list[Operation]}})
def list_operations(
    ctx: Ctx,
    interface_id: Annotated[str | None, Query(description="only this interface's")] = None,
    state: Annotated[Literal[operations.STATES] | None, Query(description="only in this state")] = None,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(operations.KIND)
            if (interface_id is None or d.body.get("interface_id") == interface_id)
            and (state is None or d.body.get("state") == state)]
    docs.sort(key=lambda d: (d.body.get("created_at", 0), d.created_at), reverse=True)
    return JSONResponse([operations.view(d) for d in docs])


@router.get("/operations/{id}", summary="One operation", responses={200: {"model": Operation}})
def get_operation(id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(operations.view(ctx.store.get(operations.KIND, id)))


# -- A/B deployment -------------------------------------------------------------------------

def _selected(store: Store, request: ApplyRequest) -> list[Document]:
    """The interfaces an apply request names (422 for unknown or repeated ones)."""
    if request.interfaces is not None:
        errors, docs, seen = [], [], set()
        for i, iid in enumerate(request.interfaces):
            doc = store.find(INTERFACE, iid)
            if iid in seen:
                errors.append(field_error(f"body.interfaces[{i}]", f"{iid!r} is listed twice"))
            elif doc is None:
                errors.append(field_error(f"body.interfaces[{i}]", f"no interface with id {iid!r}"))
            else:
                docs.append(doc)
            seen.add(iid)
        if errors:
            raise Problem(422, "Unknown interfaces",
                          detail="invalid apply request: " + ", ".join(e["field"] for e in errors),
                          errors=errors)
        return docs
    sel = request.selector
    assert sel is not None
    by_personality = "personality_id" in sel.model_fields_set
    docs = [d for d in store.list(INTERFACE)
            if (sel.datapath is None or d.body.get("datapath") == sel.datapath)
            and (not by_personality or d.body.get("personality_id") == sel.personality_id)]
    if not docs:
        raise Problem(422, "No interface selected", detail="the selector matches no interface",
                      errors=[field_error("body.selector", "matches no interface")])
    return docs


@router.post("/personalities/{id}/apply", status_code=202,
             summary="Switch several interfaces to a personality (A/B deployment), all or nothing",
             responses={202: {"model": ApplyAnswer, "description": "Accepted: one operation per interface"}},
             openapi_extra=_body_schema(ApplyRequest))
def apply(id: str, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(PERSONALITY, id)
    request: ApplyRequest = _parse(ApplyRequest, body, "apply request")
    if (request.interfaces is None) == (request.selector is None):
        reason = "give either interfaces or a selector, not both" if request.interfaces \
            else "give interfaces or a selector"
        raise Problem(422, detail="invalid apply request: body.interfaces, body.selector",
                      errors=[field_error("body.interfaces", reason), field_error("body.selector", reason)])
    if request.selector is not None and not request.selector.model_fields_set:
        raise Problem(422, detail="invalid apply request: body.selector",
                      errors=[field_error("body.selector", "needs datapath or personality_id")])
    with ctx.store.transaction():  # the store lock: nothing can take an interface in between
        personality = ctx.store.get(PERSONALITY, id)
        check_targets(ctx.store, request.health_checks, personality)
        targets = _selected(ctx.store, request)
        _not_in_persona(ctx.store, [d.id for d in targets])
        busy = [(d.id, op) for d in targets if (op := busy_with(ctx.store, d))]
        if busy:
            raise _busy(busy)
        unchanged = [d.id for d in targets if _on_active(d, id)]
        docs = [_create(ctx, d.id, id, "apply", request.drain, request.health_checks)
                for d in targets if d.id not in unchanged]
    if docs:
        ctx.hub.operations_changed()
    return JSONResponse({"operations": [operations.view(d) for d in docs], "unchanged": unchanged},
                        status_code=202)
