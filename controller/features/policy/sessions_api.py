"""Learning sessions over REST: ``/v1/learning-sessions``.

``POST {category, duration?}`` stores a session (kind `rules.SESSION`) in state
``learning``; the runtime observes every member of the category while it runs
(members that get the category later too; a category with no member yet is
fine).  Without a duration it runs until ``POST .../{id}/stop``; with one, the
runtime stops it when the duration is over.  One session per category runs at a
time (409).  Stopping writes ``state: stopped``; the runtime then reads the
records one last time and makes the category's next policy version (its number
is the session's ``policy_version``).  A stopped session's stop is 409.  Starting
and stopping are each recorded in the audit trail (`audit`), before and after.

The runtime writes ``progress: {members, connections, rules}`` into the session;
before it does, the answers show zeros.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from controller.api.bodies import Body, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.crud import answer, view
from controller.api.problems import Problem, field_error, problem_responses
from controller.api.revisions import ID_SCHEMA
from controller.core.documents import DocumentInvalid, errors_of
from controller.features.policy import audit
from controller.features.policy.document import STATES, LearningRequest, SessionView
from controller.features.policy.rules import SESSION
from controller.store import Document, Store

PATH = "/v1/learning-sessions"
LEARNING, STOPPED = STATES
NO_PROGRESS = {"members": 0, "connections": 0, "rules": 0}

SessionId = Annotated[str, Path(description="Session id, e.g. web-1",
                                json_schema_extra={"pattern": ID_SCHEMA["pattern"]})]


def session_view(doc: Document) -> dict[str, Any]:
    """A session as the API answers it: every member shown, zeros before any progress."""
    b = doc.body
    return {**view(doc), "duration": b.get("duration"), "ends_at": b.get("ends_at"),
            "stopped_at": b.get("stopped_at"), "stopped_by": b.get("stopped_by"),
            "progress": {**NO_PROGRESS, **(b.get("progress") or {})},
            "policy_version": b.get("policy_version")}


def running(doc: Document, now: float) -> bool:
    """Learning, and its duration (if any) not over."""
    ends = doc.body.get("ends_at")
    return doc.body.get("state") == LEARNING and (ends is None or ends > now)


def _new_id(store: Store, category: str) -> str:
    """"<category>-<n>", the first n free (the category cut so the id fits 64 characters)."""
    n = 1
    while store.find(SESSION, sid := f"{category[:56]}-{n}") is not None:
        n += 1
    return sid


def start(ctx: ApiContext, body: dict[str, Any]) -> Document:
    """Store a new learning session (one transaction); 409 while the category has one."""
    try:
        request = LearningRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "learning session") from None
    now = time.time()
    with ctx.store.transaction():
        busy = [d.id for d in ctx.store.list(SESSION)
                if d.body.get("category") == request.category and running(d, now)]
        if busy:
            raise Problem(409, "Already learning",
                          detail=f"category {request.category!r} is being learned by session "
                                 f"{busy[0]!r}; stop it first (POST {PATH}/{busy[0]}/stop)",
                          errors=[field_error("body.category",
                                              f"session {busy[0]} is learning it")],
                          extra={"session_id": busy[0]})
        sid = _new_id(ctx.store, request.category)
        doc = ctx.store.create(SESSION, sid, {
            "category": request.category, "duration": request.duration, "state": LEARNING,
            "started_at": now,
            "ends_at": now + request.duration if request.duration is not None else None})
        ctx.store.append_event(SESSION, sid, "created", {"category": request.category,
                                                         "duration": request.duration})
        audit.record(ctx.store, "rest", f"{SESSION}.started", None, None, session_view(doc),
                     now, subject=sid)
    ctx.hub.documents_changed(SESSION)
    return doc


def stop(ctx: ApiContext, sid: str) -> Document:
    with ctx.store.transaction():
        doc = ctx.store.get(SESSION, sid)
        if doc.body.get("state") != LEARNING:
            raise Problem(409, "Not learning",
                          detail=f"learning session {sid!r} is {doc.body.get('state')}, not "
                                 "learning",
                          errors=[field_error("path.id", f"is {doc.body.get('state')}")],
                          extra={"session_id": sid, "state": doc.body.get("state")})
        prior = doc
        doc = ctx.store.update(SESSION, sid, {**doc.body, "state": STOPPED,
                                              "stopped_at": time.time(), "stopped_by": "rest"},
                               doc.revision)
        ctx.store.append_event(SESSION, sid, "stopped", {"category": doc.body["category"]})
        audit.record(ctx.store, "rest", f"{SESSION}.stopped", None, session_view(prior),
                     session_view(doc), doc.body["stopped_at"], subject=sid)
    ctx.hub.documents_changed(SESSION)
    return doc


# -- the routes --------------------------------------------------------------------------

router = APIRouter(prefix=PATH, tags=["learning sessions"], responses=problem_responses(500))


@router.post("", status_code=201, summary="Start learning a category",
             description="Every member of the category is observed over OpenFlow (conntrack "
                         "says who opened each connection) until the session is stopped or its "
                         "duration is over. 409 while another session learns the category.",
             responses={201: {"model": SessionView, "description": "Created"},
                        **problem_responses(400, 409, 415, 422)},
             openapi_extra=model_body(LearningRequest))
def start_session(body: Body, ctx: Ctx) -> JSONResponse:
    doc = start(ctx, body)
    return JSONResponse(session_view(doc), status_code=201,
                        headers={"Location": f"{PATH}/{doc.id}", "ETag": f'"{doc.revision}"'})


@router.get("", summary="Learning sessions, oldest first, with their progress",
            responses={200: {"model": list[SessionView]}, **problem_responses(422)})
def list_sessions(
    ctx: Ctx,
    category: Annotated[str | None, Query(description="only this category's")] = None,
    state: Annotated[Literal[STATES] | None,  # type: ignore[valid-type]
                     Query(description="only in this state")] = None,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(SESSION)
            if (category is None or d.body.get("category") == category)
            and (state is None or d.body.get("state") == state)]
    docs.sort(key=lambda d: (d.body.get("started_at") or d.created_at, d.id))
    return JSONResponse([session_view(d) for d in docs])


@router.get("/{id}", summary="One learning session, with its progress",
            responses={200: {"model": SessionView}, **problem_responses(404)})
def get_session(id: SessionId, ctx: Ctx) -> JSONResponse:
    doc = ctx.store.get(SESSION, id)
    return answer(doc, extra=session_view(doc))


@router.post("/{id}/stop", summary="Stop a learning session",
             description="The runtime reads the records one last time and makes the "
                         "category's next policy version (the session's policy_version). "
                         "409 when it is not learning.",
             responses={200: {"model": SessionView}, **problem_responses(404, 409)})
def stop_session(id: SessionId, ctx: Ctx) -> JSONResponse:
    doc = stop(ctx, id)
    return answer(doc, extra=session_view(doc))
