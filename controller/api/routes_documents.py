"""CRUD for typed intent documents: subnets and personalities.

Every write validates the whole document first (nothing is stored when it
fails: 422 naming each bad field), runs inside one store transaction with its
journal event, and answers with the stored document
``{id, revision, created_at, updated_at, body}``. Replacing a document needs
the revision last read (body ``revision`` or ``If-Match``); a stale one is 409.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from controller.core.documents import DocumentInvalid, id_problem, slugify
from controller.features.fabric.document import Subnet, parse_subnet, subnet_id_from_cidr, validate_subnet
from controller.features.personality.document import (Personality, parse_personality, subnet_errors,
                                                      validate_personality)
from controller.features.personality import operations
from controller.features.persona import store as persona_store
from controller.store import AlreadyExists, Document, Store
from controller.core.topology import Subnet as TopologySubnet

from .context import ApiContext, Ctx
from .problems import Problem, field_error, problem_responses, read_document_body

SUBNET, PERSONALITY, INTERFACE = "subnet", "personality", "interface"

Body = Annotated[dict[str, Any], Depends(read_document_body)]
IfMatch = Annotated[str | None, Header(alias="If-Match", description='Revision last read, e.g. "3"')]


# -- documentation models (responses are built from the store, not validated) ----

class StoredSubnet(BaseModel):
    id: str = Field(examples=["seg1"])
    revision: int
    created_at: float
    updated_at: float
    body: Subnet


class StoredPersonality(BaseModel):
    id: str = Field(examples=["web-frontend"])
    revision: int
    created_at: float
    updated_at: float
    body: Personality


class UpdatedPersonality(StoredPersonality):
    operations: list[str] = Field(description="ids of the update operations started by this version")


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve a model schema's local $defs so it can sit inside openapi_extra."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = walk(defs[node["$ref"].rsplit("/", 1)[-1]])
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _request_body(model: type[BaseModel], extra: dict[str, Any]) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())
    schema.setdefault("properties", {}).update(extra)
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "application/yaml": {"schema": schema},
    }}}


_ID_FIELD = {"id": {"type": "string", "description": "Document id (generated when left out)"}}
_REVISION_FIELD = {"revision": {"type": "integer", "description": "Revision last read (or If-Match)"}}


# -- helpers ----------------------------------------------------------------------

def stored(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "revision": doc.revision, "created_at": doc.created_at,
            "updated_at": doc.updated_at, "body": doc.body}


def _answer(doc: Document, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"ETag": f'"{doc.revision}"'}
    if location:
        headers["Location"] = location
    return JSONResponse(stored(doc), status_code=status, headers=headers)


def _invalid(exc: DocumentInvalid, extra: Sequence[dict[str, str]] = ()) -> Problem:
    errors = [*extra, *exc.errors]
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(422, detail=f"invalid {exc.what}: {fields}", errors=errors)


def _validated(what: str, validate: Callable[[], Any], pre_errors: list[dict[str, str]]) -> Any:
    """Run ``validate``; raise one 422 with ``pre_errors`` and its own errors."""
    try:
        result = validate()
    except DocumentInvalid as exc:
        raise _invalid(exc, pre_errors) from None
    if pre_errors:
        raise _invalid(DocumentInvalid([], what), pre_errors)
    return result


def _take_id(body: dict[str, Any]) -> tuple[str | None, list[dict[str, str]]]:
    if "id" not in body:
        return None, []
    value = body.pop("id")
    reason = id_problem(value)
    return (None, [field_error("body.id", reason)]) if reason else (value, [])


def _path_id(body: dict[str, Any], id: str) -> list[dict[str, str]]:
    if "id" in body and body.pop("id") != id:
        return [field_error("body.id", f"does not match the id in the path ({id!r})")]
    return []


_ETAG = re.compile(r'(?:W/)?"?(\d+)"?')


def _expected_revision(body: dict[str, Any] | None, if_match: str | None,
                       required: bool) -> int | None:
    """The revision the client last read, from the body or If-Match."""
    from_body: int | None = None
    if body is not None and "revision" in body:
        value = body.pop("revision")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Problem(422, detail="invalid revision",
                          errors=[field_error("body.revision", "must be a whole number from 1 up")])
        from_body = value
    from_header: int | None = None
    if if_match is not None:
        match = _ETAG.fullmatch(if_match.strip())
        if not match or int(match[1]) < 1:
            raise Problem(422, detail="invalid If-Match header",
                          errors=[field_error("header.if-match", 'must be a revision such as "3"')])
        from_header = int(match[1])
    if from_body is not None and from_header is not None and from_body != from_header:
        raise Problem(422, detail="the body revision and the If-Match header disagree",
                      errors=[field_error("body.revision", f"is {from_body} but If-Match says {from_header}")])
    revision = from_body if from_body is not None else from_header
    if revision is None and required:
        raise Problem(428, detail="send the revision you last read, as body field 'revision' "
                      "or an If-Match header, so a concurrent change is not overwritten",
                      errors=[field_error("body.revision", "is required (or an If-Match header)")])
    return revision


def _journal(store: Store, kind: str, id: str, message: str, revision: int) -> None:
    store.append_event(kind, id, message, {"revision": revision})


def _in_use(kind: str, id: str, users: list[str], by: str) -> Problem:
    return Problem(409, detail=f"{kind} {id!r} is in use by {by} {', '.join(users)}",
                   extra={"kind": kind, "id": id, "used_by": [f"{by}/{u}" for u in users]})


# -- subnets ----------------------------------------------------------------------

subnet_router = APIRouter(prefix="/v1/subnets", tags=["subnets"],
                          responses=problem_responses(404, 422, 500))


@subnet_router.get("", summary="All subnets", responses={200: {"model": list[StoredSubnet]}})
def list_subnets(ctx: Ctx) -> JSONResponse:
    return JSONResponse([stored(d) for d in ctx.store.list(SUBNET)])


@subnet_router.get("/{id}", summary="One subnet", responses={200: {"model": StoredSubnet}})
def get_subnet(id: str, ctx: Ctx) -> JSONResponse:
    return _answer(ctx.store.get(SUBNET, id))


@subnet_router.post("", status_code=201, summary="Create a subnet",
                    responses={201: {"model": StoredSubnet, "description": "Created"},
                               **problem_responses(400, 409, 415)},
                    openapi_extra=_request_body(Subnet, _ID_FIELD))
def create_subnet(body: Body, ctx: Ctx) -> JSONResponse:
    id, pre = _take_id(body)
    with ctx.store.transaction():
        subnet: Subnet = _validated(SUBNET, lambda: parse_subnet(body), pre)
        id = id or subnet_id_from_cidr(subnet.cidr)
        if ctx.store.find(SUBNET, id) is not None:  # a duplicate is 409, not an overlap
            raise AlreadyExists(SUBNET, id)
        _validated(SUBNET, lambda: validate_subnet(body, ctx.store), [])
        _not_claimed_by_persona(ctx, subnet)
        doc = ctx.store.create(SUBNET, id, subnet.stored_body())
        _journal(ctx.store, SUBNET, id, "created", doc.revision)
    ctx.hub.reload_subnets()
    return _answer(doc, 201, f"/v1/subnets/{id}")


@subnet_router.put("/{id}", summary="Replace a subnet",
                   responses={200: {"model": StoredSubnet}, **problem_responses(400, 409, 415, 428)},
                   openapi_extra=_request_body(Subnet, _REVISION_FIELD))
def replace_subnet(id: str, body: Body, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    ctx.store.get(SUBNET, id)
    revision = _expected_revision(body, if_match, required=True)
    pre = _path_id(body, id)
    with ctx.store.transaction():
        subnet: Subnet = _validated(SUBNET, lambda: validate_subnet(body, ctx.store, id=id), pre)
        _check_personalities_fit(ctx, id, subnet)
        _not_claimed_by_persona(ctx, subnet)
        doc = ctx.store.update(SUBNET, id, subnet.stored_body(), revision)
        _journal(ctx.store, SUBNET, id, "updated", doc.revision)
    ctx.hub.reload_subnets()
    return _answer(doc)


def _not_claimed_by_persona(ctx: ApiContext, subnet: Subnet) -> None:
    """A subnet may not take addresses a live persona routes (its range or NAT block)."""
    persona = persona_store.claimed_by(ctx.store, subnet.cidr)
    if persona is not None:
        raise Problem(409, "Addresses in use by a persona",
                      detail=f"{subnet.cidr} overlaps the range or NAT block of persona "
                             f"{persona!r}", errors=[field_error("body.cidr", "overlaps persona "
                                                                f"{persona!r}")])


def _check_personalities_fit(ctx: ApiContext, id: str, subnet: Subnet) -> None:
    """A subnet may not change under the personalities that use it."""
    new = TopologySubnet(id, subnet.cidr, subnet.gateway)
    errors = []
    for doc in _personalities_using(ctx.store, id):
        try:
            personality = parse_personality(doc.body)
        except DocumentInvalid:
            continue
        for field, reason in subnet_errors(personality, new):
            target = "body.gateway" if " is the gateway of " in reason else "body.cidr"
            errors.append(field_error(target, f"personality {doc.id!r} would become invalid: "
                                      f"{field.removeprefix('body.')}: {reason}"))
    if errors:
        raise Problem(409, detail=f"subnet {id!r} is used by personalities whose addresses or "
                      "next hops would no longer fit it", errors=errors,
                      extra={"kind": SUBNET, "id": id})


def _personalities_using(store: Store, subnet_id: str) -> list[Document]:
    return [d for d in store.list(PERSONALITY) if d.body.get("subnet_id") == subnet_id]


@subnet_router.delete("/{id}", summary="Delete an unused subnet",
                      responses={200: {"model": StoredSubnet, "description": "The deleted subnet"},
                                 **problem_responses(409)})
def delete_subnet(id: str, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    revision = _expected_revision(None, if_match, required=False)
    with ctx.store.transaction():
        doc = ctx.store.get(SUBNET, id)
        users = [d.id for d in _personalities_using(ctx.store, id)]
        if users:
            raise _in_use(SUBNET, id, users, PERSONALITY)
        ctx.store.delete(SUBNET, id, revision)
        _journal(ctx.store, SUBNET, id, "deleted", doc.revision)
    ctx.hub.reload_subnets()
    return _answer(doc)


# -- personalities -------------------------------------------------------------------

personality_router = APIRouter(prefix="/v1/personalities", tags=["personalities"],
                               responses=problem_responses(404, 422, 500))


@personality_router.get("", summary="All personalities",
                        responses={200: {"model": list[StoredPersonality]}})
def list_personalities(ctx: Ctx) -> JSONResponse:
    return JSONResponse([stored(d) for d in ctx.store.list(PERSONALITY)])


@personality_router.get("/{id}", summary="One personality", responses={200: {"model": StoredPersonality}})
def get_personality(id: str, ctx: Ctx) -> JSONResponse:
    return _answer(ctx.store.get(PERSONALITY, id))


@personality_router.post("", status_code=201, summary="Create a personality (JSON or YAML)",
                         responses={201: {"model": StoredPersonality, "description": "Created"},
                                    **problem_responses(400, 409, 415)},
                         openapi_extra=_request_body(Personality, _ID_FIELD))
def create_personality(body: Body, ctx: Ctx) -> JSONResponse:
    id, pre = _take_id(body)
    with ctx.store.transaction():
        personality: Personality = _validated(PERSONALITY, lambda: validate_personality(body, ctx.store), pre)
        if id is None:
            id = slugify(personality.name)
            if not id:
                raise Problem(422, detail="cannot derive an id from the name",
                              errors=[field_error("body.name", "has no letters or digits to make an id "
                                                  "from; give an id")])
        doc = ctx.store.create(PERSONALITY, id, personality.stored_body())
        _journal(ctx.store, PERSONALITY, id, "created", doc.revision)
    return _answer(doc, 201, f"/v1/personalities/{id}")


@personality_router.put("/{id}", summary="Replace a personality with a new version",
                        description="Every interface running the personality gets an `update` "
                                    "operation applying the new version; their ids are listed in "
                                    "the answer's `operations` (busy interfaces are skipped and "
                                    "noted in the journal).",
                        responses={200: {"model": UpdatedPersonality}, **problem_responses(400, 409, 415, 428)},
                        openapi_extra=_request_body(Personality, _REVISION_FIELD))
def replace_personality(id: str, body: Body, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    ctx.store.get(PERSONALITY, id)
    revision = _expected_revision(body, if_match, required=True)
    pre = _path_id(body, id)
    with ctx.store.transaction():
        personality: Personality = _validated(PERSONALITY, lambda: validate_personality(body, ctx.store), pre)
        doc = ctx.store.update(PERSONALITY, id, personality.stored_body(), revision)
        _journal(ctx.store, PERSONALITY, id, "updated", doc.revision)
        ops = _update_operations(ctx.store, id, doc.revision)
    if ops:
        ctx.hub.operations_changed()
    return JSONResponse({**stored(doc), "operations": ops}, headers={"ETag": f'"{doc.revision}"'})


def _update_operations(store: Store, id: str, revision: int) -> list[str]:
    """One ``update`` operation per interface running personality ``id`` (busy ones are skipped).

    The coordinator applies the new revision; a busy interface is noted in the
    journal and left to its unfinished operation.
    """
    created = []
    for iface in store.list(INTERFACE):
        if iface.body.get("personality_id") != id:
            continue
        try:
            op = operations.create(store, iface.id, id, kind="update", now=time.time(),
                                   reason=f"personality {id} revision {revision}")
        except operations.Busy as exc:
            store.append_event(PERSONALITY, id, "update skipped: interface busy",
                               {"revision": revision, "interface_id": iface.id,
                                "operation_id": exc.operation_id})
            continue
        created.append(op.id)
    return created


@personality_router.delete("/{id}", summary="Delete a personality no interface uses",
                           responses={200: {"model": StoredPersonality, "description": "The deleted personality"},
                                      **problem_responses(409)})
def delete_personality(id: str, ctx: Ctx, if_match: IfMatch = None) -> JSONResponse:
    revision = _expected_revision(None, if_match, required=False)
    with ctx.store.transaction():
        doc = ctx.store.get(PERSONALITY, id)
        users = [d.id for d in ctx.store.list(INTERFACE)
                 if id in (d.body.get("personality_id"), d.body.get("default_personality_id"))]
        # An unfinished operation may still apply it, or roll back to it.
        ops = [d.id for d in ctx.store.list(operations.KIND)
               if d.body.get("state") not in operations.FINAL
               and id in (d.body.get("to_personality_id"), d.body.get("from_personality_id"))]
        if users or ops:
            by = [f"{what} {', '.join(ids)}" for what, ids in
                  (("interface", users), ("unfinished operation", ops)) if ids]
            raise Problem(409, detail=f"{PERSONALITY} {id!r} is in use by {' and '.join(by)}",
                          extra={"kind": PERSONALITY, "id": id,
                                 "used_by": [f"{INTERFACE}/{u}" for u in users]
                                 + [f"{operations.KIND}/{o}" for o in ops]})
        ctx.store.delete(PERSONALITY, id, revision)
        _journal(ctx.store, PERSONALITY, id, "deleted", doc.revision)
    return _answer(doc)


routers: list[APIRouter] = [subnet_router, personality_router]
