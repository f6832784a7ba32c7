"""One CRUD layer for stored documents: every kind of intent is served the same way.

A ``DocumentKind`` says what is particular to one kind: its store kind, its
collection path, the one model that parses its documents, how an id is
derived, and hooks (checks that read the store, inside the write's
transaction). ``crud_router(kind)`` serves::

    GET    {path}        every document (optionally filtered by body fields)
    GET    {path}/{id}   one document
    POST   {path}        create: 201 + Location; id from the body, else derived
    PUT    {path}/{id}   replace: needs the revision last read (428 without)
    PATCH  {path}/{id}   RFC 7396 merge patch (kinds with ``merge_patch``)
    DELETE {path}/{id}   delete

Every write reads a JSON or YAML body, validates it (422 naming every bad
field, nothing stored), and runs in one store transaction: the kind's checks,
the claims check (``controller.core.claims.check_write``, before the write),
the write and its journal entry. A stale revision
(body ``revision`` or ``If-Match``, on PUT, PATCH and DELETE alike) is 409.
After the commit the hub hears ``documents_changed(kind)``. With
``?dry_run=true`` all of it runs and is rolled back: the answer (200) shows
what would be stored, and nothing is announced.

Every stored document is answered flat, ``view(doc)``:
``{id, revision, created_at, updated_at, ...body}``, with ``ETag: "<revision>"``,
and whatever the kind's ``shown(ctx, doc)`` adds (state its runtime keeps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError, create_model

from controller.core import claims
from controller.core.documents import DocumentInvalid, DocumentModel, errors_of, merge_patch
from controller.store import AlreadyExists, Document, Store

from .bodies import MERGE_PATCH, Body, PatchBody, as_patch, model_schema, request_body
from .context import ApiContext, Ctx
from .problems import Problem, invalid, problem_responses
from .revisions import (ID_SCHEMA, REVISION_SCHEMA, BodyIfMatch, DocId, DryRun, IfMatch,
                        expected_revision, path_id_errors, take_id)


# -- the shape of a stored document -------------------------------------------------------

META = ("id", "revision", "created_at", "updated_at")


def view(doc: Document) -> dict[str, Any]:
    """A stored document as the API answers it: ``{id, revision, created_at, updated_at, ...body}``."""
    return {"id": doc.id, "revision": doc.revision, "created_at": doc.created_at,
            "updated_at": doc.updated_at, **{k: v for k, v in doc.body.items() if k not in META}}


def answer(doc: Document, status: int = 200, location: str | None = None,
           extra: dict[str, Any] | None = None) -> JSONResponse:
    headers = {"ETag": f'"{doc.revision}"'}
    if location:
        headers["Location"] = location
    return JSONResponse({**view(doc), **(extra or {})}, status_code=status, headers=headers)


class StoredMeta(BaseModel):
    id: str
    revision: int
    created_at: float
    updated_at: float


def stored_model(model: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """The documentation model of ``view(doc)`` for documents of ``model``."""
    return create_model(name or f"Stored{model.__name__}", __base__=(StoredMeta, model))


# -- what a kind says -----------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """A list query parameter: only documents whose body field ``name`` is ``value``."""
    name: str
    values: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Change:
    """One write as a kind's hooks see it, inside the store transaction."""
    ctx: ApiContext
    id: str | None           # the path's id, a create body's id, or None (derive one)
    body: dict[str, Any]     # the request body without id and revision (a patch: merged)
    prior: Document | None   # what is stored now; None for a create
    now: float

    @property
    def store(self) -> Store:
        return self.ctx.store


@dataclass(frozen=True)
class Written:
    """What a write stored (for a delete: what it removed)."""
    document: Document
    extra: dict[str, Any] = field(default_factory=dict)   # answer members beyond the document
    changed: tuple[str, ...] = ()                         # kinds announced besides this one


