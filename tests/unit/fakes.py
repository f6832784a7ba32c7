"""Stand-ins shared by the unit tests of the REST API and hubctl."""
from __future__ import annotations

from typing import Any, Iterable

EMPTY_TOPOLOGY = {"switches": [], "links": [], "hosts": []}
OK_HEALTH = {"status": "ok", "datapaths_connected": 0, "uptime_s": 1.0}


def dry_run_answer(interface_id: str, personality_id: str) -> dict[str, Any]:
    """The canned answer of the personality dry run query (shape checked like the preview's)."""
    return {"interface_id": interface_id, "from_personality_id": None,
            "to_personality_id": personality_id,
            "flows": {"add": ["table=40, priority=100, ip, nw_src=10.0.1.10 actions=goto_table:41"],
                      "delete": ["table=40, priority=100, ip, nw_src=10.0.1.9 actions=goto_table:41"]},
            "connections": [{"protocol": "tcp", "local": "10.0.1.10:40000", "peer": "10.0.2.2:22"}],
            "would_cut": 1}


def persona_preview_answer(body: dict[str, Any]) -> dict[str, Any]:
    """The canned answer of the persona preview query: one flow naming the persona's range
    (its shape is checked against the real hub's by tests/unit/test_hubview_contract.py)."""
    return {"flows": {"0000000000000001": [
        f"table=40, priority=174, ip, nw_dst={body['document']['ip_range']} actions=goto_table:50"]},
        "meters": [{"meter_id": 65536 + 2 * body["index"], "rate_kbps": 100000,
                    "burst_kbits": 20000}]}


def usage_answer() -> dict[str, Any]:
    """A persona's usage as the hub answers it (the shape tests fill ``FakeHub.usage`` with)."""
    return {"bytes": {"in": 1_500_000, "out": 250}, "packets": {"in": 1000, "out": 5},
            "connections": 3, "denied": 1, "rate_bps": {"in": 8000.0, "out": 80.0},
            "updated_at": 1_800_000_000.0, "latency_ms": 4.2}


class FakeHub:
    """A HubView with fixed answers that records the kinds of documents it was told of
    and the queries it was asked.

    The personality dry run records its calls and answers ``dry_run_answer(...)``,
    or raises ``dry_run_error`` when that is set; the persona preview likewise.
    """

    def __init__(self, datapaths: Iterable[dict[str, Any]] = (),
                 topology: dict[str, Any] | None = None,
                 health: dict[str, Any] | None = None) -> None:
        self.dps = {d["id"]: d for d in datapaths}
        self._topology = topology or EMPTY_TOPOLOGY
        self._health = health or OK_HEALTH
        self.changed_kinds: list[str] = []
        self.queries: list[tuple[str, str, dict[str, Any]]] = []
        self.dry_runs: list[tuple[str, str]] = []
        self.dry_run_error: Exception | None = None
        self.persona_previews: list[dict[str, Any]] = []
        self.persona_preview_error: Exception | None = None
        self.usage: dict[str, dict[str, Any]] = {}

    def health(self) -> dict[str, Any]:
        return self._health

    def datapaths(self) -> list[dict[str, Any]]:
        return list(self.dps.values())

    def datapath(self, id: str) -> dict[str, Any] | None:
        return self.dps.get(id)

    def topology(self) -> dict[str, Any]:
        return self._topology

    def documents_changed(self, kind: str) -> None:
        self.changed_kinds.append(kind)

    def query(self, feature: str, name: str, **args: Any) -> Any:
        self.queries.append((feature, name, args))
        if (feature, name) == ("personality", "dry_run"):
            self.dry_runs.append((args["interface_id"], args["personality_id"]))
            if self.dry_run_error is not None:
                raise self.dry_run_error
            return dry_run_answer(args["interface_id"], args["personality_id"])
        if (feature, name) == ("persona", "preview"):
            self.persona_previews.append(args["body"])
            if self.persona_preview_error is not None:
                raise self.persona_preview_error
            return persona_preview_answer(args["body"])
        if (feature, name) == ("persona", "usage"):
            return self.usage.get(args["id"])
        raise LookupError(f"{feature} has no query {name!r}")

    # Counts of the notices, by what the older tests call them.
    @property
    def reloads(self) -> int:
        return self.changed_kinds.count("subnet")

    @property
    def operation_notices(self) -> int:
        return self.changed_kinds.count("operation") + self.changed_kinds.count("personality")

    @property
    def persona_notices(self) -> int:
        return self.changed_kinds.count("persona")
