"""Personas over REST: the records, their attachments, usage, and alerts.

``/v1/personas`` is served by the CRUD layer (``controller.api.crud``); its
writes go through ``controller.features.persona.store`` (which allocates the
index, gateway and NAT blocks, and journals), and a merge patch applies to
the document as the user wrote it. ``POST /v1/personas?dry_run=true`` runs the
create, rolls it back, and asks the hub (query ``("persona", "preview")``)
what it would install.

A persona is answered flat like every stored document:
``{id, revision, created_at, updated_at}`` plus the record body (``document``,
``index``, ``gateway``, ``nat``, ``attachments``, ``expires_at``, ``state``,
``expired_at``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.crud import Change, DocumentKind, Filter, StoredMeta, Written, crud_router
from controller.api.problems import Problem, problem_responses
from controller.api.queries import ask
from controller.api.revisions import DocId
from controller.api.routes_interfaces import INTERFACE_ID
from controller.core.documents import IPV4_SCHEMA, DocumentInvalid, DocumentModel, errors_of, rule
from controller.core.topology import Subnet
from controller.features.persona import store as personas
from controller.features.persona.document import Persona, parse_expiration, parse_persona, user_fields
from controller.features.persona.store import DEFAULT_NAT_POOL, PersonaConflict
from controller.store import Document, NotFound, Store

ALERT = "alert"


# -- documentation models (answers are built from the store) ----------------------------

class NatMapping(BaseModel):
    hub_range: str = Field(description="The block the hub sees the persona at", examples=["100.64.0.0/24"])


class AttachmentBody(BaseModel):
    interface_id: str = Field(examples=["0000000000000a01:3"])
    ip: str = Field(examples=["10.100.0.2"])
    mac: str | None


class StoredPersona(StoredMeta):
    document: Persona = Field(description="The normalized document (with computed values)")
    index: int | None = Field(description="1..16384 while active: conntrack zone 24575+index (0x6000..0x9fff), "
                                                 "meters 65536+2*index")
    gateway: str = Field(examples=["10.100.0.1"])
    nat: NatMapping | None
    attachments: list[AttachmentBody]
    expires_at: float
    state: Literal[personas.STATES]  # type: ignore[valid-type]
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
    flows: dict[str, list[str]] = Field(description="Rendered flows per datapath, one flow per item")
    meters: list[Any]


class AttachRequest(DocumentModel):
    """Body of ``POST /v1/personas/{id}/attachments``."""
    interface_id: Annotated[str, Field(pattern=INTERFACE_ID)] = Field(
        examples=["0000000000000a01:3"], json_schema_extra=rule("names a stored interface"))
    ip: str | None = Field(default=None, description="Address in the range; the lowest free one if left out",
                           json_schema_extra={"anyOf": [IPV4_SCHEMA, {"type": "null"}], **rule(
                               "a free host address of the persona's range, not its gateway")})


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
    state: Literal[personas.STATES]  # type: ignore[valid-type]
    bytes: InOut
    packets: InOut
    connections: int
    denied: int
    rate_bps: InOut
    updated_at: float | None
    latency_ms: float | None = Field(default=None, description="Measured gateway-to-host round trip")


class Alert(BaseModel):
    id: str
    kind: str = Field(examples=["bandwidth", "bytes", "security_events", "latency", "expiry_warning",
                                "shadow_finding"])
    severity: str = Field(examples=["warning"])
    subject: str
    persona_id: str | None
    appliance_id: str | None = Field(default=None, description="A shadow finding's appliance")
    finding_id: str | None = Field(default=None, description="A shadow finding's id")
    message: str
    value: Any = None
    threshold: Any = None
    at: float | str = Field(description="When it was raised (RFC 3339, or Unix time)")
    cleared_at: float | str | None = Field(default=None, description="When the condition went away")


# -- helpers ------------------------------------------------------------------------------

@contextmanager
def _refusals() -> Iterator[None]:
    """The persona store's refusals of a valid request (PersonaConflict) as 409 problems."""
    try:
        yield
    except PersonaConflict as exc:
        raise Problem(409, exc.title, detail=exc.detail, errors=exc.errors, extra=exc.extra) from None


def nat_pool(ctx: ApiContext) -> IPv4Network:
    settings = ctx.settings.get("persona")
    return settings.nat_pool if settings is not None else DEFAULT_NAT_POOL


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


# -- the records ----------------------------------------------------------------------------

