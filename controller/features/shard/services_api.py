"""A pool's services and routes over REST: ``/v1/shard-pools/{id}/services`` and ``/routes``.

A service (``shard-service``, see ``controller.features.shard.services``)
puts several resources of the pool behind one external address.  It claims
that address in the space the resources' addresses are claimed in, and an
index (its conntrack zone); a refused claim is 409 and nothing is stored.

A route (``shard-route``) sends one session of a service to one of its
resources: for a service with a pattern, the text its group extracts from a
flow's first datagram; for one without, a client prefix.  ``GET .../routes``
also lists the routes the hub learned (``shard-session``, written by the
runtime): sessions default routing placed, each until it is idle for the
service's ``idle_timeout``.  A learned route cannot be deleted (it expires);
a route for its session takes over from it.
"""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import Ctx
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import ID_SCHEMA, DocId
from controller.core import claims
from controller.core.documents import DocumentInvalid, errors_of
from controller.features.shard.records import RESOURCE
from controller.features.shard.resources_api import _hosts_contain, pool_of
from controller.features.shard.service_claims import SERVICE_INDEX
from controller.features.shard.services import (IDLE_TIMEOUT, MAX_INDEX, ROUTE, SERVICE,
                                                SERVICE_ZONES, SESSION, WHAT, RouteSpec,
                                                ServiceSpec, parse_service, route_id,
                                                route_session)
from controller.store import AlreadyExists, Document, NotFound, Store

