"""The in-memory progress of one personality change (the operation record has the rest)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from controller.core.context import FeatureContext
from controller.features.personality.binding import Binding
from controller.features.personality.checks import Check
from controller.features.personality.compile import Context, Interface
from controller.store import Document

ALL_BITS = (1 << 64) - 1   # a cookie mask that selects one cookie exactly


@dataclass(frozen=True)
class Awaiting:
    """A step waiting for its switch to hold a generation; `then(ok)` goes on."""
    generation: int
    then: Callable[[bool], None]


@dataclass
class Run:
    """In-memory progress of one operation (the record has the rest)."""
    op_id: str
    iid: str
    interface: Interface | None = None
    previous: Binding | None = None      # what the interface had before (rollback target)
    target: Binding | None = None
    drain_deadline: float = 0.0          # wallclock
    next_poll: float = 0.0
    drain_ended: float = 0.0
    checks: list[Check] = field(default_factory=list)
    prepared: bool = False               # target compiled, previous known (see _prepare)
    waiting_logged: bool = False
    awaiting: Awaiting | None = None
    counting: bool = False               # a connection count is on its way


def compile_context(ctx: FeatureContext) -> Context:
    view = ctx.view()
    return Context(router_mac=view.router_mac, macs=view.macs, tunnel_ports=view.tunnel_ports)


def interface_of(doc: Document) -> Interface:
    """The personality compiler's interface for an interface record (with its zone pair)."""
    return Interface(int(doc.body["datapath"], 16), doc.body["port"], doc.body["mac"],
                     doc.body.get("zone"))
