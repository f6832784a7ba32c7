"""Interface records: discovered host-facing ports (the features keep their own fields on them).

``PATCH /v1/interfaces/{id}`` is a merge patch of what a user may change on a
record: its ``categories`` (user-defined names, kept when discovery refreshes
the record).  ``GET`` shows them (``[]`` for a record without any).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import (AfterValidator, BeforeValidator, Field, ValidationError,
                      WithJsonSchema)

from controller.core import claims, interfaces
from controller.core.documents import DocumentInvalid, DocumentModel, errors_of, fail
from controller.store import Document, RevisionConflict

from .bodies import MERGE_PATCH, PatchBody, as_patch, model_schema, request_body
from .context import Ctx
from .crud import StoredMeta, answer, view
from .problems import invalid, problem_responses
from .revisions import REVISION_SCHEMA, BodyIfMatch, expected_revision, path_id_errors

INTERFACE_ID = interfaces.ID_PATTERN

InterfaceId = Annotated[str, Path(description='"<datapath>:<port>", e.g. 0000000000000a01:2',
                                  json_schema_extra={"pattern": INTERFACE_ID})]
"""A path interface id; one that breaks the pattern names no interface (404)."""


# -- categories -----------------------------------------------------------------------------

def parse_category(value: Any) -> str:
    """A category's name as given, or refused with the rule it breaks."""
    if not isinstance(value, str):
        fail("must be a category name written as text, such as web")
    if not re.fullmatch(interfaces.CATEGORY_PATTERN, value):
        fail(f"{value!r} is not a category name: 1-64 lower-case letters, digits, '_', '.' "
             "or '-', starting with a letter or digit")
    return value


def distinct(values: list[Any]) -> list[Any]:
    """``values`` if no value is listed twice, else refused naming the first repeated one."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            fail(f"{value} is listed more than once")
        seen.add(value)
    return values


Category = Annotated[str, BeforeValidator(parse_category),
                     WithJsonSchema({"type": "string", "pattern": interfaces.CATEGORY_PATTERN,
                                     "examples": ["web"]})]
"""A category's name (`interfaces.CATEGORY_PATTERN`)."""

Categories = Annotated[list[Category], AfterValidator(distinct),
                       Field(max_length=64, json_schema_extra={"uniqueItems": True})]
"""Distinct category names."""


class InterfacePatch(DocumentModel):
    """What ``PATCH /v1/interfaces/{id}`` may change; ``null`` removes it."""
    categories: Categories | None = Field(
        default=None, description="The interface's categories, all of them (a merge patch "
                                  "replaces the list); null or []: none")


class InterfaceRecord(StoredMeta):
    """An interface record (features add their own fields)."""
    datapath: str
    port: int
    mac: str
    ips: list[str]
    categories: list[str] = Field(description="User-defined; [] when it has none")


def interface_view(doc: Document) -> dict[str, Any]:
    return {**view(doc), "categories": list(doc.body.get("categories") or [])}


# -- the routes ----------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["interfaces"], responses=problem_responses(500))


@router.get("/interfaces", summary="All interface records",
            responses={200: {"model": list[InterfaceRecord]}})
def list_interfaces(
    ctx: Ctx,
    category: Annotated[str | None, Query(description="only the interfaces with this category")]
    = None,
) -> JSONResponse:
    return JSONResponse([interface_view(d) for d in ctx.store.list(interfaces.KIND)
                         if category is None or category in (d.body.get("categories") or ())])


@router.get("/interfaces/{id}", summary="One interface record",
            responses={200: {"model": InterfaceRecord}, **problem_responses(404)})
def get_interface(id: InterfaceId, ctx: Ctx) -> JSONResponse:
    doc = ctx.store.get(interfaces.KIND, id)
    return answer(doc, extra={"categories": interface_view(doc)["categories"]})


_PATCH_SCHEMA = as_patch(model_schema(InterfacePatch))
_PATCH_SCHEMA["properties"]["revision"] = REVISION_SCHEMA


@router.patch("/interfaces/{id}", summary="Change an interface's categories (JSON merge patch)",
              description="`categories` replaces the interface's categories (null or []: none). "
                          "`revision`, when given (in the body, or as If-Match), must be the "
                          "current one (409). Discovery keeps the categories when it refreshes "
                          "the record.",
              responses={200: {"model": InterfaceRecord},
                         **problem_responses(400, 404, 409, 415, 422)},
              openapi_extra=request_body(_PATCH_SCHEMA, media_types=(
                  "application/json", "application/yaml", MERGE_PATCH)))
def patch_interface(id: InterfaceId, body: PatchBody, ctx: Ctx,
                    if_match: BodyIfMatch = None) -> JSONResponse:  # type: ignore[assignment]
    ctx.store.get(interfaces.KIND, id)
    revision = expected_revision(body, if_match, required=False)
    pre = path_id_errors(body, id)
    try:
        patch = InterfacePatch.model_validate(body)
    except ValidationError as exc:
        raise invalid(DocumentInvalid(errors_of(exc), "interface"), pre) from None
    if pre:
        raise invalid(DocumentInvalid([], "interface"), pre)
    with ctx.store.transaction():
        doc = ctx.store.get(interfaces.KIND, id)
        new = dict(doc.body)
        if "categories" in body:
            new["categories"] = list(patch.categories or [])
        if new == doc.body:
            if revision is not None and revision != doc.revision:
                raise RevisionConflict(interfaces.KIND, id, revision, doc.revision)
            written = doc
        else:
            claims.check_write(ctx.store, interfaces.KIND, id, new)
            written = ctx.store.update(interfaces.KIND, id, new, revision)
            ctx.store.append_event(interfaces.KIND, id, "updated",
                                   {"revision": written.revision,
                                    "categories": new.get("categories", [])})
    if written is not doc:
        ctx.hub.documents_changed(interfaces.KIND)
    return answer(written, extra={"categories": interface_view(written)["categories"]})
