"""Northbound REST API (v1): FastAPI app, problem+json errors, server thread."""

from __future__ import annotations

from .app import create_app
from .context import ApiContext, HubView
from .problems import Problem
from .server import ApiServer

__all__ = ["ApiContext", "ApiServer", "HubView", "Problem", "create_app"]
