"""Shadow slots over REST: ``/v1/shadow-slots``.

A slot is a host interface set aside as shadow capacity (the lab's spare
hosts).  Creating one stores a ``shadow-slot`` document: the interface and
the key its agent authenticates with.  The slot claims its interface (no
persona, shard resource, personality or other slot may hold it, see
``claims``), and an appliance's production interface cannot be a slot; a
refused claim is 409 and nothing is stored.  The key is answered once, by
the creation and by ``POST .../key``; GET never shows it.

GET adds what the runtime keeps of the slot (``shadow-slot-state``): its
state ("free" before the runtime wrote any) and the instance it runs.  A
slot an instance runs on (one a ``shadow-state`` lists, not stopped) cannot
be deleted.
"""
from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import ID_SCHEMA
from controller.core import claims, interfaces
from controller.core.documents import DocumentInvalid, DocumentModel, errors_of, rule
from controller.core.interfaces import ID_PATTERN as INTERFACE_ID, KIND as INTERFACE
from controller.features.shadow.document import AGENT_PORT, KIND as APPLIANCE, SLOT, SLOT_STATE, STATE
from controller.features.shadow.records import ShadowState, SlotState, read
from controller.store import AlreadyExists, Document, NotFound, Store

WHAT = "shadow slot"
SlotId = Annotated[str, Path(description="Slot id",
                             json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


def new_key() -> str:
    """A slot agent's secret: 48 hex digits (192 bits), safe on any command line."""
    return secrets.token_hex(24)


# -- documentation models (answers are built from the store) ----------------------------

class SlotRequest(DocumentModel):
    """Body of ``POST /v1/shadow-slots``."""
    interface_id: Annotated[str, Field(pattern=INTERFACE_ID)] = Field(
        examples=["0000000000000a01:3"], json_schema_extra=rule("names a stored interface"))
    id: Annotated[str, Field(pattern=ID_SCHEMA["pattern"])] | None = Field(
        default=None, description="The slot's id; slot-N if left out")


class Channel(BaseModel):
    server: str | None = Field(description="Where the slot's agent sends to: the gateway of "
                                           "its subnet (null: no subnet holds it)")
    port: int


class Created(BaseModel):
    id: str
    interface_id: str
    key: str = Field(description="The agent's secret: shown now and never again "
                                 "(POST .../key issues a new one)")
    channel: Channel
    created_at: float


class SlotView(SlotState):
    id: str
    interface_id: str
    created_at: float


class NewKey(BaseModel):
    id: str
    key: str = Field(description="The new secret (the old one no longer authenticates)")


# -- reading -----------------------------------------------------------------------------

def slot_view(store: Store, doc: Document) -> dict[str, Any]:
    """A slot as GET answers it (never its key)."""
    stored = store.find(SLOT_STATE, doc.id)
    state = (read(SlotState, stored) if stored is not None else None) or SlotState()
    return {"id": doc.id, "interface_id": doc.body["interface_id"],
            "created_at": doc.body.get("created_at", doc.created_at), **state.model_dump()}


def instances_on(store: Store, slot_id: str) -> list[str]:
    """The instances that run on a slot (``appliance/instance``), as the runtime says."""
    out = []
    for doc in store.list(STATE):
        state = read(ShadowState, doc)
        out += [f"{doc.id}/{i.id}" for i in (state.instances if state else ())
                if i.slot_id == slot_id and i.state != "stopped"]
    return out


# -- creating ----------------------------------------------------------------------------

def _parse(body: dict[str, Any]) -> SlotRequest:
    try:
        return SlotRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), WHAT) from None


def _derived_id(store: Store) -> str:
    n = 1
    while store.find(SLOT, sid := f"slot-{n}") is not None:
        n += 1
    return sid


def _production_of(store: Store, interface_id: str) -> str | None:
    """The appliance whose production interface this is, if any."""
    return next((d.id for d in store.list(APPLIANCE)
                 if interface_id in (d.body.get("interfaces") or ())), None)


