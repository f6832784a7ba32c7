"""Shard resources over REST: ``/v1/shard-pools/{id}/resources``.

Enrolling an interface stores a ``shard-resource`` document (see
``controller.features.shard.records``): the pool, the interface, a stable
external address (given, or the lowest free one of the pool's external
range), the RAP key, and an index (the resource's conntrack zone). The
document claims the interface (no persona, personality or other resource may
hold it), the external address and the index; a refused claim is 409 and
nothing is stored. The key is answered once, by the enrollment and by
``POST .../key``; GET never shows it.

GET answers the resource merged with the lease the runtime keeps for it
(``shard-lease``): its current shard and address, the deprecated addresses
still draining, a move in flight, and the lease's recent history.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import asdict
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import ID_SCHEMA, DocId
from controller.api.routes_interfaces import INTERFACE_ID
from controller.core import claims, interfaces
from controller.core.documents import IPv4, DocumentInvalid, DocumentModel, errors_of, rule
from controller.core.interfaces import KIND as INTERFACE
from controller.features.shard.claims import EXTERNAL_IP, INDEX
from controller.features.shard.document import KIND as POOL, ShardPool
from controller.features.shard.records import (LEASE, LEASED, MAX_INDEX, OFFERED, RESOURCE,
                                               UNLEASED, Lease)
from controller.store import AlreadyExists, Document, NotFound, Store

WHAT = "shard resource"
ResourceId = Annotated[str, Path(description="Resource id",
                                 json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


def new_key() -> str:
    """A resource's RAP secret: 48 hex digits (192 bits), safe on any command line."""
    return secrets.token_hex(24)


# -- documentation models (answers are built from the store) ----------------------------

class EnrollRequest(DocumentModel):
    """Body of ``POST /v1/shard-pools/{id}/resources``."""
    interface_id: Annotated[str, Field(pattern=INTERFACE_ID)] = Field(
        examples=["0000000000000a01:3"], json_schema_extra=rule("names a stored interface"))
    external_ip: IPv4 | None = Field(
        default=None, description="Its stable external address; the lowest free one of the "
                                  "pool's external range if left out",
        json_schema_extra=rule("a host address of the pool's external range"))
    id: Annotated[str, Field(pattern=ID_SCHEMA["pattern"])] | None = Field(
        default=None, description="The resource's id; made from the pool's if left out")


class RapServer(BaseModel):
    server: str | None = Field(description="Where the resource's RAP client sends to: the "
                                           "gateway of its subnet (null: none holds it)")
    port: int


class Enrolled(BaseModel):
    id: str
    pool_id: str
    interface_id: str
    external_ip: str
    key: str = Field(description="The RAP secret: shown now and never again "
                                 "(POST .../key issues a new one)")
    rap: RapServer
    created_at: float


class DeprecatedAddress(BaseModel):
    address: str
    shard_id: str
    connections: int = Field(description="Connections still using it")
    since: float
    expires_at: float = Field(description="Released by then even with connections left")


class LeaseSummary(BaseModel):
    state: Literal[UNLEASED, OFFERED, LEASED]  # type: ignore[valid-type]
    expires_at: float | None


class MoveInFlight(BaseModel):
    round_id: str
    to_shard: str
    to_address: str
    state: str = Field(examples=["announcing", "switching"])
    started_at: float
    deadline: float


class ResourceView(BaseModel):
    id: str
    pool_id: str
    interface_id: str
    external_ip: str
    created_at: float
    shard_id: str | None = Field(description="Its current shard (null before the first lease)")
    address: str | None = Field(description="Its current shard address (null before the first "
                                            "lease)")
    deprecated: list[DeprecatedAddress]
    lease: LeaseSummary
    move: MoveInFlight | None
    history: list[dict[str, Any]] = Field(description="Recent lease events, oldest first: "
                                                      "{at, event, ...}")


class NewKey(BaseModel):
    id: str
    key: str = Field(description="The new RAP secret (the old one no longer authenticates)")


# -- reading ---------------------------------------------------------------------------

