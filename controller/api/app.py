"""FastAPI application factory for the northbound API."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from controller.features.persona import api as routes_personas
from controller.features.personality import api as routes_operations

from . import routes_documents, routes_events, routes_hub, routes_interfaces, routes_metrics
from .context import ApiContext
from .problems import register_problem_handlers

ROUTERS: list[APIRouter] = [routes_hub.router, routes_events.router, routes_metrics.router,
                            *routes_documents.routers, routes_interfaces.router,
                            routes_operations.router, routes_personas.router]
"""Routers mounted by ``create_app``; new feature routers are added here."""


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the API app; routes reach ``ctx`` through the ``Ctx`` dependency."""
    app = FastAPI(title="hubshift", version=ctx.version, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None)
    app.state.ctx = ctx
    register_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
