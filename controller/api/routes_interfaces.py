"""Interface records: discovered host-facing ports (the features keep their own fields on them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from controller.core import interfaces

from .context import Ctx
from .crud import answer, view
from .problems import problem_responses

INTERFACE_ID = interfaces.ID_PATTERN

InterfaceId = Annotated[str, Path(description='"<datapath>:<port>", e.g. 0000000000000a01:2',
                                  json_schema_extra={"pattern": INTERFACE_ID})]
"""A path interface id; one that breaks the pattern names no interface (404)."""

router = APIRouter(prefix="/v1", tags=["interfaces"], responses=problem_responses(500))


@router.get("/interfaces", summary="All interface records")
def list_interfaces(ctx: Ctx) -> JSONResponse:
    return JSONResponse([view(d) for d in ctx.store.list(interfaces.KIND)])


@router.get("/interfaces/{id}", summary="One interface record", responses=problem_responses(404))
def get_interface(id: InterfaceId, ctx: Ctx) -> JSONResponse:
    return answer(ctx.store.get(interfaces.KIND, id))
