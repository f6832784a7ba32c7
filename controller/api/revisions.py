"""Ids and revisions of stored documents, as a request gives them.

A create may name the document's ``id`` in its body; a replace may repeat the
path's id. The revision last read travels as body field ``revision`` or as an
``If-Match`` header (``"3"``, ``W/"3"`` or ``3``); when both are given they
must agree. The patterns here are the ones the OpenAPI document states.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Path, Query

from controller.core.documents import ID_PATTERN, id_problem, rule

from .problems import Problem, field_error

MAX_REVISION = 2**53
"""The largest revision a request may name (a JSON number every client reads exactly)."""

_NUMBER = r"[1-9][0-9]{0,15}"
IF_MATCH = re.compile(rf'(?:W/)?"({_NUMBER})"|({_NUMBER})')
"""``If-Match``: one revision, quoted (optionally weak) or bare."""

ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$",
                             "examples": ["seg1"]}
REVISION_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_REVISION,
                                   "description": "The revision last read (or send If-Match)"}

DocId = Annotated[str, Path(description="Document id", json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]
"""A path id. An id that breaks the pattern names no document: 404, like any unknown one."""

IfMatch = Annotated[str, Header(alias="If-Match", description='The revision last read, e.g. "3"',
                                json_schema_extra={"pattern": f"^(?:{IF_MATCH.pattern})$"})]
BodyIfMatch = Annotated[str, Header(alias="If-Match", include_in_schema=False)]
"""``If-Match`` where the body's ``revision`` is the documented way (one place for one value:
a schema cannot say that two must agree); accepted all the same."""
DryRun = Annotated[bool, Query(description="Validate and check everything, store nothing", json_schema_extra=rule(
    "where the answer is a preview the hub compiles (a persona's), 422 when the hub cannot "
    "compile it, e.g. no persona gateway is configured"))]


def take_id(body: dict[str, Any]) -> tuple[str | None, list[dict[str, str]]]:
    """Pop a create body's ``id``: (the id or None, errors naming ``body.id``)."""
    if "id" not in body:
        return None, []
    value = body.pop("id")
    reason = id_problem(value)
    return (None, [field_error("body.id", reason)]) if reason else (value, [])


def path_id_errors(body: dict[str, Any], id: str) -> list[dict[str, str]]:
    """Pop a replace body's ``id``; it may only repeat the path's."""
    if "id" in body and body.pop("id") != id:
        return [field_error("body.id", f"does not match the id in the path ({id!r})")]
    return []


def _from_body(body: dict[str, Any] | None) -> int | None:
    if body is None or "revision" not in body:
        return None
    value = body.pop("revision")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REVISION:
        raise Problem(422, detail="invalid revision",
                      errors=[field_error("body.revision", f"must be a whole number from 1 to {MAX_REVISION}")])
    return value


def _from_header(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    match = IF_MATCH.fullmatch(if_match.strip())
    if not match:
        raise Problem(422, detail="invalid If-Match header",
                      errors=[field_error("header.if-match", 'must be one revision such as "3"')])
    return int(match[1] or match[2])


def expected_revision(body: dict[str, Any] | None, if_match: str | None, required: bool) -> int | None:
    """The revision the client last read (popped from ``body``), or None when not given.

    422 for a malformed or contradictory one; 428 when ``required`` and absent.
    """
    from_body, from_header = _from_body(body), _from_header(if_match)
    if from_body is not None and from_header is not None and from_body != from_header:
        raise Problem(422, detail="the body revision and the If-Match header disagree",
                      errors=[field_error("body.revision", f"is {from_body} but If-Match says {from_header}")])
    revision = from_body if from_body is not None else from_header
    if revision is None and required:
        raise Problem(428, detail="send the revision you last read, as body field 'revision' "
                      "or an If-Match header, so a concurrent change is not overwritten",
                      errors=[field_error("body.revision", "is required (or an If-Match header)")])
    return revision
