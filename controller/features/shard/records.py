"""What the shard feature stores, one kind per writer.

* ``shard-resource`` (written by the REST API): an enrolled interface.
  ``{pool_id, interface_id, external_ip, key, index, created_at}``; ``key``
  is the RAP secret (never shown by GET), ``index`` numbers the resource's
  conntrack zone (``zone_of``).  Its claims: the interface, the external
  address, the index.
* ``shard-lease`` (written by the runtime, on the worker; id = the resource's):
  the RAP state of one resource (``Lease``): its current address, the
  deprecated ones still draining, a move in flight, the last counter
  accepted, where the client answers from, and a short history.
* ``shard-state`` (runtime; id = the pool's): the pool's shards and the
  addresses in quarantine (``PoolState``).
* ``shard-rotation`` (runtime): one rotation round, its steps and final state.

Times are wall-clock seconds (they survive a restart and are shown).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Network
from typing import Any

from controller.core import budgets
from controller.features.shard.rotation import ACTIVE, Shard

RESOURCE, LEASE, STATE, ROTATION = "shard-resource", "shard-lease", "shard-state", "shard-rotation"
ZONES = budgets.SHARD.zones[0]
MAX_INDEX = 0xFFF             # zones 0xA000..0xAFFF; services take 0xB000.. (services.py)
HISTORY = 50                # entries kept per resource

# Lease states (the hub's side of docs/rap.md).
UNLEASED, OFFERED, LEASED = "unleased", "offered", "leased"
# Move states.
ANNOUNCING, SWITCHING = "announcing", "switching"


def zone_of(index: int) -> int:
    return ZONES.first + index


@dataclass(frozen=True)
class Resource:
    id: str
    pool_id: str
    interface_id: str
    external_ip: str
    key: str
    index: int

    @property
    def zone(self) -> int:
        return zone_of(self.index)

    @classmethod
    def from_doc(cls, id: str, body: dict[str, Any]) -> "Resource":
        return cls(id, body["pool_id"], body["interface_id"], body["external_ip"], body["key"],
                   int(body["index"]))


@dataclass(frozen=True)
class Deprecated:
    """An address a resource gave up for new connections; its old ones still use it."""
    address: str
    shard_id: str
    since: float
    expires_at: float           # released by then even with connections left
    connections: int = 0


@dataclass(frozen=True)
class Move:
    """A move in flight: the new address announced, waiting for the ACK, then for the
    switches to hold the new translation."""
    round_id: str
    to_shard: str
    to_address: str
    state: str                  # ANNOUNCING, SWITCHING
    started_at: float
    deadline: float             # no ACK by then: the move fails


@dataclass(frozen=True)
class Client:
    ip: str
    port: int


@dataclass(frozen=True)
class Lease:
    id: str
    state: str = UNLEASED
    address: str | None = None
    shard_id: str | None = None
    expires_at: float | None = None
    epoch: int = 0
    counter: int = -1
    client: Client | None = None
    deprecated: tuple[Deprecated, ...] = ()
    move: Move | None = None
    history: tuple[dict[str, Any], ...] = ()

    def held(self) -> set[str]:
        """Every address this resource uses or was promised."""
        out = {d.address for d in self.deprecated}
        if self.address:
            out.add(self.address)
        if self.move:
            out.add(self.move.to_address)
        return out

    def logged(self, at: float, event: str, **data: Any) -> "Lease":
        entry = {"at": round(at, 3), "event": event, **data}
        return replace(self, history=(*self.history, entry)[-HISTORY:])

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        del body["id"]
        return body

    @classmethod
    def from_doc(cls, id: str, body: dict[str, Any]) -> "Lease":
        client = body.get("client")
        move = body.get("move")
        return cls(id, body.get("state", UNLEASED), body.get("address"), body.get("shard_id"),
                   body.get("expires_at"), int(body.get("epoch", 0)),
                   int(body.get("counter", -1)), Client(**client) if client else None,
                   tuple(Deprecated(**d) for d in body.get("deprecated") or ()),
                   Move(**move) if move else None, tuple(body.get("history") or ()))


@dataclass(frozen=True)
class Quarantined:
    address: str
    until: float


@dataclass(frozen=True)
class PoolState:
    """A pool's shards (members are derived from the leases) and its quarantine."""
    id: str
    shards: tuple[Shard, ...] = ()
    quarantine: tuple[Quarantined, ...] = ()
    next_shard: int = 1
    last_round_at: float | None = None

    def shard(self, shard_id: str | None) -> Shard | None:
        return next((s for s in self.shards if s.id == shard_id), None)

    def to_body(self) -> dict[str, Any]:
        return {"shards": [{"id": s.id, "cidr": str(s.cidr), "created_at": s.created_at,
                            "expires_at": s.expires_at, "state": s.state}
                           for s in self.shards],
                "quarantine": [asdict(q) for q in self.quarantine],
                "next_shard": self.next_shard, "last_round_at": self.last_round_at}

    @classmethod
    def from_doc(cls, id: str, body: dict[str, Any]) -> "PoolState":
        shards = tuple(Shard(s["id"], IPv4Network(s["cidr"]), s["created_at"], s["expires_at"],
                             state=s.get("state", ACTIVE)) for s in body.get("shards") or ())
        return cls(id, shards, tuple(Quarantined(**q) for q in body.get("quarantine") or ()),
                   int(body.get("next_shard", 1)), body.get("last_round_at"))


@dataclass
class Step:
    """One resource's move in a rotation round, as GET .../rotations/{id} shows it."""
    resource: str
    from_shard: str | None
    to_shard: str
    from_address: str | None = None
    to_address: str | None = None
    state: str = "pending"      # pending, announcing, switching, done, failed
    message: str = ""
    started_at: float | None = None
    acked_at: float | None = None
    realized_at: float | None = None


@dataclass
class Rotation:
    id: str
    pool_id: str
    created_at: float
    forced: tuple[str, ...] = ()
    reason: str = "interval"    # interval, expired, forced
    state: str = "running"      # running, done, partial, failed
    finished_at: float | None = None
    created_shards: list[str] = field(default_factory=list)
    retired_shards: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def step(self, resource: str) -> Step | None:
        return next((s for s in self.steps if s.resource == resource), None)

    def settle(self, now: float) -> bool:
        """Set the final state once no step is in flight; True when it just ended."""
        if self.state != "running" or any(s.state not in ("done", "failed") for s in self.steps):
            return False
        failed = sum(s.state == "failed" for s in self.steps)
        self.state = ("failed" if failed and failed == len(self.steps)
                      else "partial" if failed else "done")
        self.finished_at = now
        return True

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        del body["id"]
        body["forced"] = list(self.forced)
        return body

    @classmethod
    def from_doc(cls, id: str, body: dict[str, Any]) -> "Rotation":
        b = dict(body)
        b["steps"] = [Step(**s) for s in b.get("steps") or ()]
        b["forced"] = tuple(b.get("forced") or ())
        return cls(id=id, **b)