def pool_of(store: Store, pool_id: str) -> ShardPool:
    """The stored pool (404 when there is none)."""
    return ShardPool.model_validate(store.get(POOL, pool_id).body)


def resources_of(store: Store, pool_id: str) -> list[Document]:
    """The resources enrolled in a pool, by id."""
    return [d for d in store.list(RESOURCE) if d.body.get("pool_id") == pool_id]


def resource_of(store: Store, pool_id: str, rid: str) -> Document:
    """One resource of a pool (404 when it is not one)."""
    doc = store.find(RESOURCE, rid)
    if doc is None or doc.body.get("pool_id") != pool_id:
        raise NotFound(RESOURCE, rid)
    return doc


def lease_of(doc: Document | None, rid: str) -> Lease:
    return Lease.from_doc(rid, doc.body) if doc is not None else Lease(rid)


def resource_view(doc: Document, lease: Lease) -> dict[str, Any]:
    """A resource as GET answers it (never its key)."""
    b = doc.body
    return {"id": doc.id, "pool_id": b["pool_id"], "interface_id": b["interface_id"],
            "external_ip": b["external_ip"], "created_at": b.get("created_at", doc.created_at),
            "shard_id": lease.shard_id, "address": lease.address,
            "deprecated": [{"address": d.address, "shard_id": d.shard_id,
                            "connections": d.connections, "since": d.since,
                            "expires_at": d.expires_at} for d in lease.deprecated],
            "lease": {"state": lease.state, "expires_at": lease.expires_at},
            "move": asdict(lease.move) if lease.move else None,
            "history": list(lease.history)}


# -- enrolling -------------------------------------------------------------------------

def _hosts_contain(net: IPv4Network, ip: IPv4Address) -> bool:
    """Whether ``ip`` is one of ``net.hosts()`` (not its network or broadcast address)."""
    if ip not in net:
        return False
    return net.prefixlen >= 31 or ip not in (net.network_address, net.broadcast_address)


def _free_external(store: Store, pool_id: str, external: IPv4Network) -> str:
    """The lowest host address of the external range no resource holds (409: none)."""
    for ip in external.hosts():
        if not claims.holders(store, EXTERNAL_IP, str(ip)):
            return str(ip)
    raise Problem(409, "Addresses exhausted",
                  detail=f"every address of {external} (shard pool {pool_id!r}) is held",
                  errors=[field_error("body.external_ip", f"no address of {external} is free")])


def _derived_id(store: Store, pool_id: str) -> str:
    n = 1
    while store.find(RESOURCE, rid := f"{pool_id[:56]}-{n}") is not None:
        n += 1
    return rid


def _parse(body: dict[str, Any]) -> EnrollRequest:
    try:
        return EnrollRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), WHAT) from None


