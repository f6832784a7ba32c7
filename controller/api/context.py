"""What the API needs from the rest of the controller."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from controller.features.persona.store import DEFAULT_NAT_POOL
from controller.store import Store


class HubView(Protocol):
    """View of the running hub: reads that return JSON-able data, plus
    notifications that the store changed (``reload_subnets``,
    ``operations_changed``, ``personas_changed``).

    Shapes are documented by the models in ``controller.api.models``.
    """

    def health(self) -> dict[str, Any]:
        """{"status": "ok"|"degraded", "datapaths_connected": int, "uptime_s": float}"""
        ...

    def datapaths(self) -> list[dict[str, Any]]:
        """Every known datapath, connected or not (see ``models.Datapath``)."""
        ...

    def datapath(self, id: str) -> dict[str, Any] | None:
        """One datapath by its 16-hex-digit id, or None if unknown."""
        ...

    def topology(self) -> dict[str, Any]:
        """{"switches": [...], "links": [...], "hosts": [...]} (see ``models.Topology``)."""
        ...

    def reload_subnets(self) -> None:
        """Re-read the subnet documents from the store (after a subnet was written)."""
        ...

    def operations_changed(self) -> None:
        """Operations were created; the coordinator should look at the store.

        Called after every write that creates an operation (switch, revert,
        apply, a personality update); returns at once.
        """
        ...

    def dry_run_switch(self, interface_id: str, personality_id: str) -> dict[str, Any]:
        """What switching ``interface_id`` to ``personality_id`` would do; changes nothing.

        Blocks until the hub's worker has compiled it and answers
        ``{"interface_id", "from_personality_id", "to_personality_id",
        "flows": {"add": [str], "delete": [str]}, "connections": [dict],
        "would_cut": int}``.  Raises LookupError for an unknown interface or
        personality, ValueError when the personality cannot be compiled for
        the interface, TimeoutError when the worker does not answer in time.
        """
        ...

    def personas_changed(self) -> None:
        """The persona records changed; the runtime re-reads them. Returns at once."""
        ...

    def persona_preview(self, body: dict[str, Any]) -> dict[str, Any]:
        """The flows and meters a persona record that is not stored would install.

        ``body`` is the record body ``create`` would store (see
        ``controller.features.persona.store``) plus its ``"id"``. Answers
        ``{"flows": {dpid: [rendered flow strings]}, "meters": [...]}``; raises
        ValueError when it cannot be compiled, TimeoutError when the worker
        does not answer in time. Changes nothing.
        """
        ...

    def persona_usage(self, id: str) -> dict[str, Any] | None:
        """What the gateway counted for a persona, or None when nothing is known yet:
        ``{"bytes": {"in", "out"}, "packets": {"in", "out"}, "connections": int,
        "denied": int, "rate_bps": {"in", "out"}, "updated_at": float | None}``."""
        ...


@dataclass(frozen=True)
class ApiContext:
    """Everything a route handler may touch."""

    store: Store
    hub: HubView
    registry: CollectorRegistry
    version: str
    persona_nat_pool: IPv4Network = DEFAULT_NAT_POOL
    """Where overlapping personas get their hub-visible blocks (config ``personas.nat_pool``)."""


def get_context(request: Request) -> ApiContext:
    """FastAPI dependency: the context given to ``create_app``."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_context)]
"""Route parameter annotation: ``def handler(ctx: Ctx) -> ...``."""
