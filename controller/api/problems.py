"""RFC 7807 error model: every API error is an application/problem+json document."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.core.claims import INTERFACE, ClaimConflict
from controller.core.documents import DocumentInvalid
from controller.store import AlreadyExists, NotFound, RevisionConflict

from .models import ProblemDetails

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


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


def invalid(exc: DocumentInvalid, pre: Iterable[Mapping[str, str]] = ()) -> Problem:
    """A 422 naming every bad field: ``pre`` (found before validation, e.g. a bad id) first."""
    errors = [*pre, *exc.errors]
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(422, detail=f"invalid {exc.what}: {fields}" if fields else f"invalid {exc.what}",
                   errors=errors)


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


def _path_methods(app: Any) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """Each documented path as a regex, with the methods documented for it (cached)."""
    cached = getattr(app.state, "path_methods", None)
    if cached is None:
        cached = []
        for template, item in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = frozenset(m.upper() for m in item if m.upper() in HTTP_METHODS)
            cached.append((re.compile(pattern), methods))
        app.state.path_methods = cached
    return cached


def allowed_methods(request: Request, refused_by: str = "") -> list[str]:
    """Every method the app serves at the request's path: those documented for any
    path that matches it, and those of the route that refused the request."""
    methods = {m.strip() for m in refused_by.split(",") if m.strip()}
    for pattern, documented in _path_methods(request.app):
        if pattern.fullmatch(request.url.path):
            methods |= documented
    return sorted(methods)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    headers = dict(exc.headers or {})
    if detail == _phrase(exc.status_code):
        detail = None
    if detail is None and exc.status_code == 404:
        detail = f"no route for {request.url.path}"
    elif exc.status_code == 405:
        # One route per method: the route that refused knows only its own.
        headers["Allow"] = ", ".join(allowed_methods(request, headers.get("Allow", "")))
        detail = detail or f"{request.method} is not allowed on {request.url.path}"
    return Problem(exc.status_code, detail=detail, headers=headers).response()


async def _on_document_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DocumentInvalid)
    return invalid(exc).response()


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


async def _on_claim_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClaimConflict)
    extra = {"owner": exc.owner, f"{exc.owner_kind}_id": exc.owner_id}
    if exc.claim is not None and exc.claim.space == INTERFACE:
        extra["interface_id"] = exc.claim.key
    return Problem(409, "Claimed", detail=exc.message,
                   errors=[field_error(exc.field, exc.reason or exc.message)], extra=extra).response()


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
    app.add_exception_handler(DocumentInvalid, _on_document_invalid)
    app.add_exception_handler(NotFound, _on_not_found)
    app.add_exception_handler(AlreadyExists, _on_already_exists)
    app.add_exception_handler(RevisionConflict, _on_revision_conflict)
    app.add_exception_handler(ClaimConflict, _on_claim_conflict)
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
