"""What personality an interface has on the switch right now, and what it had before.

A `Binding` is the unit the hub compiles per interface: the interface, the
personality policy (from the document revision that was applied, kept in the
store so a restart never silently picks up a newer revision), its conntrack
zone, and whether it is in transition (new connections refused).  Stored as
kind ``binding`` under the interface id, with the binding it replaced, so a
rollback needs nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from controller.compile.personality import (Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition,
                                            personality_meters)
from controller.pipeline.meters import MeterSpec
from controller.pipeline.flowspec import FlowSpec
from controller.store import Store

KIND = "binding"


@dataclass(frozen=True)
class Binding:
    interface: Interface
    personality_id: str
    revision: int
    body: Any = field(hash=False)   # the personality document as applied
    zone: int
    transition: bool = False

    @property
    def policy(self) -> PersonalityPolicy:
        return _policy(self.personality_id, self.revision, _Frozen(self.body))

    def flows(self, ctx: Context) -> tuple[FlowSpec, ...]:
        if self.transition:
            return compile_transition(self.interface, self.policy, self.zone, ctx)
        return compile_personality(self.interface, self.policy, self.zone, ctx)

    def meters(self) -> tuple[MeterSpec, ...]:
        return personality_meters(self.interface, self.policy)

    def in_transition(self) -> "Binding":
        return replace(self, transition=True)

    def to_body(self) -> dict[str, Any]:
        return {"personality_id": self.personality_id, "revision": self.revision,
                "body": self.body, "zone": self.zone}

    @classmethod
    def from_body(cls, interface: Interface, body: dict[str, Any]) -> "Binding":
        return cls(interface, body["personality_id"], body["revision"], body["body"],
                   body["zone"])


class _Frozen:
    """A document body usable as a cache key (compared by its canonical repr)."""
    __slots__ = ("body", "_key")

    def __init__(self, body: Any) -> None:
        self.body, self._key = body, repr(body)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and other._key == self._key


_POLICIES: dict[tuple[str, int, _Frozen], PersonalityPolicy] = {}


def _policy(pid: str, revision: int, body: _Frozen) -> PersonalityPolicy:
    key = (pid, revision, body)
    policy = _POLICIES.get(key)
    if policy is None:
        if len(_POLICIES) > 256:
            _POLICIES.clear()
        policy = _POLICIES[key] = PersonalityPolicy.from_body(pid, body.body, revision)
    return policy


def save(store: Store, iid: str, binding: Binding | None, previous: Binding | None) -> None:
    if binding is None:
        if store.find(KIND, iid):
            store.delete(KIND, iid)
        return
    store.put(KIND, iid, {**binding.to_body(),
                          "previous": previous.to_body() if previous else None})


def load(store: Store, iid: str, interface: Interface) -> tuple[Binding | None, Binding | None]:
    """(current, previous) bindings of an interface, as last saved."""
    doc = store.find(KIND, iid)
    if doc is None:
        return None, None
    prev = doc.body.get("previous")
    return (Binding.from_body(interface, doc.body),
            Binding.from_body(interface, prev) if prev else None)
