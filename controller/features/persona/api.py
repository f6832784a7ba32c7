"""Personas over REST: the records, their attachments, usage, and alerts.

The routes validate and persist through ``controller.features.persona.store``
(one transaction per write, journaled there) and then call
``hub.personas_changed()`` so the runtime re-reads the records; a refused
request (4xx) stores nothing. ``POST /v1/personas?dry_run=true`` plans the
persona exactly as a create would and asks the hub what it would install.

A persona is answered flat: ``{id, revision, created_at, updated_at}`` plus
the record body (``document``, ``index``, ``gateway``, ``nat``,
``attachments``, ``expires_at``, ``state``, ``expired_at``).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from controller.core.documents import DocumentInvalid, DocumentModel, errors_of
from controller.features.persona.document import Persona, parse_expiration, parse_persona
from controller.features.persona import store as personas
from controller.features.persona.store import PersonaConflict
from controller.store import Document, NotFound, Store
from controller.core.topology import Subnet

from controller.api.context import ApiContext, Ctx
from controller.api.problems import Problem, field_error, problem_responses, read_document_body
from controller.api.routes_documents import IfMatch, _expected_revision, _inline, _path_id, _take_id

ALERT = "alert"
MERGE_PATCH = "application/merge-patch+json"

router = APIRouter(prefix="/v1", tags=["personas"], responses=problem_responses(404, 422, 500))


async def read_patch_body(request: Request) -> dict[str, Any]:
    """A merge patch: ``application/merge-patch+json``, or JSON/YAML like any document."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != MERGE_PATCH:
        return await read_document_body(request)
    try:
        doc = json.loads((await request.body()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, detail=f"malformed merge patch: {exc}") from None
    if not isinstance(doc, dict):
        raise Problem(400, detail=f"a merge patch must be an object, not {type(doc).__name__}")
    return doc


Body = Annotated[dict[str, Any], Depends(read_document_body)]
PatchBody = Annotated[dict[str, Any], Depends(read_patch_body)]


# -- documentation models (answers are built from the store) ----------------------------

class NatMapping(BaseModel):
    hub_range: str = Field(description="The block the hub sees the persona at", examples=["100.64.0.0/24"])


class AttachmentBody(BaseModel):
    interface_id: str = Field(examples=["0000000000000a01:3"])
    ip: str = Field(examples=["10.100.0.2"])
    mac: str | None


class StoredPersona(BaseModel):
    id: str = Field(examples=["tempdevnetwork"])
    revision: int
    created_at: float
    updated_at: float
    document: Persona = Field(description="The normalized document (with computed values)")
    index: int | None = Field(description="1..32767 while active: conntrack zone 32768+index, meters")
    gateway: str = Field(examples=["10.100.0.1"])
    nat: NatMapping | None
    attachments: list[AttachmentBody]
    expires_at: float
    state: Literal[personas.STATES]
    expired_at: float | None


class Remapped(BaseModel):
    persona_id: str
    hub_range: str


class CreatedPersona(StoredPersona):
    remapped: list[Remapped] = Field(description="Live personas given a NAT block by this one")


class PersonaPreview(BaseModel):
    id: str
    record: dict[str, Any] = Field(description="The record body a create would store")
    remapped: list[Remapped]
    flows: dict[str, list[str]] = Field(description="Rendered flows per datapath")
    meters: list[Any]


class AttachRequest(DocumentModel):
    """Body of ``POST /v1/personas/{id}/attachments``."""
    interface_id: Annotated[str, Field(min_length=1)] = Field(examples=["0000000000000a01:3"])
    ip: str | None = Field(default=None, description="Address in the range; the lowest free one if left out")


class AttachmentView(BaseModel):
    persona_id: str
    interface_id: str
    ip: str
    mac: str | None
    gateway: str
    prefix_length: int
    hub_ip: str = Field(description="The address the hub reaches it at (its NAT twin, or itself)")


class InOut(BaseModel):
    model_config = {"populate_by_name": True}
    in_: float = Field(alias="in")
    out: float


class Usage(BaseModel):
    persona_id: str
    state: Literal[personas.STATES]
    bytes: InOut
    packets: InOut
    connections: int
    denied: int
    rate_bps: InOut
    updated_at: float | None
    latency_ms: float | None = Field(default=None, description="Measured gateway-to-host round trip")


class Alert(BaseModel):
    id: str
    kind: str = Field(examples=["bandwidth", "bytes", "security_events", "latency", "expiry_warning"])
    severity: str = Field(examples=["warning"])
    subject: str
    persona_id: str | None
    message: str
    value: Any = None
    threshold: Any = None
    at: float | str = Field(description="When it was raised (RFC 3339, or Unix time)")
    cleared_at: float | str | None = Field(default=None, description="When the condition went away")


def _body_schema(model: type[BaseModel], extra: dict[str, Any] | None = None,
                 patch: bool = False) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())
    schema.setdefault("properties", {}).update(extra or {})
    if patch:
        schema.pop("required", None)
    types = ["application/json", "application/yaml"] + ([MERGE_PATCH] if patch else [])
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in types}}}


