"""Reviews of unseen connections over REST: ``/v1/policy-reviews``.

The runtime writes a review (kind `rules.REVIEW`, id ``"<category>:<rule id>"``)
for each new connection shape a category's enforced (or audited) policy refused
(or would have): ``{category, direction, protocol, port, peer, members, count,
first_seen, state: "pending"}``.  REST lists them (pending first, then by first
seen) and decides them:

* ``POST .../{id}/approve {ttl?, reason?}``: ``state: approved``, ``decided_at``,
  ``ttl`` and ``expires_at = decided_at + ttl`` (null: kept);
* ``POST .../{id}/deny {reason?}``: ``state: denied``.

Either is written once: a decided review answers 409.  Each decision is
journaled, recorded in the audit trail and announced as
``documents_changed(rules.REVIEW)``; the runtime makes the category's next
policy version from it.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from controller.api.bodies import OptionalBody, model_body
from controller.api.context import ApiContext, Ctx
from controller.api.crud import view
from controller.api.problems import Problem, field_error, problem_responses
from controller.core.documents import DocumentInvalid, errors_of
from controller.features.policy import audit
from controller.features.policy.document import (REVIEW_STATES, DecisionRequest, DenyRequest,
                                                 ReviewView)
from controller.features.policy.rules import REVIEW
from controller.store import Document

PATH = "/v1/policy-reviews"
ACTOR = "rest"
PENDING, APPROVED, DENIED = REVIEW_STATES

ReviewId = Annotated[str, Path(description='"<category>:<rule id>", e.g. '
                                           "new-web:egress-tcp-22-set-ext",
                               json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                                                  "maxLength": 256})]


def review_view(doc: Document) -> dict[str, Any]:
    b = doc.body
    return {**view(doc), "members": b.get("members") or [], "count": b.get("count") or 0,
            "state": b.get("state", PENDING), "decided_at": b.get("decided_at"),
            "decided_by": b.get("decided_by"), "ttl": b.get("ttl"),
            "expires_at": b.get("expires_at")}


def ordered(docs: list[Document]) -> list[Document]:
    """Pending first, then the earliest seen, then by id."""
    return sorted(docs, key=lambda d: (d.body.get("state", PENDING) != PENDING,
                                       float(d.body.get("first_seen") or 0.0), d.id))


def _parsed(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), REVIEW) from None


def decide(ctx: ApiContext, rid: str, state: str, ttl: int | None,
           reason: str | None) -> Document:
    """Write one decision (journal and audit entries in its transaction); 404, 409."""
    now = time.time()
    with ctx.store.transaction():
        prior = ctx.store.get(REVIEW, rid)
        current = prior.body.get("state", PENDING)
        if current != PENDING:
            raise Problem(409, "Already decided",
                          detail=f"review {rid!r} is {current} "
                                 f"(at {prior.body.get('decided_at')}); a review is decided once",
                          errors=[field_error("path.id", f"is {current}")],
                          extra={"review_id": rid, "state": current})
        doc = ctx.store.update(REVIEW, rid, {
            **prior.body, "state": state, "decided_at": now, "decided_by": ACTOR, "ttl": ttl,
            "expires_at": now + ttl if ttl is not None else None}, prior.revision)
        ctx.store.append_event(REVIEW, rid, state, {"ttl": ttl})
        audit.record(ctx.store, ACTOR, f"{REVIEW}.{state}", reason, review_view(prior),
                     review_view(doc), now, subject=rid)
    ctx.hub.documents_changed(REVIEW)
    return doc


router = APIRouter(prefix=PATH, tags=["policy reviews"], responses=problem_responses(500))


@router.get("", summary="Reviews of unseen connections, pending first",
            description="Each new connection shape a mirrored policy refused (enforce) or "
                        "would have refused (audit), once per rule key, with the members that "
                        "tried it and how often.",
            responses={200: {"model": list[ReviewView]}, **problem_responses(422)})
def list_reviews(
    ctx: Ctx,
    category: Annotated[str | None, Query(max_length=64,
                                          description="only this category's")] = None,
    state: Annotated[Literal[REVIEW_STATES] | None,  # type: ignore[valid-type]
                     Query(description="only in this state")] = None,
) -> JSONResponse:
    docs = [d for d in ctx.store.list(REVIEW)
            if (category is None or d.body.get("category") == category)
            and (state is None or d.body.get("state", PENDING) == state)]
    return JSONResponse([review_view(d) for d in ordered(docs)])


@router.get("/{id}", summary="One review",
            responses={200: {"model": ReviewView}, **problem_responses(404)})
def get_review(id: ReviewId, ctx: Ctx) -> JSONResponse:
    return JSONResponse(review_view(ctx.store.get(REVIEW, id)))


@router.post("/{id}/approve", summary="Approve an unseen connection",
             description="The category's policy allows it from its next version, for every "
                         "interface mirrored from it; `ttl` (seconds or \"1h\") makes the "
                         "allowance temporary. 409 when the review is already decided.",
             responses={200: {"model": ReviewView},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(DecisionRequest, required=False))
def approve_review(id: ReviewId, body: OptionalBody, ctx: Ctx) -> JSONResponse:
    request = _parsed(DecisionRequest, body)
    return JSONResponse(review_view(decide(ctx, id, APPROVED, request.ttl, request.reason)))


@router.post("/{id}/deny", summary="Deny an unseen connection",
             description="It stays refused and leaves the pending queue. 409 when the review "
                         "is already decided.",
             responses={200: {"model": ReviewView},
                        **problem_responses(400, 404, 409, 415, 422)},
             openapi_extra=model_body(DenyRequest, required=False))
def deny_review(id: ReviewId, body: OptionalBody, ctx: Ctx) -> JSONResponse:
    request = _parsed(DenyRequest, body)
    return JSONResponse(review_view(decide(ctx, id, DENIED, None, request.reason)))
