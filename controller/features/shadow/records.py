"""What the shadow runtime writes to the store and REST shows: the records' shapes.

The runtime (mirroring, the agent channel, analysis) writes these; REST
reads them and answers them as they are modelled here, so a record that
does not fit is skipped with a warning rather than answered half right.
Unknown members are ignored (a newer runtime may write more).

* ``shadow-state`` (id = appliance id): `ShadowState`, the instances, the
  current percentage and why, the mirror's counters;
* ``shadow-slot-state`` (id = slot id): `SlotState`, what the slot's agent is doing;
* ``shadow-finding``: `Finding`, one finding of an analysis profile;
* ``shadow-remediation``: `Remediation`, one block in force.

The records are frozen; the runtime writes one with `to_body` and reads its own
back with `from_doc` (strict: a record that does not fit raises), REST with
`read` (lenient: skipped with a warning).
"""
from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.features.shadow.document import PROFILES, SEVERITIES
from controller.store import Document, Store

LOG = logging.getLogger(__name__)

INSTANCE_STATES = ("launching", "ready", "failed", "stopped")
LAUNCHING, READY, FAILED, STOPPED = INSTANCE_STATES
ACTIVE = (LAUNCHING, READY)                   # an instance that holds its slot
FREE, STOPPING = "free", "stopping"           # slot states beside launching, ready, failed
SLOT_STATES = (FREE, LAUNCHING, READY, STOPPING, FAILED)
Count = Annotated[int, Field(ge=0)]
R = TypeVar("R", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_body(self) -> dict[str, Any]:
        """The stored body (members the store keeps apart, such as the id, included)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_doc(cls: type[R], doc: Document) -> R:
        """A stored record (its id is the document's); ValidationError when it does not fit."""
        return cls.model_validate({**doc.body, "id": doc.id})


class Load(Record):
    """An agent's last HEARTBEAT."""
    pps: Annotated[float, Field(ge=0)] = Field(default=0.0, description="Packets per second "
                                                                        "received on the slot")
    drops: Count = Field(default=0, description="Received packets dropped since the last "
                                                "heartbeat")
    lag_ms: Annotated[float, Field(ge=0)] = Field(default=0.0, description="The profiles' "
                                                                           "analysis lag")
    cpu_percent: Annotated[float, Field(ge=0)] = Field(default=0.0, description="The image's "
                                                       "CPU (100 = one core)")


class Counters(Record):
    connections: Count = Field(default=0, description="Connections mirrored")
    packets: Count = 0
    bytes: Count = 0
    dropped: Count = Field(default=0, description="Copies lost at the shadows' slots (the "
                                                  "agents' receive drops)")


class Instance(Record):
    id: str
    slot_id: str = Field(description="The shadow slot it runs on")
    state: Literal[INSTANCE_STATES]  # type: ignore[valid-type]
    appliance_id: str | None = None
    ordinal: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Unique among the appliance's instances while it runs: the "
                                  "mark of the connections mirrored to it")
    since: float | None = Field(default=None, description="When it entered its state (Unix "
                                                          "time)")
    heartbeat_at: float | None = Field(default=None, description="Its agent's last heartbeat "
                                                                 "that named it")
    load: Load | None = None
    reason: str | None = Field(default=None, description="Why it failed or stopped")
    counters: Counters = Field(default_factory=Counters, description="What was mirrored to it")
    metrics: dict[str, float] = Field(default_factory=dict, description=(
        "What its profiles report, from its last heartbeat: Performance_Profiling's "
        "latency_p50_ms, latency_p99_ms, throughput_bps, cpu_percent, memory_bytes, ..."))


class Percentage(Record):
    current: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        description="The share of new connections mirrored now")
    reason: str = Field(description="Why it is what it is", examples=["as configured"])


class Hold(Record):
    """Sample and hold: a source a finding named has all its new connections mirrored."""
    source: str = Field(examples=["10.0.1.20"])
    until: float = Field(description="When the hold ends (Unix time)")
    finding_id: str


class ShadowState(Record):
    instances: list[Instance] = Field(default_factory=list)
    percentage: Percentage | None = None
    counters: Counters = Field(default_factory=Counters)
    launched: Count = Field(default=0, description="Instances launched so far (names the next)")
    holds: list[Hold] = Field(default_factory=list, description="Sources mirrored at 100%")
    added: Count = Field(default=0, description="Instances added on load, beyond the manifest's "
                                                "count (adaptive mode)")
    unmirrored: str | None = Field(default=None, description=(
        "Why nothing is mirrored though shadowing is enabled (a production switch lacks an "
        "action the mirror needs, or is not probed yet); null: mirrored"))


class AgentChannel(Record):
    """Where a slot's agent speaks from, and what the hub's receiver keeps of it."""
    ip: str
    port: Annotated[int, Field(ge=0, le=65535)]
    counter: Count = Field(default=0, description="The last counter taken (replays refused)")
    epoch: Count = Field(default=0, description="The hub epoch last sent to the agent")


class SlotState(Record):
    state: str = Field(default=FREE, examples=list(SLOT_STATES), description=(
        "free (idle, or no agent yet), launching, ready, stopping (a STOP not yet confirmed), "
        "failed (its agent went silent)"))
    alive: bool = Field(default=False, description="Its agent said HELLO and keeps beating")
    appliance_id: str | None = Field(default=None, description="Whose instance it runs")
    instance_id: str | None = None
    updated_at: float | None = None
    heartbeat_at: float | None = None
    load: Load | None = None
    profiles: list[str] = Field(default_factory=list, description="The analysis profiles its "
                                                                  "agent can run (HELLO)")
    agent: AgentChannel | None = None


class FiveTuple(Record):
    protocol: str = Field(examples=["tcp"])
    src: str = Field(examples=["10.0.1.20"])
    sport: int | None = None
    dst: str = Field(examples=["10.0.1.2"])
    dport: int | None = None


class Finding(Record):
    id: str
    appliance_id: str
    instance_id: str | None = None
    profile: Literal[PROFILES]  # type: ignore[valid-type]
    severity: Literal[SEVERITIES]  # type: ignore[valid-type]
    five_tuple: FiveTuple | None = None
    evidence: dict[str, Any] = Field(default_factory=dict, description=(
        "What was seen: the signature id and the bytes matched, the anomaly score, the "
        "latency figures, the input that crashed the shadow"))
    at: float = Field(description="When it was found (Unix time)")
    action: Literal["alert", "block"] = Field(description="What was done: an alert raised, "
                                                          "or a block installed as well")
    remediation_id: str | None = None


class Remediation(Record):
    id: str
    appliance_id: str
    finding_id: str
    source: str = Field(description="The blocked source address", examples=["10.0.1.20"])
    reason: str
    severity: Literal[SEVERITIES]  # type: ignore[valid-type]
    ttl: int = Field(description="Seconds the block lasts")
    created_at: float
    expires_at: float


def read(model: type[R], doc: Document, **known: Any) -> R | None:
    """A stored record as ``model`` (``known`` fills members the store keeps apart, such as
    the id); None, with a warning, when it does not fit."""
    try:
        return model.model_validate({**doc.body, **known})
    except ValidationError as exc:
        LOG.warning("%s %s does not fit its record (%s); not shown", doc.kind, doc.id,
                    exc.errors()[0].get("msg"))
        return None


def read_all(store: Store, kind: str, model: type[R]) -> list[R]:
    """Every record of ``kind`` that fits ``model`` (its id is the document's)."""
    return [r for d in store.list(kind) if (r := read(model, d, id=d.id)) is not None]
