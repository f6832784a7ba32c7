"""Categories over REST: ``GET /v1/categories``, each category and its members.

A category is a name users give interfaces (``PATCH /v1/interfaces/{id}`` with
``{"categories": [...]}``, served by the core's interface routes); it exists
while an interface has it.  Its members are those interfaces.
"""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from controller.api.context import Ctx
from controller.api.problems import problem_responses
from controller.core.interfaces import KIND as INTERFACE
from controller.store import Store


class CategoryView(BaseModel):
    category: str
    members: list[str] = Field(description="The interface ids that have it, sorted")


def members_by_category(store: Store) -> dict[str, list[str]]:
    """Every category some interface has -> its members (interface ids), both sorted."""
    out: dict[str, list[str]] = {}
    for doc in sorted(store.list(INTERFACE), key=lambda d: d.id):
        for category in sorted(set(doc.body.get("categories") or ())):
            out.setdefault(category, []).append(doc.id)
    return dict(sorted(out.items()))


router = APIRouter(prefix="/v1/categories", tags=["categories"], responses=problem_responses(500))


@router.get("", summary="Every category and its members",
            description="A category is listed while an interface has it; categories are set "
                        "with PATCH /v1/interfaces/{id}.",
            responses={200: {"model": list[CategoryView]}})
def list_categories(ctx: Ctx) -> JSONResponse:
    return JSONResponse([{"category": c, "members": m}
                         for c, m in members_by_category(ctx.store).items()])
