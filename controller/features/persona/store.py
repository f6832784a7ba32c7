"""The persona record (store kind "persona") and every write to it.

Pure functions over a ``Store``; the caller passes the time. Each write runs
in one store transaction with its journal entry (kind "persona", subject the
persona id), so a refused write changes nothing. The runtime on the hub's
worker thread reads the records (``PersonaRecord.from_document``) and
realizes them; it writes back only through ``mark_expired`` and ``delete``.

Body of a record::

    {"document": <normalized persona document (Persona.stored_body())>,
     "index": 1..32767 | null, "gateway": "10.100.0.1",
     "nat": null | {"hub_range": "100.64.0.0/24"},
     "attachments": [{"interface_id", "ip", "mac"}],
     "expires_at": <Unix time>, "state": "active" | "expired", "expired_at": <Unix time> | null}

An expired record keeps its document and gateway but holds no index, NAT
mapping or attachment: those are free for other personas.

What a live persona holds (its name, index, range, NAT block and attached
interfaces) are its claims (``controller.features.persona.claims``), kept by
the store beside the records: allocation reads them, a few rows, instead of
every record, and every write checks them (``claims.check_write``) in its
transaction, so no other persona, subnet or personality takes the same.

Errors: ``DocumentInvalid`` (the request is wrong: HTTP 422), ``PersonaConflict``
(the request is fine but the current state refuses it: 409), and the store's
``NotFound``, ``AlreadyExists`` and ``RevisionConflict``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from controller.core import claims
from controller.core.documents import DocumentInvalid, merge_patch
from controller.core.topology import Subnet
from controller.features.persona.allocation import (DEFAULT_NAT_POOL, MAX_INDEX, Plan,
                                                    allocate_block, plan)
from controller.features.persona.document import parse_persona, user_fields
from controller.features.persona.record import (ACTIVE, EXPIRED, KIND, STATES, Attachment,
                                                PersonaConflict, PersonaRecord, claims_checked)
from controller.store import Document, NotFound, Store

__all__ = ["ACTIVE", "DEFAULT_NAT_POOL", "EXPIRED", "KIND", "MAX_INDEX", "STATES", "Attachment",
           "Created", "PersonaConflict", "PersonaRecord", "Plan", "allocate_block", "attach",
           "create", "delete", "detach", "live_records",
           "mark_expired", "merge_patch", "plan", "records", "update"]

INTERFACE = "interface"


def records(store: Store) -> list[PersonaRecord]:
    """Every persona record, active and expired, sorted by id."""
    return [PersonaRecord.from_document(d) for d in store.list(KIND)]


def live_records(store: Store) -> list[PersonaRecord]:
    return [r for r in records(store) if r.active]


def _journal(store: Store, id: str, message: str, revision: int, **data: Any) -> None:
    store.append_event(KIND, id, message, {"revision": revision, **data})


def _write(store: Store, id: str, body: dict[str, Any], revision: int | None) -> Document:
    """Replace a record, its claims checked in the same transaction."""
    with store.transaction(), claims_checked():
        claims.check_write(store, KIND, id, body)
        return store.update(KIND, id, body, revision)


# -- writes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Created:
    document: Document
    remapped: dict[str, str]  # other persona id -> the NAT block it was given


def create(store: Store, body: Any, now: float, subnets: Sequence[Subnet],
           nat_pool: IPv4Network = DEFAULT_NAT_POOL, id: str | None = None) -> Created:
    """Store a new persona (and the NAT blocks it gives overlapping ones), all or nothing."""
    with store.transaction():
        p = plan(store, body, now, subnets, nat_pool, id)
        for other, block in p.remapped.items():
            doc = store.get(KIND, other)
            new = _write(store, other, {**doc.body, "nat": {"hub_range": block}}, doc.revision)
            _journal(store, other, f"NAT mapping {block} (range shared with {p.id})", new.revision,
                     hub_range=block)
        with claims_checked():
            claims.check_write(store, KIND, p.id, p.body)
        doc = store.create(KIND, p.id, p.body)
        _journal(store, p.id, "created", doc.revision, index=p.body["index"],
                 nat=p.body["nat"], expires_at=p.body["expires_at"])
    return Created(doc, p.remapped)


def _active(store: Store, id: str) -> Document:
    doc = store.get(KIND, id)
    if doc.body.get("state") != ACTIVE:
        raise PersonaConflict(f"persona {id!r} has expired; create a new one",
                              title="Persona expired", persona_id=id)
    return doc


def update(store: Store, id: str, body_or_patch: Any, now: float, merge: bool,
           revision: int | None = None) -> Document:
    """Replace (``merge=False``) or merge-patch (``merge=True``) a live persona's document.

    Everything may change but ``ip_range`` (its index, gateway, NAT mapping
    and attachments depend on it); a new ``expiration`` moves the deadline.
    ``revision``, when given, must be the current one.
    """
    with store.transaction():
        doc = _active(store, id)
        current = doc.body["document"]
        new = merge_patch(user_fields(current), body_or_patch) if merge else body_or_patch
        persona = parse_persona(new, now)
        if str(persona.ip_range) != current["ip_range"]:
            raise DocumentInvalid([("body.ip_range", f"cannot change (it is {current['ip_range']}); "
                                    "create a new persona for another range")], KIND)
        body = {**doc.body, "document": persona.stored_body(), "expires_at": persona.expires_at}
        updated = _write(store, id, body, revision)
        _journal(store, id, "updated", updated.revision, expires_at=persona.expires_at)
    return updated


def attach(store: Store, id: str, interface_id: str, ip: Any = None) -> Document:
    """Attach an interface to a live persona with ``ip`` (or the lowest free address).

    The interface's claims decide whether it may join: not while it runs a
    personality, has an operation in flight, or belongs to another persona.
    """
    with store.transaction():
        doc = _active(store, id)
        record = PersonaRecord.from_document(doc)
        iface = store.find(INTERFACE, interface_id)
        if iface is None:
            raise DocumentInvalid([("body.interface_id", f"no interface with id {interface_id!r}")], KIND)
        if record.attachment(interface_id) is not None:
            raise PersonaConflict(f"interface {interface_id!r} is already attached to this persona",
                                  [("body.interface_id", "is already attached to this persona")],
                                  title="Interface attached", interface_id=interface_id,
                                  persona_id=id)
        address = _address(record, ip)
        attachment = Attachment(interface_id, address, iface.body.get("mac"))
        body = {**doc.body, "attachments": [*doc.body.get("attachments", []), attachment.to_body()]}
        updated = _write(store, id, body, doc.revision)
        _journal(store, id, f"attached {interface_id} as {address}", updated.revision,
                 **attachment.to_body())
    return updated


def _address(record: PersonaRecord, ip: Any) -> IPv4Address:
    """``ip`` checked against the range, or the lowest free host address after the gateway."""
    rng = record.ip_range
    taken = {a.ip: a.interface_id for a in record.attachments}
    if ip is None:
        for candidate in rng.hosts():
            if candidate != record.gateway and candidate not in taken:
                return candidate
        raise PersonaConflict(f"every address of {rng} is taken", [("body.ip", "no free address left")],
                              title="Range full")
    field = "body.ip"
    try:
        if not isinstance(ip, str):
            raise TypeError(ip)
        address = IPv4Address(ip.strip())
    except (ValueError, TypeError):
        raise DocumentInvalid([(field, f"{ip!r} is not an IPv4 address")], KIND) from None
    if address not in rng:
        raise DocumentInvalid([(field, f"{address} is outside the persona's range {rng}")], KIND)
    for special, what in ((rng.network_address, "network"), (rng.broadcast_address, "broadcast"),
                          (record.gateway, "gateway")):
        if address == special:
            raise DocumentInvalid([(field, f"{address} is the {what} address of {rng}")], KIND)
    if address in taken:
        raise PersonaConflict(f"{address} is taken by interface {taken[address]!r}",
                              [(field, f"is taken by interface {taken[address]!r}")],
                              title="Address taken")
    return address


def detach(store: Store, id: str, interface_id: str) -> tuple[Document, Attachment]:
    """Remove an interface from a persona; NotFound("attachment") when it is not attached."""
    with store.transaction():
        doc = store.get(KIND, id)
        record = PersonaRecord.from_document(doc)
        attachment = record.attachment(interface_id)
        if attachment is None:
            raise NotFound("attachment", interface_id)
        body = {**doc.body, "attachments": [a for a in doc.body["attachments"]
                                            if a["interface_id"] != interface_id]}
        updated = _write(store, id, body, doc.revision)
        _journal(store, id, f"detached {interface_id}", updated.revision, **attachment.to_body())
    return updated, attachment


def mark_expired(store: Store, id: str, now: float) -> Document:
    """Record the end of a persona: no attachments, NAT or index any more (idempotent)."""
    with store.transaction():
        doc = store.get(KIND, id)
        if doc.body.get("state") == EXPIRED:
            return doc
        body = {**doc.body, "state": EXPIRED, "expired_at": now, "attachments": [], "nat": None,
                "index": None}
        updated = _write(store, id, body, doc.revision)
        _journal(store, id, "expired", updated.revision, expires_at=doc.body.get("expires_at"),
                 released={"index": doc.body.get("index"), "nat": doc.body.get("nat"),
                           "attachments": doc.body.get("attachments", [])})
    return updated


def delete(store: Store, id: str, revision: int | None = None) -> Document:
    """Remove a persona record (and so its claims); returns what was stored."""
    with store.transaction():
        doc = store.get(KIND, id)
        claims.check_write(store, KIND, id, None)
        store.delete(KIND, id, revision)
        _journal(store, id, "deleted", doc.revision)
    return doc
