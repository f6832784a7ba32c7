"""Temporary personalities (`expires_after`): each goes back when its time is up.

The interface record keeps the deadline (`expires_at`) and what to go back to
(`expires_to`); at the deadline one operation of kind `expiry` is created,
with no drain, like any other change.
"""
from __future__ import annotations

from typing import Any, Callable

from controller.core import interfaces
from controller.core.documents import parse_duration
from controller.features.personality.binding import Binding
from controller.features.personality import operations as ops
from controller.features.personality.records import Records
from controller.store import Store


class Expiries:
    def __init__(self, store: Store, records: Records, wallclock: Callable[[], float]) -> None:
        self.store = store
        self.records = records
        self.wallclock = wallclock
        self.deadlines: dict[str, float] = {}   # interface id -> wallclock deadline

    def load(self) -> None:
        for doc in self.store.list(interfaces.KIND):
            if doc.body.get("expires_at"):
                self.deadlines[doc.id] = doc.body["expires_at"]

    def after_success(self, iid: str, iface: dict[str, Any], target: Binding | None,
                      previous: Binding | None) -> dict[str, Any]:
        """The interface record's fields once a change succeeded: a lasting personality
        becomes the default; a temporary one gets its deadline and what to go back to."""
        fields: dict[str, Any] = {"personality_state": "active"}
        expires = target.body.get("expires_after") if target else None
        if target is not None and expires is None:
            fields.update(default_personality_id=target.personality_id,
                          expires_at=None, expires_to=None)
        elif expires is not None:
            back = iface.get("default_personality_id") or (
                previous.personality_id if previous else None)
            fields.update(expires_at=self.wallclock() + _seconds(expires), expires_to=back)
            self.deadlines[iid] = fields["expires_at"]
        return fields

    def next_wakeup(self) -> float | None:
        if not self.deadlines:
            return None
        return max(0.0, min(self.deadlines.values()) - self.wallclock())

    def expire(self) -> bool:
        """Create the operations of personalities past their time; True if one was."""
        now = self.wallclock()
        created = False
        for iid, at in list(self.deadlines.items()):
            if at > now:
                continue
            doc = self.store.find(interfaces.KIND, iid)
            if doc is None or doc.body.get("expires_at") != at:
                del self.deadlines[iid]   # replaced or cancelled meanwhile
                continue
            try:
                ops.create(self.store, iid, doc.body.get("expires_to"), kind="expiry", now=now,
                           drain=ops.Drain(max_seconds=0, until="timeout"),
                           reason=f"personality {doc.body.get('personality_id')!r} expired")
            except ops.Busy:
                continue   # tried again at the next tick, once that operation is done
            del self.deadlines[iid]
            self.records.set_interface(iid, expires_at=None)
            created = True
        return created


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float(parse_duration(value))
