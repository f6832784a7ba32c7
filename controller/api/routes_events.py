"""The event journal, paged by sequence number."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .context import Ctx
from .models import EventPage
from .problems import problem_responses

router = APIRouter(prefix="/v1", tags=["events"], responses=problem_responses(422, 500))


@router.get("/events", response_model=EventPage, summary="Journal entries after a sequence number")
def list_events(
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only entries with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    kind: Annotated[str | None, Query(description="Only this event kind")] = None,
    subject: Annotated[str | None, Query(description="Only this subject")] = None,
    newest: Annotated[bool, Query(description="The last `limit` entries (still in ascending "
                                              "order) instead of the first")] = False,
) -> dict[str, Any]:
    events = ctx.store.events(after=after, limit=limit, kind=kind or None,
                              subject=subject or None, newest=newest)
    return {
        "items": [e.to_dict() for e in events],
        "next": events[-1].seq if events else None,
    }