_ID_FIELD = {"id": {"type": "string", "description": "Persona id (from the name when left out)"}}
_REVISION_FIELD = {"revision": {"type": "integer", "description": "Revision last read (or If-Match)"}}


# -- helpers ------------------------------------------------------------------------------

def view(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "revision": doc.revision, "created_at": doc.created_at,
            "updated_at": doc.updated_at, **doc.body}


def _answer(doc: Document, status: int = 200, location: str | None = None,
            **extra: Any) -> JSONResponse:
    headers = {"ETag": f'"{doc.revision}"'}
    if location:
        headers["Location"] = location
    return JSONResponse({**view(doc), **extra}, status_code=status, headers=headers)


def _invalid(exc: DocumentInvalid, pre: list[dict[str, str]] | None = None) -> Problem:
    errors = [*(pre or []), *exc.errors]
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(422, detail=f"invalid {exc.what}: {fields}", errors=errors)


def _refuse(pre: list[dict[str, str]], document: Any = None) -> None:
    """422 for errors found before the write (a bad id), with the document's own errors."""
    if not pre:
        return
    if document is not None:
        try:
            parse_persona(document, time.time())
        except DocumentInvalid as exc:
            raise _invalid(exc, pre) from None
    raise _invalid(DocumentInvalid([], "persona"), pre)


def _run(fn: Any, *args: Any) -> Any:
    """Call a persona_store function; its refusals become problems."""
    try:
        return fn(*args)
    except DocumentInvalid as exc:
        raise _invalid(exc) from None
    except PersonaConflict as exc:
        raise Problem(409, exc.title, detail=exc.detail, errors=exc.errors, extra=exc.extra) from None


def hub_subnets(store: Store) -> list[Subnet]:
    """The hub's subnets as the hub reads them (invalid ones are the hub's to report)."""
    out = []
    for doc in store.list("subnet"):
        try:
            out.append(Subnet.from_body(doc.id, doc.body, doc.revision))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _remapped(remapped: dict[str, str]) -> list[dict[str, str]]:
    return [{"persona_id": pid, "hub_range": block} for pid, block in sorted(remapped.items())]


def _attachment_view(doc: Document, interface_id: str) -> dict[str, Any]:
    record = personas.PersonaRecord.from_document(doc)
    a = record.attachment(interface_id)
    if a is None:
        raise NotFound("attachment", interface_id)
    hub_ip = a.ip if record.nat_range is None else \
        record.nat_range.network_address + (int(a.ip) - int(record.ip_range.network_address))
    return {"persona_id": doc.id, **a.to_body(), "gateway": str(record.gateway),
            "prefix_length": record.ip_range.prefixlen, "hub_ip": str(hub_ip)}


