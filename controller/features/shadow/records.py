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
"""
from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.features.shadow.document import PROFILES, SEVERITIES
from controller.store import Document, Store

LOG = logging.getLogger(__name__)

INSTANCE_STATES = ("launching", "ready", "failed", "stopped")
FREE = "free"
Count = Annotated[int, Field(ge=0)]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Instance(Record):
    id: str
    slot_id: str = Field(description="The shadow slot it runs on")
    state: Literal[INSTANCE_STATES]  # type: ignore[valid-type]


class Percentage(Record):
    current: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        description="The share of new connections mirrored now")
    reason: str = Field(description="Why it is what it is", examples=["as configured"])


class Counters(Record):
    connections: Count = Field(default=0, description="Connections mirrored")
    packets: Count = 0
    bytes: Count = 0
    dropped: Count = Field(default=0, description="Copies lost on the way to the shadows")


class ShadowState(Record):
    instances: list[Instance] = Field(default_factory=list)
    percentage: Percentage | None = None
    counters: Counters = Field(default_factory=Counters)


class SlotState(Record):
    state: str = Field(default=FREE, examples=[FREE, "connected", "running"])
    appliance_id: str | None = Field(default=None, description="Whose instance it runs")
    instance_id: str | None = None
    updated_at: float | None = None


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
    five_tuple: FiveTuple
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


R = TypeVar("R", bound=Record)


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
