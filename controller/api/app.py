"""FastAPI application factory for the northbound API."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from controller.registry import FEATURES

from . import routes_events, routes_hub, routes_interfaces, routes_metrics
from .context import ApiContext
from .problems import register_problem_handlers

ROUTERS: list[APIRouter] = [routes_hub.router, routes_events.router, routes_metrics.router,
                            routes_interfaces.router]
"""The core's routers, mounted by ``create_app`` before each feature's (``Plugin.router``)."""


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the API app; routes reach ``ctx`` through the ``Ctx`` dependency."""
    app = FastAPI(title="hubshift", version=ctx.version, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None)
    app.state.ctx = ctx
    register_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    for plugin in FEATURES:
        router = plugin.router()
        if router is not None:
            app.include_router(router)
    return app
