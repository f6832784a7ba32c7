"""Switch operations: the persisted record of one personality change on one interface.

An operation is created (state ``pending``) by whoever asks for a change (the
REST API, a personality update, an expiry timer), and then walked through its
states by the coordinator (`controller.features.personality.changes`) on the hub's
worker thread.  Everything the coordinator learns is written back to the
record, so a restarted controller finds every unfinished operation in the
store and can finish or roll it back.

Body of a store document of kind ``operation``::

    {"interface_id", "kind", "from_personality_id", "to_personality_id",
     "drain": {"max_seconds", "until"}, "health_checks": [...],
     "state", "connections", "result", "reason", "log": [{"at", "state", "message"}],
     "created_at", "finished_at"}

The interface record's ``operation_id`` names its unfinished operation: one at
a time per interface.  Setting it claims the interface for the personality
feature (``controller.features.personality.claims``), checked in the
transaction that creates the operation: an interface attached to a persona
takes no operation (``ClaimConflict``), and none joins a persona while one is
in flight.  ``FINAL`` are the states an operation ends in.
"""
from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from controller.core import claims
from controller.core.documents import IPV4_SCHEMA, DocumentInvalid, DocumentModel, IPv4, errors_of, fail, rule
from controller.store import Document, Store

KIND = "operation"
STATES = ("pending", "transition", "draining", "applying", "verifying",
          "succeeded", "rolled_back", "failed")
FINAL = ("succeeded", "rolled_back", "failed")
KINDS = ("switch", "revert", "expiry", "update", "apply")
LOG_MAX = 200


class Drain(DocumentModel):
    """How long established connections may keep the old personality."""
    max_seconds: Annotated[float, Field(ge=0, le=86400)] = 30.0
    until: Literal["zero-connections", "timeout"] = "zero-connections"


class HealthCheck(DocumentModel):
    """One check run from the interface, through its new personality, after the apply.

    ``gateway``: ICMP echo to ``target`` (default: the personality subnet's
    gateway).  ``ping``: ICMP echo to ``target``.  ``dns``: an A query to
    ``target`` (default: every server in the personality's ``dns_servers``);
    any answer counts.  ``tcp``: a SYN to ``target``:``port`` must be
    answered with a SYN-ACK.  Each must pass within ``timeout_seconds``.
    """
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"type": {"enum": ["ping", "tcp"]}}, "required": ["type"]},
         "then": {"properties": {"target": IPV4_SCHEMA}, "required": ["target"]}},
        {"if": {"properties": {"type": {"const": "tcp"}}, "required": ["type"]},
         "then": {"properties": {"port": {"type": "integer"}}, "required": ["port"]},
         "else": {"properties": {"port": {"type": "null"}}}}]})

    type: Literal["gateway", "ping", "dns", "tcp"]
    target: IPv4 | None = Field(default=None, validate_default=True, json_schema_extra=rule(
        "a gateway or dns check without one needs the personality's subnet or dns_servers"))
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] | None = Field(default=None, validate_default=True)
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 3.0

    @field_validator("target")
    @classmethod
    def _target_needed(cls, target: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if target is None and kind in ("ping", "tcp"):
            fail(f"a {kind} check needs a target address")
        return target

    @field_validator("port")
    @classmethod
    def _port_for_tcp(cls, port: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("type")
        if kind is not None and (kind == "tcp") != (port is not None):
            fail("a tcp check needs a port; other checks take none")
        return port


class SwitchRequest(DocumentModel):
    """Body of ``POST /v1/interfaces/{id}/switch``."""
    personality_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        json_schema_extra=rule(
            "names a stored personality (a dry run: one the hub can compile for the interface)"))
    drain: Drain = Field(default_factory=Drain)
    health_checks: list[HealthCheck] = Field(default_factory=list)
    dry_run: bool = False


def parse_switch_request(body: Any) -> SwitchRequest:
    if not isinstance(body, dict):
        raise DocumentInvalid([("body", "must be an object")], "switch request")
    try:
        return SwitchRequest.model_validate(body)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), "switch request") from None


class Busy(RuntimeError):
    """The interface already has an unfinished operation."""

    def __init__(self, interface_id: str, operation_id: str) -> None:
        super().__init__(f"interface {interface_id} is busy with operation {operation_id}")
        self.interface_id, self.operation_id = interface_id, operation_id


def new_id() -> str:
    return "op-" + uuid.uuid4().hex[:12]


def create(store: Store, interface_id: str, to_personality_id: str, *, kind: str,
           now: float, drain: Drain | None = None,
           health_checks: list[HealthCheck] | None = None, reason: str | None = None) -> Document:
    """Persist a pending operation and lock the interface to it.

    Raises Busy (an unfinished operation holds the interface), NotFound, and
    ClaimConflict (another feature holds the interface: a persona).
    """
    assert kind in KINDS, kind
    with store.transaction():
        iface = store.get("interface", interface_id)
        busy = iface.body.get("operation_id")
        if busy:
            op = store.find(KIND, busy)
            if op is not None and op.body["state"] not in FINAL:
                raise Busy(interface_id, busy)
        op_id = new_id()
        locked = {**iface.body, "operation_id": op_id}
        claims.check_write(store, "interface", interface_id, locked)
        body = {
            "interface_id": interface_id, "kind": kind,
            "from_personality_id": iface.body.get("personality_id"),
            "to_personality_id": to_personality_id,
            "drain": (drain or Drain()).model_dump(),
            "health_checks": [c.model_dump(mode="json") for c in health_checks or []],
            "state": "pending", "connections": None, "result": None, "reason": reason,
            "log": [{"at": now, "state": "pending",
                     "message": f"{kind}: {iface.body.get('personality_id')} -> {to_personality_id}"
                                + (f" ({reason})" if reason else "")}],
            "created_at": now, "finished_at": None,
        }
        doc = store.create(KIND, op_id, body)
        store.put("interface", interface_id, locked)
        store.append_event("operation", op_id, "created",
                           {"interface_id": interface_id, "kind": kind,
                            "to_personality_id": to_personality_id})
    return doc


def view(doc: Document) -> dict[str, Any]:
    """The REST shape of an operation."""
    return {"id": doc.id, "revision": doc.revision, **doc.body}


def history_entry(doc: Document) -> dict[str, Any]:
    """One line of an interface's switch history (``GET /v1/interfaces/{id}/history``)."""
    b = doc.body
    return {"operation": doc.id, "kind": b["kind"], "at": b["created_at"],
            "finished_at": b["finished_at"], "from": b["from_personality_id"],
            "to": b["to_personality_id"], "state": b["state"], "result": b["result"],
            "reason": b["reason"]}


def history(store: Store, interface_id: str) -> list[dict[str, Any]]:
    ops = [d for d in store.list(KIND) if d.body["interface_id"] == interface_id]
    return [history_entry(d) for d in sorted(ops, key=lambda d: d.body["created_at"])]
