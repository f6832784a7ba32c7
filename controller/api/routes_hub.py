"""Live hub state: health, datapaths, topology."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter

from .context import Ctx
from .models import Datapath, Health, Topology
from .problems import Problem, problem_responses

router = APIRouter(prefix="/v1", tags=["hub"], responses=problem_responses(500))

_HEX_ID = re.compile(r"[0-9a-fA-F]{1,16}")


def normalize_datapath_id(id: str) -> str:
    """Accept short or upper-case hex ids ("A01") for the canonical 16-digit form."""
    return id.lower().zfill(16) if _HEX_ID.fullmatch(id) else id


@router.get("/health", response_model=Health, summary="Controller health")
def get_health(ctx: Ctx) -> dict[str, Any]:
    return ctx.hub.health()


@router.get("/datapaths", response_model=list[Datapath], summary="All known datapaths")
def list_datapaths(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.hub.datapaths()


@router.get("/datapaths/{id}", response_model=Datapath, summary="One datapath",
            responses=problem_responses(404))
def get_datapath(id: str, ctx: Ctx) -> dict[str, Any]:
    found = ctx.hub.datapath(normalize_datapath_id(id))
    if found is None:
        raise Problem(404, detail=f"datapath {id!r} is not known")
    return found


@router.get("/topology", response_model=Topology, summary="Switches, links and hosts")
def get_topology(ctx: Ctx) -> dict[str, Any]:
    return ctx.hub.topology()