def _preview(ctx: ApiContext, plan: personas.Plan) -> dict[str, Any]:
    try:
        answer = ctx.hub.persona_preview({"id": plan.id, **plan.body})
    except TimeoutError:
        raise Problem(503, detail="the hub did not answer the dry run in time",
                      headers={"Retry-After": "1"}) from None
    except ValueError as exc:
        raise Problem(422, "Cannot compile", detail=f"persona {plan.id!r} cannot be compiled: {exc}",
                      errors=[field_error("body", str(exc) or "cannot be compiled")]) from None
    return {"id": plan.id, "record": plan.body, "remapped": _remapped(plan.remapped),
            "flows": answer.get("flows", {}), "meters": answer.get("meters", [])}


# -- personas -------------------------------------------------------------------------------

@router.get("/personas", summary="All personas", responses={200: {"model": list[StoredPersona]}})
def list_personas(
    ctx: Ctx,
    state: Annotated[Literal[personas.STATES] | None, Query(description="only in this state")] = None,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(personas.KIND) if state is None or d.body.get("state") == state]
    return JSONResponse([view(d) for d in docs])


@router.get("/personas/{id}", summary="One persona", responses={200: {"model": StoredPersona}})
def get_persona(id: str, ctx: Ctx) -> JSONResponse:
    return _answer(ctx.store.get(personas.KIND, id))


@router.post("/personas", status_code=201, summary="Create a persona (JSON or YAML), or dry-run it",
             description="201 with the stored persona (its `gateway`, `nat`, and the live personas "
                         "`remapped` to NAT blocks because their range overlaps it). With "
                         "`dry_run=true`: 200 with the flows and meters it would install; nothing "
                         "is stored.",
             responses={201: {"model": CreatedPersona, "description": "Created"},
                        200: {"model": PersonaPreview, "description": "Dry run"},
                        **problem_responses(400, 409, 415, 503)},
             openapi_extra=_body_schema(Persona, _ID_FIELD))
def create_persona(
    body: Body, ctx: Ctx,
    dry_run: Annotated[bool, Query(description="show what would be installed; store nothing")] = False,
) -> JSONResponse:
    id, pre = _take_id(body)
    _refuse(pre, body)
    now = time.time()
    subnets = hub_subnets(ctx.store)
    if dry_run:
        plan: personas.Plan = _run(personas.plan, ctx.store, body, now, subnets,
                                   ctx.persona_nat_pool, id)
        return JSONResponse(_preview(ctx, plan))
    created: personas.Created = _run(personas.create, ctx.store, body, now, subnets,
                                     ctx.persona_nat_pool, id)
    ctx.hub.personas_changed()
    doc = created.document
    return _answer(doc, 201, f"/v1/personas/{doc.id}", remapped=_remapped(created.remapped))


@router.put("/personas/{id}", summary="Replace a persona's document (same ip_range)",
            responses={200: {"model": StoredPersona}, **problem_responses(400, 409, 415, 428)},
            openapi_extra=_body_schema(Persona, _REVISION_FIELD))
