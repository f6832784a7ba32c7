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
from functools import cached_property
from typing import Any, Callable, Iterable

from controller.features.personality.compile import (Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition,
                                            interface_zone, personality_meters)
from controller.features.personality.vpn import TunnelPort, tunnel_port
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

    @cached_property
    def policy(self) -> PersonalityPolicy:
        """Parsed once per binding (the hub reads it at every convergence)."""
        return PersonalityPolicy.from_body(self.personality_id, self.body, self.revision)

    def flows(self, ctx: Context) -> tuple[FlowSpec, ...]:
        """Compiled once per binding and context: the change coordinator compiles a target when it
        prepares a change, so the hub does not compile it again after the drain."""
        memo = self.__dict__.get("_flows")
        if memo is not None and memo[0] == ctx:
            return memo[1]
        if self.transition:
            flows = compile_transition(self.interface, self.policy, self.zone, ctx)
        else:
            flows = compile_personality(self.interface, self.policy, self.zone, ctx)
        self.__dict__["_flows"] = (ctx, flows)
        return flows

    def meters(self) -> tuple[MeterSpec, ...]:
        return personality_meters(self.interface, self.policy)

    @cached_property
    def tunnel(self) -> TunnelPort | None:
        """The VPN tunnel port this binding needs on its switch (made over OVSDB), if any."""
        vpn = self.policy.vpn
        return None if vpn is None else tunnel_port(self.interface, vpn)

    def in_transition(self) -> "Binding":
        return replace(self, transition=True)

    def to_body(self) -> dict[str, Any]:
        return {"personality_id": self.personality_id, "revision": self.revision,
                "body": self.body, "zone": self.zone}

    @classmethod
    def from_body(cls, interface: Interface, body: dict[str, Any]) -> "Binding":
        """As saved, but in the interface's own zone pair (the stored zone keeps the epoch):
        a binding saved before interface records had zones moves into its pair once."""
        zone = body["zone"] if interface.zone is None else interface_zone(interface, body["zone"])
        return cls(interface, body["personality_id"], body["revision"], body["body"], zone)


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


def tunnel_conflict(binding: Binding, others: Iterable[Binding]) -> str | None:
    """Why `binding`'s tunnel cannot be made beside the others' tunnels, or None."""
    port = binding.tunnel
    for other in others:
        if (port is not None and other.tunnel is not None
                and other.interface.id != binding.interface.id
                and other.tunnel.endpoint == port.endpoint):
            return (f"interface {other.interface.id} already has a {port.type} tunnel to "
                    f"{port.remote_ip} with key {port.key or 0}; Open vSwitch could not tell "
                    "their packets apart (use another key)")
    return None


ExtraKey = tuple[str, str]   # (what, operation id): temporary flows of an operation


class BindingTable:
    """Each interface's binding, plus temporary flows (health-check punts) by key.

    The only place a personality's contribution changes: every change marks
    it (`changed`, from the feature context) and answers the generation that
    will hold it.
    """

    def __init__(self, changed: Callable[[], int]) -> None:
        self._changed = changed
        self.current: dict[str, Binding] = {}
        self.extra: dict[ExtraKey, tuple[int, tuple[FlowSpec, ...]]] = {}
        self.generation = 0

    def bind(self, interface_id: str, binding: Binding | None) -> int:
        if self.current.get(interface_id) != binding:
            if binding is None:
                self.current.pop(interface_id, None)
            else:
                self.current[interface_id] = binding
            self.generation = self._changed()
        return self.generation

    def set_extra(self, key: ExtraKey, dpid: int, flows: tuple[FlowSpec, ...] | None) -> int:
        if flows is None:
            if self.extra.pop(key, None) is not None:
                self.generation = self._changed()
        elif self.extra.get(key) != (dpid, flows):
            self.extra[key] = (dpid, flows)
            self.generation = self._changed()
        return self.generation