def enroll(ctx: ApiContext, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Store the resource (one transaction; nothing when refused); the enrollment's answer."""
    store = ctx.store
    pool = pool_of(store, pool_id)
    request = _parse(body)
    with store.transaction():
        interface = store.find(INTERFACE, request.interface_id)
        errors = []
        if interface is None:
            errors.append(("body.interface_id", f"no interface {request.interface_id!r} is known "
                                                "(see GET /v1/interfaces)"))
        if request.external_ip is not None and not _hosts_contain(pool.external_range,
                                                                  request.external_ip):
            errors.append(("body.external_ip", f"{request.external_ip} is not a host address "
                                               f"of the pool's external range "
                                               f"{pool.external_range}"))
        if errors:
            raise DocumentInvalid(errors, WHAT)
        assert interface is not None
        rid = request.id or _derived_id(store, pool_id)
        if store.find(RESOURCE, rid) is not None:
            raise AlreadyExists(RESOURCE, rid)
        external = (str(request.external_ip) if request.external_ip is not None
                    else _free_external(store, pool_id, pool.external_range))
        index = claims.lowest_free(store, INDEX, 0, MAX_INDEX)
        if index is None:
            raise Problem(409, "Resources exhausted",
                          detail=f"all {MAX_INDEX + 1} shard resource indexes are held")
        record = {"pool_id": pool_id, "interface_id": request.interface_id,
                  "external_ip": external, "key": new_key(), "index": index,
                  "created_at": time.time()}
        claims.check_write(store, RESOURCE, rid, record)
        store.create(RESOURCE, rid, record)
        store.append_event(RESOURCE, rid, "enrolled",
                           {"pool_id": pool_id, "interface_id": request.interface_id,
                            "external_ip": external})
        server = interfaces.gateway_of(store, interface.body)
    ctx.hub.documents_changed(RESOURCE)
    return {"id": rid, "pool_id": pool_id, "interface_id": request.interface_id,
            "external_ip": external, "key": record["key"],
            "rap": {"server": server, "port": pool.rap.port}, "created_at": record["created_at"]}


# -- the routes ------------------------------------------------------------------------

router = APIRouter(prefix="/v1/shard-pools/{id}/resources", tags=["shard resources"],
                   responses=problem_responses(500))


@router.post("", status_code=201, summary="Enroll an interface as a resource of the pool",
             description="Stores the resource and answers its RAP key, once. The external "
                         "address is the body's, or the lowest free host address of the "
                         "pool's `external_range`. 422 for an unknown interface or an address "
                         "outside the range; 409 when the interface is held (by a persona, a "
                         "personality or another resource), the address is taken, or none is "
                         "free.",
             responses={201: {"model": Enrolled, "description": "Enrolled"},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(EnrollRequest))
def enroll_resource(id: DocId, body: Body, ctx: Ctx) -> JSONResponse:
    answer = enroll(ctx, id, body)
    return JSONResponse(answer, status_code=201,
                        headers={"Location": f"/v1/shard-pools/{id}/resources/{answer['id']}"})


@router.get("", summary="The pool's resources, with their leases",
            responses={200: {"model": list[ResourceView]}, **problem_responses(404)})
def list_resources(id: DocId, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    leases = {d.id: d for d in ctx.store.list(LEASE)}
    return JSONResponse([resource_view(d, lease_of(leases.get(d.id), d.id))
                         for d in resources_of(ctx.store, id)])


@router.get("/{rid}", summary="One resource: its address, shard, deprecated addresses, lease",
            description="`address` and `shard_id` are null before the first lease. The key is "
                        "never shown.",
            responses={200: {"model": ResourceView}, **problem_responses(404)})
def get_resource(id: DocId, rid: ResourceId, ctx: Ctx) -> JSONResponse:
    doc = resource_of(ctx.store, id, rid)
    return JSONResponse(resource_view(doc, lease_of(ctx.store.find(LEASE, rid), rid)))


@router.post("/{rid}/key", summary="Issue a new RAP key for a resource",
             description="The old key stops authenticating; the client needs the new one.",
             responses={200: {"model": NewKey}, **problem_responses(404)})
def reissue_key(id: DocId, rid: ResourceId, ctx: Ctx) -> JSONResponse:
    key = new_key()
    with ctx.store.transaction():
        doc = resource_of(ctx.store, id, rid)
        ctx.store.update(RESOURCE, rid, {**doc.body, "key": key}, doc.revision)
        ctx.store.append_event(RESOURCE, rid, "key reissued", {"pool_id": id})
    ctx.hub.documents_changed(RESOURCE)
    return JSONResponse({"id": rid, "key": key})


@router.delete("/{rid}", status_code=204, response_class=Response,
               summary="Release a resource",
               description="Its interface, external address and index are free again; the hub "
                           "removes its lease and translation.",
               responses={204: {"description": "Released"}, **problem_responses(404)})
def release_resource(id: DocId, rid: ResourceId, ctx: Ctx) -> Response:
    with ctx.store.transaction():
        resource_of(ctx.store, id, rid)
        claims.check_write(ctx.store, RESOURCE, rid, None)
        ctx.store.delete(RESOURCE, rid)
        ctx.store.append_event(RESOURCE, rid, "released", {"pool_id": id})
    ctx.hub.documents_changed(RESOURCE)
    return Response(status_code=204)