class DocumentKind:
    """One kind of stored document; the defaults serve a document stored as its model dumps it."""

    kind: ClassVar[str]                  # store kind, journal kind, ``documents_changed`` kind
    path: ClassVar[str]                  # the collection, e.g. "/v1/subnets"
    model: ClassVar[type[DocumentModel]]  # the one model that parses a document
    tag: ClassVar[str]
    plural: ClassVar[str]
    merge_patch: ClassVar[bool] = False
    filters: ClassVar[tuple[Filter, ...]] = ()
    stored: ClassVar[type[BaseModel] | None] = None       # documentation of view(doc)
    created: ClassVar[type[BaseModel] | None] = None      # ... of a create's answer
    replaced: ClassVar[type[BaseModel] | None] = None     # ... of a replace's answer
    previewed: ClassVar[type[BaseModel] | None] = None    # ... of a create's dry run
    descriptions: ClassVar[dict[str, str]] = {}           # route name -> description

    # -- parsing and checks
    def parse(self, change: Change) -> Any:
        """The document ``change.body`` holds; DocumentInvalid names every bad field."""
        try:
            return self.model.model_validate(change.body)
        except ValidationError as exc:
            raise DocumentInvalid(errors_of(exc), self.kind) from None

    def derive_id(self, document: Any) -> str:
        """The id of a created document that names none."""
        raise DocumentInvalid([("body.id", "is required")], self.kind)

    def stored_body(self, document: Any) -> dict[str, Any]:
        body: dict[str, Any] = document.stored_body()
        return body

    def check(self, change: Change, document: Any) -> None:
        """Rules that read the store, before a create or replace is written."""

    def check_delete(self, change: Change) -> None:
        """Rules that read the store, before a delete."""

    def patch_target(self, prior: Document) -> dict[str, Any]:
        """What a merge patch applies to."""
        return prior.body

    def shown(self, ctx: ApiContext, doc: Document) -> dict[str, Any]:
        """Members every answer adds to a stored document (what a runtime keeps of it)."""
        return {}

    # -- writes (inside the transaction)
    def journal(self, store: Store, doc: Document, message: str) -> None:
        store.append_event(self.kind, doc.id, message, {"revision": doc.revision})

    def create(self, change: Change) -> Written:
        document = self.parse(change)
        id = change.id or self.derive_id(document)
        if change.store.find(self.kind, id) is not None:  # a taken id is 409 before any other rule
            raise AlreadyExists(self.kind, id)
        change = replace(change, id=id)
        self.check(change, document)
        body = self.stored_body(document)
        claims.check_write(change.store, self.kind, id, body)
        doc = change.store.create(self.kind, id, body)
        self.journal(change.store, doc, "created")
        return Written(doc)

    def replace(self, change: Change, revision: int | None) -> Written:
        document = self.parse(change)
        self.check(change, document)
        assert change.id is not None
        body = self.stored_body(document)
        claims.check_write(change.store, self.kind, change.id, body)
        doc = change.store.update(self.kind, change.id, body, revision)
        self.journal(change.store, doc, "updated")
        return Written(doc)

    def delete(self, change: Change, revision: int | None) -> Written:
        assert change.prior is not None
        self.check_delete(change)
        claims.check_write(change.store, self.kind, change.prior.id, None)
        change.store.delete(self.kind, change.prior.id, revision)
        self.journal(change.store, change.prior, "deleted")
        return Written(change.prior)

    # -- answers
    def location(self, id: str) -> str:
        return f"{self.path}/{id}"

    def dry_run_answer(self, ctx: ApiContext, written: Written, created: bool) -> JSONResponse:
        """The answer to a dry run (``created``: of a create): what would be stored
        (the store was rolled back)."""
        return JSONResponse({**view(written.document), **self.shown(ctx, written.document),
                             **written.extra})


# -- running a write ------------------------------------------------------------------------

class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""

    def __init__(self, written: Written) -> None:
        super().__init__("dry run")
        self.written = written


