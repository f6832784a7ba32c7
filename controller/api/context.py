"""What the API needs from the rest of the controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Mapping, Protocol

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from controller.store import Store


class HubView(Protocol):
    """View of the running hub: reads that return JSON-able data, a notice that
    documents were written, and feature queries run on the hub's worker.

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

    def documents_changed(self, kind: str) -> None:
        """Documents of store kind ``kind`` were written (after the transaction
        committed); the feature that owns the kind re-reads them.  Returns at once.

        Kinds: "subnet", "personality", "operation" (a personality change was
        created), "persona".
        """
        ...

    def query(self, feature: str, name: str, **args: Any) -> Any:
        """Ask feature ``feature`` the query ``name`` on the hub's worker.

        Queries change nothing, but for ``("shard", "rotate")``, which starts a
        round (the worker is the one writer of rounds).

        Blocks until answered.  Raises LookupError (unknown feature, query, or
        an unknown object named in ``args``), ValueError (cannot be compiled),
        TimeoutError (the worker did not answer in time).  The queries:

        * ``("personality", "dry_run", interface_id=, personality_id=)`` ->
          ``{"interface_id", "from_personality_id", "to_personality_id",
          "flows": {"add": [str], "delete": [str]}, "connections": [dict],
          "would_cut": int}``
        * ``("persona", "preview", body=)``: ``body`` is the record body a create
          would store plus its ``"id"`` -> ``{"flows": {dpid: [str, ...]},
          "meters": [dict]}`` (one rendered flow per list item)
        * ``("persona", "usage", id=)`` -> ``{"bytes": {"in", "out"},
          "packets": {"in", "out"}, "connections", "denied", "rate_bps": {"in",
          "out"}, "updated_at", "latency_ms"}`` or None when nothing is counted yet
        * ``("shard", "rotate", pool_id=, resources=)``: a rotation round now
          (``resources``: the ones to move, or None for the algorithm's choice)
          -> ``{"id", "state"}``; LookupError for an unknown pool or resource
        """
        ...


@dataclass(frozen=True)
class ApiContext:
    """Everything a route handler may touch."""

    store: Store
    hub: HubView
    registry: CollectorRegistry
    version: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Each feature's validated settings, by feature name (e.g. ``settings["persona"]``)."""


def get_context(request: Request) -> ApiContext:
    """FastAPI dependency: the context given to ``create_app``."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_context)]
"""Route parameter annotation: ``def handler(ctx: Ctx) -> ...``."""
