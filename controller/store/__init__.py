"""Embedded document store: versioned records, an event journal, and claim rows."""

from __future__ import annotations

import os
import time

from .base import (AlreadyExists, ClaimRow, Document, Event, NotFound, RevisionConflict, Store,
                   StoreError, WriteHook, add_write_hook, claim_order, remove_write_hook)
from .sqlite import Clock, SQLiteStore

__all__ = [
    "AlreadyExists",
    "ClaimRow",
    "Clock",
    "Document",
    "Event",
    "NotFound",
    "RevisionConflict",
    "SQLiteStore",
    "Store",
    "StoreError",
    "WriteHook",
    "add_write_hook",
    "claim_order",
    "open_store",
    "remove_write_hook",
]


def open_store(path: str, clock: Clock = time.time) -> Store:
    """Open (creating if needed) the SQLite store at ``path``; ":memory:" is allowed."""
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return SQLiteStore(path, clock=clock)
