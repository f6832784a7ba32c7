"""Stand-ins shared by the unit tests of the REST API and hubctl."""
from __future__ import annotations

from typing import Any, Iterable

EMPTY_TOPOLOGY = {"switches": [], "links": [], "hosts": []}
OK_HEALTH = {"status": "ok", "datapaths_connected": 0, "uptime_s": 1.0}


class FakeHub:
    """A HubView with fixed answers that counts subnet reloads."""

    def __init__(self, datapaths: Iterable[dict[str, Any]] = (),
                 topology: dict[str, Any] | None = None,
                 health: dict[str, Any] | None = None) -> None:
        self.dps = {d["id"]: d for d in datapaths}
        self._topology = topology or EMPTY_TOPOLOGY
        self._health = health or OK_HEALTH
        self.reloads = 0

    def health(self) -> dict[str, Any]:
        return self._health

    def datapaths(self) -> list[dict[str, Any]]:
        return list(self.dps.values())

    def datapath(self, id: str) -> dict[str, Any] | None:
        return self.dps.get(id)

    def topology(self) -> dict[str, Any]:
        return self._topology

    def reload_subnets(self) -> None:
        self.reloads += 1