PathId = Annotated[str, Path(json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


# -- documentation models (answers are built from the store) ----------------------------

class ServiceView(BaseModel):
    id: str
    pool_id: str
    external_ip: str
    protocol: str = Field(examples=["udp", "tcp"])
    port: int
    resources: list[str]
    metadata: dict[str, str] | None = Field(description="{pattern}, or null")
    idle_timeout: int = Field(description="Seconds a learned session is kept unseen")
    zone: int = Field(description="The conntrack zone its patterned flows are pinned in")
    created_at: float


class RouteView(BaseModel):
    id: str
    pool_id: str
    service_id: str
    session: str
    resource_id: str
    learned: bool = Field(description="Learned by the hub (default routing) rather than given")
    created_at: float | None = Field(description="When it was given (null when learned)")
    last_seen: float | None = Field(description="A learned route: the session's last new flow")
    expires_at: float | None = Field(description="A learned route: forgotten then, unless "
                                                 "seen again")


# -- services --------------------------------------------------------------------------

def _service_of(store: Store, pool_id: str, sid: str) -> Document:
    doc = store.find(SERVICE, sid)
    if doc is None or doc.body.get("pool_id") != pool_id:
        raise NotFound(SERVICE, sid)
    return doc


def service_view(doc: Document) -> dict[str, Any]:
    b = doc.body
    return {"id": doc.id, "pool_id": b["pool_id"], "external_ip": b["external_ip"],
            "protocol": b["protocol"], "port": b["port"], "resources": list(b["resources"]),
            "metadata": b.get("metadata"), "idle_timeout": b.get("idle_timeout", IDLE_TIMEOUT),
            "zone": SERVICE_ZONES.first + int(b["index"]), "created_at": b.get("created_at", doc.created_at)}


def _derived_id(store: Store, pool_id: str, spec: ServiceSpec) -> str:
    base = f"{pool_id[:48]}-{spec.protocol}-{spec.port}"
    sid, n = base, 1
    while store.find(SERVICE, sid) is not None:
        n += 1
        sid = f"{base}-{n}"
    return sid


def create(ctx, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Store the service (one transaction; nothing when refused); its view."""
    store = ctx.store
    pool = pool_of(store, pool_id)
    spec = parse_service(body)
    with store.transaction():
        errors = []
        if not _hosts_contain(pool.external_range, spec.external_ip):
            errors.append(("body.external_ip", f"{spec.external_ip} is not a host address of "
                                               f"the pool's external range {pool.external_range}"))
        for i, rid in enumerate(spec.resources):
            doc = store.find(RESOURCE, rid)
            if doc is None or doc.body.get("pool_id") != pool_id:
                errors.append((f"body.resources[{i}]", f"{rid!r} is not a resource enrolled "
                                                       f"in shard pool {pool_id!r}"))
        if errors:
            raise DocumentInvalid(errors, WHAT)
        sid = spec.id or _derived_id(store, pool_id, spec)
        if store.find(SERVICE, sid) is not None:
            raise AlreadyExists(SERVICE, sid)
        index = claims.lowest_free(store, SERVICE_INDEX, 0, MAX_INDEX)
        if index is None:
            raise Problem(409, "Services exhausted",
                          detail=f"all {MAX_INDEX + 1} shard service indexes are held")
        record = {"pool_id": pool_id, "external_ip": str(spec.external_ip),
                  "protocol": spec.protocol, "port": spec.port, "resources": spec.resources,
                  "metadata": spec.metadata.model_dump() if spec.metadata else None,
                  "idle_timeout": spec.idle_timeout, "index": index, "created_at": time.time()}
        claims.check_write(store, SERVICE, sid, record)
        doc = store.create(SERVICE, sid, record)
        store.append_event(SERVICE, sid, "created",
                           {"pool_id": pool_id, "external_ip": record["external_ip"]})
    ctx.hub.documents_changed(SERVICE)
    return service_view(doc)


# -- routes ----------------------------------------------------------------------------

def _parse_route(body: dict[str, Any]) -> RouteSpec:
    try:
        return RouteSpec.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "shard route") from None


def route_view(doc: Document, learned: bool) -> dict[str, Any]:
    b = doc.body
    return {"id": doc.id, "pool_id": b["pool_id"], "service_id": b["service_id"],
            "session": b["session"], "resource_id": b["resource_id"], "learned": learned,
            "created_at": None if learned else b.get("created_at", doc.created_at),
            "last_seen": b.get("last_seen") if learned else None,
            "expires_at": b.get("expires_at") if learned else None}


def add_route(ctx, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    store = ctx.store
    pool_of(store, pool_id)
    spec = _parse_route(body)
    with store.transaction():
        service = store.find(SERVICE, spec.service_id)
        if service is None or service.body.get("pool_id") != pool_id:
            raise DocumentInvalid([("body.service_id", f"no service {spec.service_id!r} in "
                                                       f"shard pool {pool_id!r}")], "shard route")
        errors = []
        pattern = (service.body.get("metadata") or {}).get("pattern")
        try:
            session = route_session(pattern, spec.session)
        except ValueError as exc:
            errors.append(("body.session", str(exc)))
        if spec.resource_id not in service.body["resources"]:
            errors.append(("body.resource_id", f"{spec.resource_id!r} is not one of service "
                                               f"{spec.service_id!r}'s resources"))
        if errors:
            raise DocumentInvalid(errors, "shard route")
        rid = route_id(spec.service_id, session)
        if store.find(ROUTE, rid) is not None:
            raise AlreadyExists(ROUTE, rid)
        record = {"pool_id": pool_id, "service_id": spec.service_id, "session": session,
                  "resource_id": spec.resource_id, "created_at": time.time()}
        doc = store.create(ROUTE, rid, record)
        store.append_event(ROUTE, rid, "added", record)
    ctx.hub.documents_changed(ROUTE)
    return route_view(doc, learned=False)


def routes_of(store: Store, pool_id: str, service_id: str | None = None) -> list[dict[str, Any]]:
    """The pool's routes, given and learned (a learned one only while no route covers its
    session), by id."""
    def mine(doc: Document) -> bool:
        return doc.body.get("pool_id") == pool_id and service_id in (None, doc.body.get(
            "service_id"))
    given = {d.id: route_view(d, False) for d in store.list(ROUTE) if mine(d)}
    learned = {d.id: route_view(d, True) for d in store.list(SESSION)
               if mine(d) and d.id not in given}
    return sorted([*given.values(), *learned.values()], key=lambda r: r["id"])


# -- the routes ------------------------------------------------------------------------

router = APIRouter(prefix="/v1/shard-pools/{id}", tags=["shard services"],
                   responses=problem_responses(500))


@router.post("/services", status_code=201, summary="Put resources of the pool behind one "
                                                   "external address",
             description="Without `metadata`, clients are spread over the resources by a hash "
                         "of their address and port, in flows. With `metadata.pattern` (UDP "
                         "only), the first datagram of each flow is inspected once and the "
                         "flow pinned to its session's resource. 422 for an address outside "
                         "the pool's external range, a resource not enrolled in the pool, a "
                         "pattern that is not a regular expression with one group, or a "
                         "pattern on TCP; 409 when the address is held by a resource or "
                         "another service.",
             responses={201: {"model": ServiceView, "description": "Created"},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(ServiceSpec))
def create_service(id: DocId, body: Body, ctx: Ctx) -> JSONResponse:
    answer = create(ctx, id, body)
    return JSONResponse(answer, status_code=201,
                        headers={"Location": f"/v1/shard-pools/{id}/services/{answer['id']}"})


@router.get("/services", summary="The pool's services",
            responses={200: {"model": list[ServiceView]}, **problem_responses(404)})
def list_services(id: DocId, ctx: Ctx) -> JSONResponse:
    pool_of(ctx.store, id)
    return JSONResponse([service_view(d) for d in ctx.store.list(SERVICE)
                         if d.body.get("pool_id") == id])


@router.get("/services/{service_id}", summary="One service",
            responses={200: {"model": ServiceView}, **problem_responses(404)})
def get_service(id: DocId, service_id: PathId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(service_view(_service_of(ctx.store, id, service_id)))


@router.delete("/services/{service_id}", status_code=204, response_class=Response,
               summary="Remove a service, with its routes",
               description="Its external address and index are free again; its learned "
                           "sessions are forgotten.",
               responses={204: {"description": "Removed"}, **problem_responses(404)})
def delete_service(id: DocId, service_id: PathId, ctx: Ctx) -> Response:
    store = ctx.store
    with store.transaction():
        _service_of(store, id, service_id)
        for doc in store.list(ROUTE):
            if doc.body.get("service_id") == service_id:
                store.delete(ROUTE, doc.id)
        claims.check_write(store, SERVICE, service_id, None)
        store.delete(SERVICE, service_id)
        store.append_event(SERVICE, service_id, "deleted", {"pool_id": id})
    ctx.hub.documents_changed(SERVICE)
    return Response(status_code=204)


@router.post("/routes", status_code=201, summary="Send a session of a service to a resource",
             description="For a service with a pattern, `session` is what the pattern "
                         "extracts; for one without (TCP, hashed UDP), a client prefix. "
                         "New flows of the session take it; flows already pinned keep their "
                         "resource. 422 for an unknown service, a resource not behind it, or "
                         "a session that is not a prefix where one is needed; 409 when the "
                         "session has a route already.",
             responses={201: {"model": RouteView, "description": "Added"},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(RouteSpec))
def create_route(id: DocId, body: Body, ctx: Ctx) -> JSONResponse:
    answer = add_route(ctx, id, body)
    return JSONResponse(answer, status_code=201,
                        headers={"Location": f"/v1/shard-pools/{id}/routes/{answer['id']}"})


@router.get("/routes", summary="The pool's routes, given and learned",
            responses={200: {"model": list[RouteView]}, **problem_responses(404)})
def list_routes(id: DocId, ctx: Ctx,
                service_id: Annotated[str | None, Query(description="Only this service's")]
                = None) -> JSONResponse:
    pool_of(ctx.store, id)
    return JSONResponse(routes_of(ctx.store, id, service_id))


@router.delete("/routes/{route_id}", status_code=204, response_class=Response,
               summary="Remove a route",
               description="New flows of its session go where default routing puts them. 409 "
                           "for a learned route: it expires when idle.",
               responses={204: {"description": "Removed"}, **problem_responses(404, 409)})
def delete_route(id: DocId, route_id: PathId, ctx: Ctx) -> Response:
    store = ctx.store
    with store.transaction():
        doc = store.find(ROUTE, route_id)
        if doc is None or doc.body.get("pool_id") != id:
            learned = store.find(SESSION, route_id)
            if learned is not None and learned.body.get("pool_id") == id:
                raise Problem(409, "Learned route",
                              detail=f"route {route_id!r} was learned: it expires when its "
                                     "session is idle; add a route for the session to send "
                                     "it elsewhere",
                              errors=[field_error("path.route_id", "is a learned route")])
            raise NotFound(ROUTE, route_id)
        store.delete(ROUTE, route_id)
        store.append_event(ROUTE, route_id, "removed", {"pool_id": id})
    ctx.hub.documents_changed(ROUTE)
    return Response(status_code=204)
