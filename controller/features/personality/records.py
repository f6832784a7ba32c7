"""The store side of a personality change: the operation record and the interface record.

Every step the coordinator takes is written here before the next one starts,
so a restarted controller resumes from the records.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from controller.core import interfaces
from controller.features.personality import operations as ops
from controller.store import Store

LOG = logging.getLogger("hubshift.changes")


class Records:
    def __init__(self, store: Store, wallclock: Callable[[], float]) -> None:
        self.store = store
        self.wallclock = wallclock

    def op(self, op_id: str) -> dict[str, Any]:
        return self.store.get(ops.KIND, op_id).body

    def set_state(self, op_id: str, state: str, message: str | None = None,
                  **fields: Any) -> None:
        doc = self.store.get(ops.KIND, op_id)
        body = {**doc.body, **fields, "state": state}
        if message:
            body["log"] = self._append(body["log"], state, message)
        self.store.put(ops.KIND, op_id, body)

    def update(self, op_id: str, **fields: Any) -> None:
        doc = self.store.get(ops.KIND, op_id)
        self.store.put(ops.KIND, op_id, {**doc.body, **fields})

    def log(self, op_id: str, iid: str, state: str, message: str) -> None:
        doc = self.store.get(ops.KIND, op_id)
        self.store.put(ops.KIND, op_id,
                       {**doc.body, "log": self._append(doc.body["log"], state, message)})
        LOG.info("%s %s: %s", op_id, iid, message)

    def set_interface(self, iid: str, **fields: Any) -> None:
        doc = self.store.get(interfaces.KIND, iid)
        self.store.put(interfaces.KIND, iid, {**doc.body, **fields})

    def release_interface(self, iid: str, op_id: str) -> None:
        """The interface is no longer locked to this operation."""
        iface = self.store.find(interfaces.KIND, iid)
        if iface is not None and iface.body.get("operation_id") == op_id:
            self.store.put(interfaces.KIND, iid, {**iface.body, "operation_id": None})

    def _append(self, log: list, state: str, message: str) -> list:
        entry = {"at": self.wallclock(), "state": state, "message": message}
        return (log + [entry])[-ops.LOG_MAX:]
