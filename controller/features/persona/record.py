"""The persona record, typed (``PersonaRecord``), and the conflicts writing one can meet.

The record's body is described in ``controller.features.persona.store``,
which writes it; this module only reads it, so the runtime, the compiler and
the API share one parser of stored records.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from controller.core import claims
from controller.core.claims import ClaimConflict
from controller.features.persona.claims import ACTIVE, KIND, NAME
from controller.features.persona.document import Persona, parse_persona
from controller.store import Document

__all__ = ["ACTIVE", "EXPIRED", "KIND", "STATES", "Attachment", "PersonaConflict",
           "PersonaRecord", "claims_checked"]

EXPIRED = "expired"
STATES = (ACTIVE, EXPIRED)


class PersonaConflict(Exception):
    """A valid request the current state refuses (HTTP 409); ``errors`` name the fields."""

    def __init__(self, detail: str, errors: Iterable[tuple[str, str]] = (),
                 title: str = "Conflict", **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title
        self.errors = [{"field": f, "reason": r} for f, r in errors]
        self.extra = extra


TITLES = {claims.INTERFACE: "Interface in use", claims.RANGE: "Addresses in use",
          NAME: "Name taken"}


@contextmanager
def claims_checked() -> Iterator[None]:
    """A claim held by another owner is a PersonaConflict naming the owner and the field."""
    try:
        yield
    except ClaimConflict as exc:
        extra = {f"{exc.owner_kind}_id": exc.owner_id}
        if exc.claim is not None and exc.claim.space == claims.INTERFACE:
            extra["interface_id"] = exc.claim.key
        space = exc.claim.space if exc.claim is not None else ""
        raise PersonaConflict(exc.message, [(exc.field, exc.reason)],
                              title=TITLES.get(space, "Claimed"), **extra) from None


# -- the record -------------------------------------------------------------------------

@dataclass(frozen=True)
class Attachment:
    """An interface attached to a persona, with its address in the persona's range."""

    interface_id: str
    ip: IPv4Address
    mac: str | None

    def to_body(self) -> dict[str, Any]:
        return {"interface_id": self.interface_id, "ip": str(self.ip), "mac": self.mac}


@dataclass(frozen=True)
class PersonaRecord:
    """A stored persona, typed: what the runtime compiles and realizes."""

    id: str
    revision: int
    persona: Persona = field(hash=False)
    index: int | None
    gateway: IPv4Address
    nat_range: IPv4Network | None
    attachments: tuple[Attachment, ...]
    expires_at: float
    state: str
    expired_at: float | None

    @classmethod
    def from_document(cls, doc: Document) -> PersonaRecord:
        return cls.from_body(doc.id, doc.body, doc.revision)

    @classmethod
    def from_body(cls, id: str, body: dict[str, Any], revision: int = 0) -> PersonaRecord:
        """Read a record body; ValueError (DocumentInvalid) when it is not one."""
        persona = parse_persona(body["document"], None)
        nat = body.get("nat")
        expired_at = body.get("expired_at")
        return cls(
            id=id, revision=revision, persona=persona, index=body.get("index"),
            gateway=IPv4Address(body["gateway"]),
            nat_range=IPv4Network(nat["hub_range"]) if nat else None,
            attachments=tuple(Attachment(a["interface_id"], IPv4Address(a["ip"]), a.get("mac"))
                              for a in body.get("attachments") or ()),
            expires_at=float(body["expires_at"]), state=body.get("state", ACTIVE),
            expired_at=None if expired_at is None else float(expired_at))

    @property
    def name(self) -> str:
        return self.persona.name

    @property
    def ip_range(self) -> IPv4Network:
        return self.persona.ip_range

    @property
    def hub_range(self) -> IPv4Network:
        """The range the hub sees: the NAT block when the persona has one, else its own."""
        return self.nat_range or self.persona.ip_range

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def attachment(self, interface_id: str) -> Attachment | None:
        return next((a for a in self.attachments if a.interface_id == interface_id), None)

    def to_body(self) -> dict[str, Any]:
        return {"document": self.persona.stored_body(), "index": self.index,
                "gateway": str(self.gateway),
                "nat": {"hub_range": str(self.nat_range)} if self.nat_range else None,
                "attachments": [a.to_body() for a in self.attachments],
                "expires_at": self.expires_at, "state": self.state, "expired_at": self.expired_at}