class PersonaKind(DocumentKind):
    kind = personas.KIND
    path = "/v1/personas"
    model = Persona
    tag = "personas"
    plural = "personas"
    merge_patch = True
    filters = (Filter("state", personas.STATES, "only in this state"),)
    stored = StoredPersona
    created = CreatedPersona
    previewed = PersonaPreview
    descriptions = {
        "create": "201 with the stored persona (its `gateway`, `nat`, and the live personas "
                  "`remapped` to NAT blocks because their range overlaps it). With "
                  "`dry_run=true`: 200 with the flows and meters it would install "
                  "(`PersonaPreview`); nothing is stored.",
        "replace": "The whole document again, with the same `ip_range`.",
        "patch": "Policies, protocols, QoS, thresholds, description, owner, or a new "
                 "`expiration` (moves the deadline). `null` removes a field. The revision "
                 "(body `revision` or If-Match) is checked when given.",
        "delete": "The runtime tears it down in order.",
    }

    def parse(self, change: Change) -> Persona:
        return parse_persona(change.body, change.now)

    def patch_target(self, prior: Document) -> dict[str, Any]:
        return user_fields(prior.body["document"])

    def create(self, change: Change) -> Written:
        with _refusals():
            created = personas.create(change.store, change.body, change.now, hub_subnets(change.store),
                                      nat_pool(change.ctx), change.id)
        return Written(created.document, {"remapped": _remapped(created.remapped)})

    def replace(self, change: Change, revision: int | None) -> Written:
        assert change.id is not None
        with _refusals():
            return Written(personas.update(change.store, change.id, change.body, change.now,
                                           False, revision))

    def delete(self, change: Change, revision: int | None) -> Written:
        assert change.id is not None
        return Written(personas.delete(change.store, change.id, revision))

    def dry_run_answer(self, ctx: ApiContext, written: Written, created: bool) -> JSONResponse:
        if not created:  # a replace or patch: what would be stored
            return super().dry_run_answer(ctx, written, created)
        doc = written.document
        preview = ask(ctx, "persona", "preview", body={"id": doc.id, **doc.body}, what="dry run",
                      subject=f"persona {doc.id!r}", field="query.dry_run")
        return JSONResponse({"id": doc.id, "record": doc.body, "remapped": written.extra["remapped"],
                             "flows": preview.get("flows", {}), "meters": preview.get("meters", [])})


# -- attachments ---------------------------------------------------------------------------

extras = APIRouter(prefix="/v1", tags=["personas"], responses=problem_responses(500))
InterfaceId = Annotated[str, Path(json_schema_extra={"pattern": INTERFACE_ID})]


@extras.post("/personas/{id}/attachments", status_code=201,
             summary="Attach an interface to a persona (address given or allocated)",
             responses={201: {"model": AttachmentView, "description": "Attached"},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(AttachRequest))
def attach(id: DocId, body: Body, ctx: Ctx) -> JSONResponse:
    ctx.store.get(personas.KIND, id)
    try:
        request = AttachRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "attachment") from None
    with _refusals():
        doc = personas.attach(ctx.store, id, request.interface_id, request.ip)
    ctx.hub.documents_changed(personas.KIND)
    return JSONResponse(_attachment_view(doc, request.interface_id), status_code=201,
                        headers={"Location": f"/v1/personas/{id}/attachments/{request.interface_id}"})


@extras.get("/personas/{id}/attachments/{interface_id}", summary="One attachment",
            responses={200: {"model": AttachmentView}, **problem_responses(404)})
def get_attachment(id: DocId, interface_id: InterfaceId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(_attachment_view(ctx.store.get(personas.KIND, id), interface_id))


@extras.delete("/personas/{id}/attachments/{interface_id}", summary="Detach an interface",
               responses={200: {"model": AttachmentView, "description": "The removed attachment"},
                          **problem_responses(404)})
def detach(id: DocId, interface_id: InterfaceId, ctx: Ctx) -> JSONResponse:
    before = _attachment_view(ctx.store.get(personas.KIND, id), interface_id)
    personas.detach(ctx.store, id, interface_id)
    ctx.hub.documents_changed(personas.KIND)
    return JSONResponse(before)


# -- usage and alerts ----------------------------------------------------------------------

ZERO_USAGE: dict[str, Any] = {"bytes": {"in": 0, "out": 0}, "packets": {"in": 0, "out": 0},
                              "connections": 0, "denied": 0, "rate_bps": {"in": 0, "out": 0},
                              "updated_at": None, "latency_ms": None}


@extras.get("/personas/{id}/usage", summary="Bytes, packets, connections, denied attempts, rate",
            responses={200: {"model": Usage}, **problem_responses(404, 503)})
def usage(id: DocId, ctx: Ctx) -> JSONResponse:
    doc = ctx.store.get(personas.KIND, id)
    counted = ask(ctx, "persona", "usage", id=id, what="usage query", subject=f"persona {id!r}",
                  field="path.id") or {}
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


@extras.get("/alerts", summary="Alerts, newest first", tags=["alerts"],
            responses={200: {"model": list[Alert]}, **problem_responses(422)})
def list_alerts(
    ctx: Ctx,
    persona_id: Annotated[str | None, Query(description="only this persona's")] = None,
    kind: Annotated[str | None, Query(description="only this kind")] = None,
    appliance_id: Annotated[str | None, Query(description="only this appliance's")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(ALERT)
            if (persona_id is None or d.body.get("persona_id") == persona_id)
            and (kind is None or d.body.get("kind") == kind)
            and (appliance_id is None or d.body.get("appliance_id") == appliance_id)]
    docs.sort(key=lambda d: (_when(d.body.get("at")), d.created_at, d.id), reverse=True)
    return JSONResponse([{"id": d.id, **d.body} for d in docs[:limit]])


router = APIRouter()
router.include_router(crud_router(PersonaKind()))
router.include_router(extras)
