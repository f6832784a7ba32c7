"""RFC 7807 error model: every API error is an application/problem+json document."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.store import AlreadyExists, NotFound, RevisionConflict

from .models import ProblemDetails

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
JSON_MEDIA_TYPES = frozenset({"application/json"})
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_error(field: str, reason: str) -> dict[str, str]:
    """One entry of a problem's ``errors`` list."""
    return {"field": field, "reason": reason}


class Problem(Exception):
    """Raise from a route to answer with a problem document.

    ``title`` defaults to the HTTP status phrase; ``extra`` adds RFC 7807
    extension members; ``headers`` are added to the response.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        errors: Iterable[Mapping[str, str]] = (),
        *,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.title = title or _phrase(status)
        self.detail = detail
        self.errors = [field_error(e["field"], e["reason"]) for e in errors]
        self.type = type
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {**self.extra, "type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            doc["detail"] = self.detail
        doc["errors"] = self.errors
        return doc

    def response(self) -> JSONResponse:
        return JSONResponse(self.to_dict(), status_code=self.status, headers=self.headers,
                            media_type=PROBLEM_MEDIA_TYPE)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` value documenting problem answers for the given statuses."""
    return {s: {"model": ProblemDetails, "description": _phrase(s)} for s in statuses}


# -- request bodies ----------------------------------------------------------

async def read_document_body(request: Request) -> dict[str, Any]:
    """Parse a JSON or YAML request body that must hold one mapping.

    Raises a 415 Problem for other content types and a 400 Problem for
    empty, undecodable, unparseable or non-mapping bodies.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Problem(400, detail=f"malformed JSON body: {exc}") from exc
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise Problem(400, detail=f"malformed YAML body: {' '.join(str(exc).split())}") from exc
    if not isinstance(doc, dict):
        raise Problem(400, detail=f"request body must be an object, not {type(doc).__name__}")
    return doc


# -- exception handlers ------------------------------------------------------

def _field_name(loc: Sequence[int | str]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "request"


def validation_problem(errors: Sequence[Any]) -> Problem:
    """Turn FastAPI/pydantic validation errors into a 400 or 422 Problem."""
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = str(err.get("ctx", {}).get("error", err.get("msg", "invalid JSON")))
            return Problem(400, detail=f"malformed JSON body: {reason}",
                           errors=[field_error("body", reason)])
    reasons: dict[str, list[str]] = {}
    for err in errors:
        field = _field_name(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        if msg not in reasons.setdefault(field, []):
            reasons[field].append(msg)
    fields = [field_error(f, "; ".join(r)) for f, r in reasons.items()]
    return Problem(422, detail="invalid " + ", ".join(reasons), errors=fields)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response()


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if detail == _phrase(exc.status_code):
        detail = None
    if detail is None and exc.status_code == 404:
        detail = f"no route for {request.url.path}"
    elif detail is None and exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return Problem(exc.status_code, detail=detail, headers=exc.headers).response()


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(exc.errors()).response()


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return Problem(404, detail=f"{exc.kind} {exc.id!r} does not exist",
                   extra={"kind": exc.kind, "id": exc.id}).response()


async def _on_already_exists(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AlreadyExists)
    return Problem(409, detail=f"{exc.kind} {exc.id!r} already exists",
                   extra={"kind": exc.kind, "id": exc.id}).response()


async def _on_revision_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RevisionConflict)
    return Problem(
        409,
        detail=(f"{exc.kind} {exc.id!r} has changed: expected revision {exc.expected}, "
                f"current revision is {exc.actual}"),
        extra={"kind": exc.kind, "id": exc.id,
               "expected_revision": exc.expected, "actual_revision": exc.actual},
    ).response()


class CatchAllMiddleware:
    """Last resort: log any unhandled exception and answer a 500 problem."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = Problem(500, detail="internal error; see the controller log").response()
            await response(scope, receive, send)


def register_problem_handlers(app: FastAPI) -> None:
    """Make every error ``app`` can produce an application/problem+json answer."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(NotFound, _on_not_found)
    app.add_exception_handler(AlreadyExists, _on_already_exists)
    app.add_exception_handler(RevisionConflict, _on_revision_conflict)
    app.add_middleware(CatchAllMiddleware)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an OpenAPI schema so every 4xx/5xx answer is problem+json.

    FastAPI documents extra responses as application/json and adds its own
    422 "HTTPValidationError"; both are replaced by the Problem schema.
    """
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if str(status)[0] in "45":
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    generated = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**generated.pop("$defs", {}), "ProblemDetails": generated}.items():
        components.setdefault(name, definition)
    return schema
