"""The Feature interface: how a capability attaches to the hub core.

A feature (fabric, personality, persona, ...) is one folder under
`controller/features/` and one line in `controller.registry`.  The core never
imports a feature: it calls these hooks, in this order of life:

    Feature(ctx, settings)       built once, with its context and its settings
    load()                       read the store (on the worker, before the first batch)
    contribute(view)             its share of every switch's desired state (pure)
    on_packet_in(punt)           a packet punted from a table it owns (`punt_tables`)
    documents_changed(kind)      the API wrote a document of a kind it owns
    tick() / next_wakeup()       time: after every batch of work and every converge
    query(name, **args)          reads and previews asked by the API, on the worker

What a feature's documents claim (interfaces, address ranges) it declares
with `controller.core.claims.declare` in its `claims.py`; the claims are
kept and checked in the write's own store transaction.  Its REST router,
hubctl group and settings parser are named by its registry entry
(`controller.core.plugin.Plugin`).

A feature sees a `FeatureContext` (clocks, seeded randomness, store, journal,
metrics, the read-only topology, asynchronous switch requests), never the hub.
Long changes (a personality change with drain, a persona teardown) are state
machines that mark their contribution changed (`ctx.changed()`), and advance
in a later `tick` once `ctx.realization(...)` says the switches hold it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, NamedTuple

from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.meters import MeterSpec

if TYPE_CHECKING:
    from controller.core.budgets import Budget
    from controller.core.context import FeatureContext
    from controller.core.view import FabricView
    from controller.reconcile.tunnels import TunnelPort


@dataclass(frozen=True)
class Contribution:
    """One feature's share of the desired state, per datapath id."""
    flows: Mapping[int, tuple[FlowSpec, ...]] = field(default_factory=dict)
    meters: Mapping[int, tuple[MeterSpec, ...]] = field(default_factory=dict)
    tunnels: Mapping[int, tuple["TunnelPort", ...]] = field(default_factory=dict)


NOTHING = Contribution()


@dataclass(frozen=True)
class PacketIn:
    """A packet punted to the controller from one of a feature's tables."""
    dpid: int
    table_id: int
    in_port: int
    data: bytes
    packet: Any            # controller.packets.Packet (parsed once by the core)


class FeatureFactory(NamedTuple):
    """How the hub builds one feature: its name (its context's), and the builder."""
    name: str
    build: Callable[["FeatureContext"], "Feature"]


class Feature:
    """Base class: every hook is optional and does nothing by default."""

    name: ClassVar[str]                        # "persona": labels, journal, registry key
    budget: ClassVar["Budget"]                 # resources it owns (controller.core.budgets)
    settings_key: ClassVar[str | None] = None  # its section of the configuration file
    settings_model: ClassVar[type | None] = None   # pydantic model of that section
    document_kinds: ClassVar[tuple[str, ...]] = ()  # store kinds whose writes it is told of
    punt_tables: ClassVar[frozenset[int]] = frozenset()  # tables whose packet-ins it handles

    def __init__(self, ctx: "FeatureContext", settings: Any = None) -> None:
        self.ctx = ctx
        self.settings = settings

    # ------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Read what the feature keeps in the store (once, on the worker)."""

    def documents_changed(self, kind: str) -> None:
        """Documents of `kind` (one of `document_kinds`) were written through the API."""

    # -------------------------------------------------------- desired state
    def contribute(self, view: "FabricView") -> Contribution:
        """Flows, meters and tunnel ports this feature wants, from a read-only view.

        Pure with respect to the switches: called on the worker whenever any
        input changed; it must not send anything.
        """
        return NOTHING

    # ------------------------------------------------------------ events
    def on_packet_in(self, punt: PacketIn) -> None:
        """A packet-in from one of `punt_tables`."""

    def tick(self) -> None:
        """After every batch of work and converge (state machines advance here)."""

    def next_wakeup(self) -> float | None:
        """Seconds until `tick` has something to do, or None."""
        return None

    # ------------------------------------------------------------ queries
    def query(self, name: str, **args: Any) -> Any:
        """Answer a read or preview asked through `HubView.query` (on the worker)."""
        raise LookupError(f"{self.name} has no query {name!r}")