def _refuse(kind: DocumentKind, change: Change, pre: list[dict[str, str]]) -> None:
    """422 for errors found before validation, with the document's own errors."""
    if not pre:
        return
    try:
        kind.parse(change)
    except DocumentInvalid as exc:
        raise invalid(exc, pre) from None
    raise invalid(DocumentInvalid([], kind.kind), pre)


def _dry_or_commit(ctx: ApiContext, kind: DocumentKind, write: Callable[[], Written],
                   dry_run: bool) -> tuple[Written, bool]:
    """Run ``write`` in one store transaction: (what it wrote, whether it was rolled back).

    A committed write is announced to the hub (its kind and any ``changed``).
    """
    try:
        with ctx.store.transaction():
            written = write()
            if dry_run:
                raise _DryRun(written)
    except _DryRun as rolled_back:
        return rolled_back.written, True
    for changed in dict.fromkeys((kind.kind, *written.changed)):
        ctx.hub.documents_changed(changed)
    return written, False


# -- the router -------------------------------------------------------------------------------

def _schema_with(kind: DocumentKind, required: tuple[str, ...] = (), **extra: dict[str, Any]) -> dict[str, Any]:
    schema = model_schema(kind.model)
    schema["properties"] = {**schema.get("properties", {}), **extra}
    if required:
        schema["required"] = [*schema.get("required", ()), *required]
    return schema


def _filter_parameters(kind: DocumentKind) -> dict[str, Any]:
    return {"parameters": [{"name": f.name, "in": "query", "required": False,
                            "description": f.description,
                            "schema": {"type": "string", "enum": list(f.values)}}
                           for f in kind.filters]}


def _filtered(kind: DocumentKind, request: Request, docs: list[Document]) -> list[Document]:
    for f in kind.filters:
        value = request.query_params.get(f.name)
        if value is None:
            continue
        if value not in f.values:
            raise Problem(422, detail=f"invalid query.{f.name}", errors=[{
                "field": f"query.{f.name}",
                "reason": f"{value!r} is not allowed; use one of {', '.join(f.values)}"}])
        docs = [d for d in docs if d.body.get(f.name) == value]
    return docs


def _described(kind: DocumentKind, route: str, common: str) -> str:
    return " ".join(filter(None, (kind.descriptions.get(route), common)))


