"""Pydantic response models; they exist so /openapi.json documents the API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    datapaths_connected: int
    uptime_s: float


class Port(BaseModel):
    port_no: int
    name: str
    up: bool
    role: Literal["host", "link", "unknown"]


class FlowSummary(BaseModel):
    desired: int = Field(description="Flow entries the compiler wants installed")
    installed: int = Field(description="Flow entries last seen on the switch")
    in_sync: bool


class Datapath(BaseModel):
    id: str = Field(description="Datapath id as 16 lowercase hex digits", examples=["0000000000000a01"])
    dpid: int
    connected: bool
    of_version: str | None = Field(description="Negotiated OpenFlow version, e.g. 1.4")
    ports: list[Port]
    flows: FlowSummary
    last_reconciled_at: float | None = Field(description="Unix time of the last flow reconciliation")


class Switch(BaseModel):
    id: str
    dpid: int
    connected: bool


class LinkEnd(BaseModel):
    datapath: str
    port_no: int


class Link(BaseModel):
    src: LinkEnd
    dst: LinkEnd


class Host(BaseModel):
    mac: str
    ips: list[str]
    datapath: str
    port_no: int
    last_seen: float


class Topology(BaseModel):
    switches: list[Switch]
    links: list[Link]
    hosts: list[Host]


class Event(BaseModel):
    seq: int
    ts: float
    kind: str
    subject: str
    message: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[Event]
    next: int | None = Field(description="seq of the last item; pass it as `after` for the next page")


class FieldError(BaseModel):
    field: str = Field(examples=["query.limit"])
    reason: str


class ProblemDetails(BaseModel):
    """RFC 7807 problem document, served as application/problem+json."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] = []