def create_slot(ctx: ApiContext, body: dict[str, Any]) -> dict[str, Any]:
    """Store the slot (one transaction; nothing when refused); the creation's answer."""
    store = ctx.store
    request = _parse(body)
    with store.transaction():
        interface = store.find(INTERFACE, request.interface_id)
        if interface is None:
            raise DocumentInvalid([("body.interface_id", f"no interface {request.interface_id!r} "
                                                         "is known (see GET /v1/interfaces)")], WHAT)
        appliance = _production_of(store, request.interface_id)
        if appliance is not None:
            reason = f"is a production interface of appliance {appliance!r}"
            raise Problem(409, "Claimed", detail=f"interface {request.interface_id} {reason}",
                          errors=[field_error("body.interface_id", reason)],
                          extra={"owner": f"{APPLIANCE} {appliance}", "appliance_id": appliance,
                                 "interface_id": request.interface_id})
        sid = request.id or _derived_id(store)
        if store.find(SLOT, sid) is not None:
            raise AlreadyExists(SLOT, sid)
        record = {"interface_id": request.interface_id, "key": new_key(),
                  "created_at": time.time()}
        claims.check_write(store, SLOT, sid, record)
        store.create(SLOT, sid, record)
        store.append_event(SLOT, sid, "created", {"interface_id": request.interface_id})
        server = interfaces.gateway_of(store, interface.body)
    ctx.hub.documents_changed(SLOT)
    return {"id": sid, "interface_id": request.interface_id, "key": record["key"],
            "channel": {"server": server, "port": AGENT_PORT}, "created_at": record["created_at"]}


# -- the routes --------------------------------------------------------------------------

router = APIRouter(prefix="/v1/shadow-slots", tags=["shadow slots"],
                   responses=problem_responses(500))


@router.post("", status_code=201, summary="Set an interface aside as a shadow slot",
             description="Stores the slot and answers its agent's key, once, with where the "
                         "agent reaches the hub. 422 for an unknown interface; 409 when the "
                         "interface is held (a persona member, a shard resource, a "
                         "personality's, another slot) or is an appliance's production "
                         "interface.",
             responses={201: {"model": Created, "description": "Created"},
                        **problem_responses(400, 409, 415, 422)},
             openapi_extra=model_body(SlotRequest))
def add_slot(body: Body, ctx: Ctx) -> JSONResponse:
    answer = create_slot(ctx, body)
    return JSONResponse(answer, status_code=201,
                        headers={"Location": f"/v1/shadow-slots/{answer['id']}"})


@router.get("", summary="All shadow slots, with their state",
            responses={200: {"model": list[SlotView]}})
def list_slots(ctx: Ctx) -> JSONResponse:
    return JSONResponse([slot_view(ctx.store, d) for d in ctx.store.list(SLOT)])


@router.get("/{id}", summary="One shadow slot", description="The key is never shown.",
            responses={200: {"model": SlotView}, **problem_responses(404)})
def get_slot(id: SlotId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(slot_view(ctx.store, ctx.store.get(SLOT, id)))


@router.post("/{id}/key", summary="Issue a new key for a slot's agent",
             description="The old key stops authenticating; the agent needs the new one.",
             responses={200: {"model": NewKey}, **problem_responses(404)})
def reissue_key(id: SlotId, ctx: Ctx) -> JSONResponse:
    key = new_key()
    with ctx.store.transaction():
        doc = ctx.store.get(SLOT, id)
        ctx.store.update(SLOT, id, {**doc.body, "key": key}, doc.revision)
        ctx.store.append_event(SLOT, id, "key reissued", {})
    ctx.hub.documents_changed(SLOT)
    return JSONResponse({"id": id, "key": key})


@router.delete("/{id}", status_code=204, response_class=Response,
               summary="Remove a shadow slot",
               description="409 while a shadow instance runs on it (shrink or delete the "
                           "appliance first). Its interface is free again.",
               responses={204: {"description": "Removed"}, **problem_responses(404, 409)})
def remove_slot(id: SlotId, ctx: Ctx) -> Response:
    with ctx.store.transaction():
        if ctx.store.find(SLOT, id) is None:
            raise NotFound(SLOT, id)
        running = instances_on(ctx.store, id)
        if running:
            raise Problem(409, "Slot in use",
                          detail=f"shadow slot {id!r} runs instance(s) {', '.join(running)}",
                          errors=[field_error("path.id", "a shadow instance runs on it")],
                          extra={"instances": running})
        claims.check_write(ctx.store, SLOT, id, None)
        ctx.store.delete(SLOT, id)
        ctx.store.append_event(SLOT, id, "deleted", {})
    ctx.hub.documents_changed(SLOT)
    return Response(status_code=204)
