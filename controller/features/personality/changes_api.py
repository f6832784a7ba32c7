"""Personality changes over REST: switch, revert, A/B apply, the operations, interface defaults.

A switch, revert or A/B apply only validates and persists: an accepted
request becomes a ``pending`` operation document
(``controller.features.personality.operations``) that locks (claims) its
interface, and ``documents_changed("operation")`` tells the coordinator on the
hub's worker to walk it through its states. A refused request (4xx) stores
nothing. Dry runs are the hub's query ``("personality", "dry_run")`` and store
nothing.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.api.bodies import Body, OptionalBody, model_body, model_schema, request_body
from controller.api.context import ApiContext, Ctx
from controller.api.crud import StoredMeta, view
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.queries import ask
from controller.api.revisions import REVISION_SCHEMA, DocId, expected_revision
from controller.api.routes_interfaces import INTERFACE_ID, InterfaceId
from controller.core import claims, interfaces
from controller.core.documents import DocumentInvalid, DocumentModel, errors_of, rule
from controller.features.personality import operations
from controller.features.personality.document import KIND
from controller.features.personality.operations import Drain, HealthCheck, SwitchRequest
from controller.store import Document, Store

INTERFACE = interfaces.KIND
OPERATION = operations.KIND


# -- request and answer models --------------------------------------------------------------

class RevertRequest(DocumentModel):
    """Optional body of ``POST /v1/interfaces/{id}/revert``."""
    drain: Drain = Field(default_factory=Drain)
    health_checks: list[HealthCheck] = Field(default_factory=list)


class Selector(DocumentModel):
    """Interfaces chosen by what they are: every field given must match."""
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    datapath: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{16}$")] | None = Field(
        default=None, description="16 hex digits, e.g. 0000000000000a01")
    personality_id: str | None = Field(default=None, description="current personality; null: none")
    category: str | None = Field(default=None, description="interfaces with this category "
                                                           "(docs/policy.md)")


class ApplyRequest(DocumentModel):
    """Body of ``POST /v1/personalities/{id}/apply``: ``interfaces`` or ``selector``."""
    model_config = ConfigDict(json_schema_extra={"anyOf": [  # one of the two, not null
        {"properties": {"interfaces": {"type": "array"}, "selector": {"type": "null"}},
         "required": ["interfaces"]},
        {"properties": {"selector": {"type": "object"}, "interfaces": {"type": "null"}},
         "required": ["selector"]}]})

    interfaces: Annotated[list[Annotated[str, Field(pattern=INTERFACE_ID)]],
                          Field(min_length=1, json_schema_extra={"uniqueItems": True})] | None = Field(
        default=None, json_schema_extra=rule("each names a stored interface"))
    selector: Selector | None = Field(
        default=None, json_schema_extra=rule("selects at least one interface"))
    drain: Drain = Field(default_factory=Drain)
    health_checks: list[HealthCheck] = Field(default_factory=list)


class Operation(StoredMeta):
    """An operation record (``controller.features.personality.operations``)."""
    interface_id: str
    kind: Literal[operations.KINDS]  # type: ignore[valid-type]
    from_personality_id: str | None
    to_personality_id: str
    drain: Drain
    health_checks: list[HealthCheck]
    state: Literal[operations.STATES]  # type: ignore[valid-type]
    connections: Any = None
    result: str | None = None
    reason: str | None = None
    log: list[dict[str, Any]]
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


class InterfaceUpdate(DocumentModel):
    """The fields an operator may set on an interface record (and the revision last read)."""
    default_personality_id: str | None = Field(default=None, json_schema_extra=rule(
        "names a stored personality"))


def _with_revision(model: type[DocumentModel]) -> dict[str, Any]:
    schema = model_schema(model)
    schema["properties"]["revision"] = REVISION_SCHEMA
    schema["required"] = [*schema.get("required", []), "revision"]
    return schema


# -- helpers ------------------------------------------------------------------------------------

def _parse(model: type[DocumentModel], body: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), what) from None


def _personality(store: Store, pid: str, field: str) -> Document:
    doc = store.find(KIND, pid)
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
    op = store.find(OPERATION, op_id)
    return op_id if op is not None and op.body.get("state") not in operations.FINAL else None


def _busy(busy: list[tuple[str, str]]) -> Problem:
    names = ", ".join(f"{i} (operation {o})" for i, o in busy)
    extra: dict[str, Any] = {"busy": [{"interface_id": i, "operation_id": o} for i, o in busy]}
    if len(busy) == 1:
        extra.update(interface_id=busy[0][0], operation_id=busy[0][1])
    return Problem(409, "Interface busy",
                   detail=f"an unfinished operation holds interface {names}; "
                          "wait for it to finish (GET /v1/operations/{id})", extra=extra)


def _create(ctx: ApiContext, interface_id: str, to: str, kind: str, drain: Drain,
            checks: list[HealthCheck]) -> Document:
    try:
        return operations.create(ctx.store, interface_id, to, kind=kind, now=time.time(),
                                 drain=drain, health_checks=checks)
    except operations.Busy as exc:
        raise _busy([(exc.interface_id, exc.operation_id)]) from None


def _accepted(ctx: ApiContext, doc: Document) -> JSONResponse:
    ctx.hub.documents_changed(OPERATION)
    return JSONResponse(view(doc), status_code=202, headers={"Location": f"/v1/operations/{doc.id}"})


def _on_active(iface: Document, pid: str) -> bool:
    b = iface.body
    return b.get("personality_id") == pid and b.get("personality_state", "active") == "active"


# -- interfaces -----------------------------------------------------------------------------------

changes = APIRouter(prefix="/v1", tags=["operations"], responses=problem_responses(500))
ACCEPTED = {202: {"model": Operation, "description": "Accepted: the operation, see Location"}}
BODY_PROBLEMS = problem_responses(400, 404, 409, 415, 422)


@changes.post("/interfaces/{id}/switch", status_code=202,
              summary="Switch an interface to a personality (or dry-run it)",
              responses={**ACCEPTED, 200: {"model": DryRun, "description": "Dry run: what the switch would do"},
                         **BODY_PROBLEMS, **problem_responses(503)},
              openapi_extra=model_body(SwitchRequest))
def switch(id: InterfaceId, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(INTERFACE, id)
    request: SwitchRequest = _parse(SwitchRequest, body, "switch request")
    personality = _personality(ctx.store, request.personality_id, "body.personality_id")
    check_targets(ctx.store, request.health_checks, personality)
    if request.dry_run:
        return JSONResponse(ask(ctx, "personality", "dry_run", interface_id=id,
                                personality_id=request.personality_id, what="dry run",
                                subject=f"personality {request.personality_id!r} for interface {id!r}",
                                field="body.personality_id"))
    return _accepted(ctx, _create(ctx, id, request.personality_id, "switch", request.drain,
                                  request.health_checks))


@changes.post("/interfaces/{id}/revert", status_code=202,
              summary="Switch an interface back to its default (last-known-good) personality",
              responses={**ACCEPTED, **BODY_PROBLEMS},
              openapi_extra=model_body(RevertRequest, required=False))
def revert(id: InterfaceId, body: OptionalBody, ctx: Ctx) -> JSONResponse:
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
    personality = ctx.store.find(KIND, target)
    if personality is None:
        raise Problem(409, "Default personality missing",
                      detail=f"the default personality {target!r} of interface {id!r} does not exist",
                      extra={"interface_id": id, "personality_id": target})
    check_targets(ctx.store, request.health_checks, personality)
    return _accepted(ctx, _create(ctx, id, target, "revert", request.drain, request.health_checks))


@changes.put("/interfaces/{id}", summary="Set an interface's default (last-known-good) personality",
             tags=["interfaces"], responses={200: {"description": "The interface record"},
                                             **BODY_PROBLEMS, **problem_responses(428)},
             openapi_extra=request_body(_with_revision(InterfaceUpdate)))
def put_interface(id: InterfaceId, body: Body, ctx: Ctx) -> JSONResponse:
    doc = ctx.store.get(INTERFACE, id)
    revision = expected_revision(body, None, required=True)
    update: InterfaceUpdate = _parse(InterfaceUpdate, body, "interface")
    pid = update.default_personality_id
    if pid is not None:
        _personality(ctx.store, pid, "body.default_personality_id")
    with ctx.store.transaction():
        body = {**doc.body, "default_personality_id": pid}
        claims.check_write(ctx.store, INTERFACE, id, body)
        new = ctx.store.update(INTERFACE, id, body, revision)
        ctx.store.append_event(INTERFACE, id, "updated",
                               {"revision": new.revision, "default_personality_id": pid})
    return JSONResponse(view(new), headers={"ETag": f'"{new.revision}"'})


@changes.get("/interfaces/{id}/history", summary="Every operation of an interface, oldest first",
             responses={200: {"model": list[HistoryEntry]}, **problem_responses(404)})
def history(id: InterfaceId, ctx: Ctx) -> list[dict[str, Any]]:
    ctx.store.get(INTERFACE, id)
    return operations.history(ctx.store, id)


# -- operations -------------------------------------------------------------------------------------

@changes.get("/operations", summary="Operations, newest first",
             responses={200: {"model": list[Operation]}, **problem_responses(422)})
def list_operations(
    ctx: Ctx,
    interface_id: Annotated[str | None, Query(description="only this interface's")] = None,
    state: Annotated[Literal[operations.STATES] | None,  # type: ignore[valid-type]
                     Query(description="only in this state")] = None,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(OPERATION)
            if (interface_id is None or d.body.get("interface_id") == interface_id)
            and (state is None or d.body.get("state") == state)]
    docs.sort(key=lambda d: (d.body.get("created_at", 0), d.created_at), reverse=True)
    return JSONResponse([view(d) for d in docs])


@changes.get("/operations/{id}", summary="One operation",
             responses={200: {"model": Operation}, **problem_responses(404)})
def get_operation(id: DocId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(view(ctx.store.get(OPERATION, id)))


# -- A/B deployment ------------------------------------------------------------------------------------

def _listed(store: Store, ids: list[str]) -> list[Document]:
    errors, docs, seen = [], [], set()
    for i, iid in enumerate(ids):
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


def _selected(store: Store, sel: Selector) -> list[Document]:
    by_personality = "personality_id" in sel.model_fields_set
    datapath = sel.datapath.lower() if sel.datapath else None
    docs = [d for d in store.list(INTERFACE)
            if (datapath is None or d.body.get("datapath") == datapath)
            and (not by_personality or d.body.get("personality_id") == sel.personality_id)
            and (sel.category is None or sel.category in (d.body.get("categories") or ()))]
    if not docs:
        raise Problem(422, "No interface selected", detail="the selector matches no interface",
                      errors=[field_error("body.selector", "matches no interface")])
    return docs


def _apply_request(body: dict[str, Any]) -> ApplyRequest:
    request: ApplyRequest = _parse(ApplyRequest, body, "apply request")
    if (request.interfaces is None) == (request.selector is None):
        reason = "give either interfaces or a selector, not both" if request.interfaces \
            else "give interfaces or a selector"
        raise Problem(422, detail="invalid apply request: body.interfaces, body.selector",
                      errors=[field_error("body.interfaces", reason), field_error("body.selector", reason)])
    if request.selector is not None and not request.selector.model_fields_set:
        raise Problem(422, detail="invalid apply request: body.selector",
                      errors=[field_error("body.selector",
                                          "needs datapath, personality_id or category")])
    return request


@changes.post("/personalities/{id}/apply", status_code=202,
              summary="Switch several interfaces to a personality (A/B deployment), all or nothing",
              responses={202: {"model": ApplyAnswer, "description": "Accepted: one operation per interface"},
                         **BODY_PROBLEMS},
              openapi_extra=model_body(ApplyRequest))
def apply(id: DocId, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(KIND, id)
    request = _apply_request(body)
    with ctx.store.transaction():  # the store lock: nothing can take an interface in between
        personality = ctx.store.get(KIND, id)
        check_targets(ctx.store, request.health_checks, personality)
        targets = (_listed(ctx.store, request.interfaces) if request.interfaces is not None
                   else _selected(ctx.store, request.selector))  # type: ignore[arg-type]
        busy = [(d.id, op) for d in targets if (op := busy_with(ctx.store, d))]
        if busy:
            raise _busy(busy)
        unchanged = [d.id for d in targets if _on_active(d, id)]
        docs = [_create(ctx, d.id, id, "apply", request.drain, request.health_checks)
                for d in targets if d.id not in unchanged]
    if docs:
        ctx.hub.documents_changed(OPERATION)
    return JSONResponse({"operations": [view(d) for d in docs], "unchanged": unchanged}, status_code=202)


