"""Interface records: discovered host-facing ports and the personalities bound to them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from controller.core import interfaces

from .context import Ctx
from .problems import Problem, field_error, problem_responses

router = APIRouter(prefix="/v1", tags=["interfaces"], responses=problem_responses(404, 409, 422, 500))


class InterfaceUpdate(BaseModel):
    """The fields an operator may set on an interface record."""
    model_config = ConfigDict(extra="forbid")
    revision: int
    default_personality_id: str | None = None


def _view(doc) -> dict[str, Any]:
    return {"id": doc.id, "revision": doc.revision, "updated_at": doc.updated_at, **doc.body}


@router.get("/interfaces", summary="All interface records")
def list_interfaces(ctx: Ctx) -> list[dict[str, Any]]:
    return [_view(d) for d in ctx.store.list(interfaces.KIND)]


@router.get("/interfaces/{id}", summary="One interface record")
def get_interface(id: str, ctx: Ctx) -> dict[str, Any]:
    return _view(ctx.store.get(interfaces.KIND, id))


@router.put("/interfaces/{id}", summary="Set an interface's default (last-known-good) personality")
def put_interface(id: str, update: InterfaceUpdate, ctx: Ctx) -> dict[str, Any]:
    doc = ctx.store.get(interfaces.KIND, id)
    pid = update.default_personality_id
    if pid is not None and ctx.store.find("personality", pid) is None:
        raise Problem(422, "Unknown personality",
                      errors=[field_error("body.default_personality_id",
                                          f"no personality with id {pid!r}")])
    new = ctx.store.update(interfaces.KIND, id, {**doc.body, "default_personality_id": pid},
                           update.revision)
    ctx.store.append_event("interface", id, "updated",
                           {"revision": new.revision, "default_personality_id": pid})
    return _view(new)