def replace_persona(id: str, body: Body, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    ctx.store.get(personas.KIND, id)
    revision = _expected_revision(body, if_match, required=True)
    _refuse(_path_id(body, id), body)
    doc = _run(personas.update, ctx.store, id, body, time.time(), False, revision)
    ctx.hub.personas_changed()
    return _answer(doc)


@router.patch("/personas/{id}", summary="Change a persona (JSON merge patch)",
              description="Policies, protocols, QoS, thresholds, description, owner, or a new "
                          "`expiration` (moves the deadline). `null` removes a field. The revision "
                          "(body `revision` or If-Match) is checked when given.",
              responses={200: {"model": StoredPersona}, **problem_responses(400, 409, 415)},
              openapi_extra=_body_schema(Persona, _REVISION_FIELD, patch=True))
def patch_persona(id: str, body: PatchBody, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    ctx.store.get(personas.KIND, id)
    revision = _expected_revision(body, if_match, required=False)
    _refuse(_path_id(body, id))
    doc = _run(personas.update, ctx.store, id, body, time.time(), True, revision)
    ctx.hub.personas_changed()
    return _answer(doc)


@router.delete("/personas/{id}", summary="Delete a persona (the runtime tears it down in order)",
               responses={200: {"model": StoredPersona, "description": "The deleted persona"},
                          **problem_responses(409)})
def delete_persona(id: str, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    revision = _expected_revision(None, if_match, required=False)
    doc = personas.delete(ctx.store, id, revision)
    ctx.hub.personas_changed()
    return _answer(doc)


# -- attachments ---------------------------------------------------------------------------

@router.post("/personas/{id}/attachments", status_code=201,
             summary="Attach an interface to a persona (address given or allocated)",
             responses={201: {"model": AttachmentView, "description": "Attached"},
                        **problem_responses(400, 409, 415)},
             openapi_extra=_body_schema(AttachRequest))
def attach(id: str, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(personas.KIND, id)
    try:
        request = AttachRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(DocumentInvalid(errors_of(exc), "attachment")) from None
    doc = _run(personas.attach, ctx.store, id, request.interface_id, request.ip)
    ctx.hub.personas_changed()
    return JSONResponse(_attachment_view(doc, request.interface_id), status_code=201,
                        headers={"Location": f"/v1/personas/{id}/attachments/{request.interface_id}"})


@router.get("/personas/{id}/attachments/{interface_id}", summary="One attachment",
            responses={200: {"model": AttachmentView}})
def get_attachment(id: str, interface_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(_attachment_view(ctx.store.get(personas.KIND, id), interface_id))


@router.delete("/personas/{id}/attachments/{interface_id}", summary="Detach an interface",
               responses={200: {"model": AttachmentView, "description": "The removed attachment"}})
def detach(id: str, interface_id: str, ctx: Ctx) -> JSONResponse:
    before = _attachment_view(ctx.store.get(personas.KIND, id), interface_id)
    personas.detach(ctx.store, id, interface_id)
    ctx.hub.personas_changed()
    return JSONResponse(before)


# -- usage and alerts ----------------------------------------------------------------------

ZERO_USAGE: dict[str, Any] = {"bytes": {"in": 0, "out": 0}, "packets": {"in": 0, "out": 0},
                              "connections": 0, "denied": 0, "rate_bps": {"in": 0, "out": 0},
                              "updated_at": None, "latency_ms": None}


@router.get("/personas/{id}/usage", summary="Bytes, packets, connections, denied attempts, rate",
            responses={200: {"model": Usage}})
def usage(id: str, ctx: Ctx) -> JSONResponse:
    doc = ctx.store.get(personas.KIND, id)
    counted = ctx.hub.persona_usage(id) or {}
    return JSONResponse({"persona_id": id, "state": doc.body.get("state"),
                         **ZERO_USAGE, **{k: v for k, v in counted.items() if k in ZERO_USAGE}})


def _when(at: Any) -> float:
    """An alert's ``at`` (RFC 3339 text or Unix time) as Unix time, for sorting."""
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return float(at)
    try:
        return parse_expiration(at)
    except Exception:  # an unreadable time sorts last
        return 0.0


@router.get("/alerts", summary="Alerts, newest first", tags=["alerts"],
            responses={200: {"model": list[Alert]}})
def list_alerts(
    ctx: Ctx,
    persona_id: Annotated[str | None, Query(description="only this persona's")] = None,
    kind: Annotated[str | None, Query(description="only this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(ALERT)
            if (persona_id is None or d.body.get("persona_id") == persona_id)
            and (kind is None or d.body.get("kind") == kind)]
    docs.sort(key=lambda d: (_when(d.body.get("at")), d.created_at, d.id), reverse=True)
    return JSONResponse([{"id": d.id, **d.body} for d in docs[:limit]])