def crud_router(kind: DocumentKind) -> APIRouter:
    """The routes of ``kind``'s collection (see the module docstring)."""
    stored = kind.stored or stored_model(kind.model)
    router = APIRouter(prefix=kind.path, tags=[kind.tag], responses=problem_responses(500))
    one = kind.model.__name__.lower()
    write_problems = problem_responses(400, 409, 415, 422)

    listed: dict[int | str, dict[str, Any]] = {200: {"model": list[stored]}}  # type: ignore[valid-type]
    if kind.filters:
        listed.update(problem_responses(422))

    @router.get("", summary=f"All {kind.plural}", responses=listed,
                openapi_extra=_filter_parameters(kind) if kind.filters else None)
    def list_documents(request: Request, ctx: Ctx) -> JSONResponse:
        return JSONResponse([{**view(d), **kind.shown(ctx, d)}
                             for d in _filtered(kind, request, ctx.store.list(kind.kind))])

    @router.get("/{id}", summary=f"One {one}",
                responses={200: {"model": stored}, **problem_responses(404)})
    def get_document(id: DocId, ctx: Ctx) -> JSONResponse:
        doc = ctx.store.get(kind.kind, id)
        return answer(doc, extra=kind.shown(ctx, doc))

    @router.post("", status_code=201, summary=f"Create a {one} (JSON or YAML)",
                 description=kind.descriptions.get("create", ""),
                 responses={201: {"model": kind.created or stored, "description": "Created"},
                            200: {"model": kind.previewed or kind.created or stored,
                                  "description": "Dry run: what would be stored; nothing is"},
                            **write_problems},
                 openapi_extra=request_body(_schema_with(kind, id=ID_SCHEMA)))
    def create_document(body: Body, ctx: Ctx, dry_run: DryRun = False) -> JSONResponse:
        given, pre = take_id(body)
        change = Change(ctx, given, body, None, time.time())
        _refuse(kind, change, pre)
        written, dry = _dry_or_commit(ctx, kind, lambda: kind.create(change), dry_run)
        if dry:
            return kind.dry_run_answer(ctx, written, created=True)
        return answer(written.document, 201, kind.location(written.document.id),
                      {**kind.shown(ctx, written.document), **written.extra})

    def _update(id: str, body: dict[str, Any], ctx: ApiContext, if_match: str | None,
                dry_run: bool, patch: bool) -> JSONResponse:
        prior = ctx.store.get(kind.kind, id)
        revision = expected_revision(body, if_match, required=not patch)
        pre = path_id_errors(body, id)
        if patch:
            body = merge_patch(kind.patch_target(prior), body)
        change = Change(ctx, id, body, prior, time.time())
        _refuse(kind, change, pre)
        written, dry = _dry_or_commit(ctx, kind, lambda: kind.replace(change, revision), dry_run)
        if dry:
            return kind.dry_run_answer(ctx, written, created=False)
        return answer(written.document, extra={**kind.shown(ctx, written.document), **written.extra})

    @router.put("/{id}", summary=f"Replace a {one}",
                description=_described(kind, "replace", "The body's `revision` is the revision last read "
                                       "(or send it as If-Match instead); a stale one is 409."),
                responses={200: {"model": kind.replaced or stored},
                           **write_problems, **problem_responses(404, 428)},
                openapi_extra=request_body(_schema_with(kind, ("revision",), revision=REVISION_SCHEMA)))
    def replace_document(id: DocId, body: Body, ctx: Ctx, if_match: BodyIfMatch = None,  # type: ignore[assignment]
                         dry_run: DryRun = False) -> JSONResponse:
        return _update(id, body, ctx, if_match, dry_run, patch=False)

    if kind.merge_patch:
        patch_schema = as_patch(model_schema(kind.model))
        patch_schema["properties"]["revision"] = REVISION_SCHEMA  # not null: given, or left out

        @router.patch("/{id}", summary=f"Change a {one} (JSON merge patch)",
                      description=_described(kind, "patch", "`revision`, when given (in the body, or "
                                             "as If-Match), must be the current one (409)."),
                      responses={200: {"model": kind.replaced or stored},
                                 **write_problems, **problem_responses(404)},
                      openapi_extra=request_body(patch_schema, media_types=(
                          "application/json", "application/yaml", MERGE_PATCH)))
        def patch_document(id: DocId, body: PatchBody, ctx: Ctx, if_match: BodyIfMatch = None,  # type: ignore[assignment]
                           dry_run: DryRun = False) -> JSONResponse:
            return _update(id, body, ctx, if_match, dry_run, patch=True)

    @router.delete("/{id}", summary=f"Delete a {one}",
                   description=_described(kind, "delete", "If-Match, when given, must be the current "
                                          "revision (409)."),
                   responses={200: {"model": stored, "description": f"The deleted {one}"},
                              **problem_responses(404, 409, 422)})
    def delete_document(id: DocId, ctx: Ctx, if_match: IfMatch = None,  # type: ignore[assignment]
                        dry_run: DryRun = False) -> JSONResponse:
        revision = expected_revision(None, if_match, required=False)

        def write() -> Written:
            prior = ctx.store.get(kind.kind, id)
            return kind.delete(Change(ctx, id, {}, prior, time.time()), revision)

        written, dry = _dry_or_commit(ctx, kind, write, dry_run)
        return answer(written.document, extra={**kind.shown(ctx, written.document), **written.extra})

    return router
