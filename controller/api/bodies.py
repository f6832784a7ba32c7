"""Request bodies: JSON or YAML documents read by hand, and how OpenAPI states them.

Document bodies are not parsed by FastAPI: a route reads the mapping with
``read_document_body`` (so YAML works and a malformed body is a 400 problem)
and validates it with the document's one model. ``request_body`` states that
model in the OpenAPI document, for every media type the route reads.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import Depends, Request
from pydantic import BaseModel

from .problems import Problem

JSON_MEDIA_TYPES = frozenset({"application/json"})
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
MERGE_PATCH = "application/merge-patch+json"
DOCUMENT_MEDIA_TYPES = ("application/json", "application/yaml")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it (many times faster than the pure-Python one)."""


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def integral(value: Any) -> Any:
    """``value`` with every number that has no fractional part as an int: 3.0 is the integer 3,
    as JSON Schema counts it (so a field of type integer takes it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def _mapping(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise Problem(400, detail=f"request body must be an object, not {type(doc).__name__}")
    return integral(doc)


async def read_document_body(request: Request) -> dict[str, Any]:
    """Parse a JSON or YAML request body that must hold one mapping.

    Raises a 415 Problem for other content types and a 400 Problem for
    empty, undecodable, unparseable or non-mapping bodies.
    """
    media_type = _media_type(request)
    if media_type not in JSON_MEDIA_TYPES | YAML_MEDIA_TYPES:
        raise Problem(415, detail=f"content type {media_type or '(none)'!r} is not supported; "
                      "send application/json or application/yaml")
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, detail=f"request body is not UTF-8: {exc.reason}") from exc
    if not text.strip():
        raise Problem(400, detail="request body is empty")
    if media_type in JSON_MEDIA_TYPES:
        try:
            return _mapping(json.loads(text))
        except json.JSONDecodeError as exc:
            raise Problem(400, detail=f"malformed JSON body: {exc}") from exc
    try:
        return _mapping(yaml.load(text, Loader=YAML_LOADER))
    except yaml.YAMLError as exc:
        raise Problem(400, detail=f"malformed YAML body: {' '.join(str(exc).split())}") from exc


async def read_optional_body(request: Request) -> dict[str, Any]:
    """Like ``read_document_body``, but no body (or an empty one) is an empty object."""
    if not (await request.body()).strip():
        return {}
    return await read_document_body(request)


async def read_patch_body(request: Request) -> dict[str, Any]:
    """A merge patch (RFC 7396): ``application/merge-patch+json``, or JSON/YAML like any document."""
    if _media_type(request) != MERGE_PATCH:
        return await read_document_body(request)
    try:
        return _mapping(json.loads((await request.body()).decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, detail=f"malformed merge patch: {exc}") from None


Body = Annotated[dict[str, Any], Depends(read_document_body)]
OptionalBody = Annotated[dict[str, Any], Depends(read_optional_body)]
PatchBody = Annotated[dict[str, Any], Depends(read_patch_body)]


# -- OpenAPI ----------------------------------------------------------------------------

def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model schema with its local ``$defs`` resolved, to sit inside ``openapi_extra``."""
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


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s request schema (what it accepts), self-contained."""
    return inline(model.model_json_schema(mode="validation"))


def as_patch(schema: dict[str, Any]) -> dict[str, Any]:
    """A merge patch (RFC 7396) of ``schema``: nothing required, ``null`` removes an optional
    member, and members that are objects are patches of them."""
    required = set(schema.get("required", ()))

    def member(prop: dict[str, Any]) -> dict[str, Any]:
        if "anyOf" not in prop:
            prop = {"anyOf": [prop]}
        branches = [as_patch(b) if "properties" in b else b
                    for b in prop["anyOf"] if b.get("type") != "null"]
        kept = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**kept, "anyOf": [*branches, {"type": "null"}]}

    properties = {name: prop if name in required else member(prop)
                  for name, prop in schema.get("properties", {}).items()}
    return {**{k: v for k, v in schema.items() if k != "required"}, "properties": properties}


def request_body(schema: dict[str, Any], *, required: bool = True,
                 media_types: tuple[str, ...] = DOCUMENT_MEDIA_TYPES) -> dict[str, Any]:
    """``openapi_extra`` stating the body a route reads by hand."""
    return {"requestBody": {"required": required,
                            "content": {t: {"schema": schema} for t in media_types}}}


def model_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a body validated by ``model`` as it is."""
    return request_body(model_schema(model), required=required)
