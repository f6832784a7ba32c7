"""The policy audit trail over REST: ``GET /v1/audit``, read only.

Newest first; ``?limit=N`` (1-1000, default 100) and ``?what=`` (an entry's
``what``, or its kind: ``policy-review`` keeps ``policy-review.approved`` and
``policy-review.denied``).  There is no route that changes or removes an entry
(`audit`).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from controller.api.context import Ctx
from controller.api.problems import problem_responses
from controller.features.policy import audit
from controller.features.policy.document import AuditView

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=problem_responses(500))


@router.get("", summary="The audit trail of policy changes, newest first",
            description="One entry per write of mirroring profiles, policy overrides, review "
                        "decisions and learning sessions: who, when, what, why, and the "
                        "document before and after. Append-only, kept across restarts.",
            responses={200: {"model": list[AuditView]}, **problem_responses(422)})
def list_audit(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
    what: Annotated[str | None, Query(max_length=128, description=(
        'Only entries of this what ("policy-override.created") or kind ("policy-override")'))]
    = None,
) -> JSONResponse:
    return JSONResponse([audit.entry_view(d) for d in audit.entries(ctx.store, what, limit)])
