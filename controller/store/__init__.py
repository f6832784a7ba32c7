"""Embedded document store: versioned records and an event journal."""

from __future__ import annotations

import os
import time

from .base import AlreadyExists, Document, Event, NotFound, RevisionConflict, Store, StoreError
from .sqlite import Clock, SQLiteStore

__all__ = [
    "AlreadyExists",
    "Clock",
    "Document",
    "Event",
    "NotFound",
    "RevisionConflict",
    "SQLiteStore",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(path: str, clock: Clock = time.time) -> Store:
    """Open (creating if needed) the SQLite store at ``path``; ":memory:" is allowed."""
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return SQLiteStore(path, clock=clock)
