"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .context import Ctx

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus text exposition",
            responses={200: {"description": "Metrics in Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def get_metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)
