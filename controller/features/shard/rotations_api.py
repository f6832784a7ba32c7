"""A pool's shards and rotation rounds over REST.

``GET /v1/shard-pools/{id}/shards`` reads the pool's state (``shard-state``,
written by the runtime) and counts each shard's members from the leases:
a resource belongs to the shard of its current address, or to the one it is
moving into. ``POST .../rotate`` asks the hub for a round now (query
``("shard", "rotate")``); the runtime stores each round (``shard-rotation``)
and ``GET .../rotations/{rotation_id}`` shows its steps as they go.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from controller.api.bodies import OptionalBody, model_schema, request_body
from controller.api.context import Ctx
from controller.api.problems import problem_responses
from controller.api.queries import ask
from controller.api.revisions import ID_SCHEMA, DocId
from controller.core.documents import DocumentInvalid, DocumentModel, errors_of, rule
from controller.features.shard.addresses import with_members
from controller.features.shard.document import KIND as POOL
from controller.features.shard.records import LEASE, MAX_INDEX, ROTATION, STATE, Lease, PoolState
from controller.features.shard.resources_api import resources_of
from controller.store import Document, NotFound, Store

RotationId = Annotated[str, Path(description="Rotation id",
                                 json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


# -- documentation models --------------------------------------------------------------

class ShardView(BaseModel):
    id: str
    cidr: str = Field(examples=["10.200.0.16/28"])
    created_at: float
    expires_at: float = Field(description="The end of its lifespan: its members move then")
    state: str = Field(examples=["active", "draining", "retired"])
    members: list[str] = Field(description="Resources whose address is in it, or moving in")
    usable: int = Field(description="Addresses it can give out (all but network and broadcast)")
    utilization: float = Field(description="members / usable")


class RotateRequest(DocumentModel):
    """Body of ``POST /v1/shard-pools/{id}/rotate`` (optional)."""
    resources: list[Annotated[str, Field(pattern=ID_SCHEMA["pattern"])]] | None = Field(
        default=None, max_length=MAX_INDEX + 1,
        description="Move these resources (a round moves at most the pool's "
                    "max_migrations_per_round); without: the round the interval would run",
        json_schema_extra=rule("each names a resource enrolled in this pool"))


class RotationStarted(BaseModel):
    id: str
    state: str = Field(examples=["running"])


class StepView(BaseModel):
    resource: str
    from_shard: str | None
    to_shard: str
    from_address: str | None
    to_address: str | None
    state: str = Field(examples=["pending", "announcing", "switching", "done", "failed"])
    message: str
    started_at: float | None
    acked_at: float | None = Field(description="When the resource acknowledged the ANNOUNCE")
    realized_at: float | None = Field(description="When new connections went to the new address")


class RotationView(BaseModel):
    id: str
    pool_id: str
    state: str = Field(examples=["running", "done", "partial", "failed"])
    reason: str = Field(examples=["interval", "expired", "forced"])
    forced: list[str] = Field(description="The resources asked to move")
    created_at: float
    finished_at: float | None
    created_shards: list[str]
    retired_shards: list[str]
    waiting: list[str] = Field(description="Resources that wanted to move and found no room")
    steps: list[StepView]


# -- reading ---------------------------------------------------------------------------

def shards_view(store: Store, pool_id: str) -> list[dict[str, Any]]:
    doc = store.find(STATE, pool_id)
    if doc is None:
        return []
    enrolled = {d.id for d in resources_of(store, pool_id)}
    leases = [Lease.from_doc(d.id, d.body) for d in store.list(LEASE) if d.id in enrolled]
    return [{"id": s.id, "cidr": str(s.cidr), "created_at": s.created_at,
             "expires_at": s.expires_at, "state": s.state, "members": sorted(s.members),
             "usable": s.usable, "utilization": s.utilization}
            for s in with_members(PoolState.from_doc(pool_id, doc.body), leases)]


def rotation_view(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, **doc.body}


def rotations_of(store: Store, pool_id: str) -> list[Document]:
    """The pool's stored rounds, newest first."""
    docs = [d for d in store.list(ROTATION) if d.body.get("pool_id") == pool_id]
    return sorted(docs, key=lambda d: (d.body.get("created_at", d.created_at), d.id),
                  reverse=True)


def _parse(body: dict[str, Any]) -> RotateRequest:
    try:
        return RotateRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "rotation request") from None


# -- the routes ------------------------------------------------------------------------

router = APIRouter(prefix="/v1/shard-pools/{id}", tags=["shard pools"],
                   responses=problem_responses(500))


@router.get("/shards", summary="The pool's shards: members, utilization, state",
            description="Empty until the hub has placed a first resource.",
            responses={200: {"model": list[ShardView]}, **problem_responses(404)})
def list_shards(id: DocId, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    return JSONResponse(shards_view(ctx.store, id))


@router.post("/rotate", status_code=202, summary="Force a rotation round now",
             description="Answers at once with the round's id; follow it at Location. With "
                         "`resources`, those move (422 naming any that is not this pool's).",
             responses={202: {"model": RotationStarted, "description": "Started"},
                        **problem_responses(400, 404, 415, 422, 503)},
             openapi_extra=request_body(model_schema(RotateRequest), required=False))
def rotate(id: DocId, body: OptionalBody, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    request = _parse(body)
    wanted = list(dict.fromkeys(request.resources or ()))
    enrolled = {d.id for d in resources_of(ctx.store, id)}
    errors = [(f"body.resources[{i}]", f"{rid!r} is not a resource of shard pool {id!r}")
              for i, rid in enumerate(request.resources or ()) if rid not in enrolled]
    if errors:
        raise DocumentInvalid(errors, "rotation request")
    started = ask(ctx, "shard", "rotate", pool_id=id, resources=wanted or None,
                  what="rotation", subject=f"shard pool {id!r}", field="body.resources")
    return JSONResponse({"id": started["id"], "state": started["state"]}, status_code=202,
                        headers={"Location": f"/v1/shard-pools/{id}/rotations/{started['id']}"})


@router.get("/rotations", summary="The pool's rotation rounds, newest first",
            responses={200: {"model": list[RotationView]}, **problem_responses(404)})
def list_rotations(id: DocId, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    return JSONResponse([rotation_view(d) for d in rotations_of(ctx.store, id)])


@router.get("/rotations/{rotation_id}", summary="One rotation round: its steps and state",
            responses={200: {"model": RotationView}, **problem_responses(404)})
def get_rotation(id: DocId, rotation_id: RotationId, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    doc = ctx.store.find(ROTATION, rotation_id)
    if doc is None or doc.body.get("pool_id") != id:
        raise NotFound(ROTATION, rotation_id)
    return JSONResponse(rotation_view(doc))
