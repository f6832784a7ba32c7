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

Errors: ``DocumentInvalid`` (the request is wrong: HTTP 422), ``PersonaConflict``
(the request is fine but the current state refuses it: 409), and the store's
``NotFound``, ``AlreadyExists`` and ``RevisionConflict``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from controller.core.documents import DocumentInvalid, id_problem, slugify
from controller.features.persona.document import Persona, parse_persona, user_fields
from controller.store import AlreadyExists, Document, NotFound, Store
from controller.core.topology import Subnet

KIND = "persona"
INTERFACE = "interface"
OPERATION = "operation"
ACTIVE, EXPIRED = "active", "expired"
STATES = (ACTIVE, EXPIRED)
MAX_INDEX = 32767
DEFAULT_NAT_POOL = IPv4Network("100.64.0.0/10")
FINAL_OPERATION_STATES = ("succeeded", "rolled_back", "failed")


class PersonaConflict(Exception):
    """A valid request the current state refuses (HTTP 409); ``errors`` name the fields."""

    def __init__(self, detail: str, errors: Iterable[tuple[str, str]] = (),
                 title: str = "Conflict", **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title
        self.errors = [{"field": f, "reason": r} for f, r in errors]
        self.extra = extra


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


Span = tuple[int, int]
"""A range as (first, last) addresses: overlap checks over thousands of
personas are integer comparisons, not ``ipaddress`` objects."""


@lru_cache(maxsize=1 << 16)
def _network(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def span(net: IPv4Network) -> Span:
    return int(net.network_address), int(net.broadcast_address)


def _overlap(a: Span, b: Span) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass(frozen=True)
class _Live:
    """What allocation needs of a live persona, read without validating its document."""

    id: str
    name: str
    index: int
    ip_range: IPv4Network
    nat_range: IPv4Network | None
    attachments: tuple[dict[str, Any], ...]
    ip_span: Span
    hub_span: Span


def _live(store: Store) -> list[_Live]:
    out = []
    for doc in store.list(KIND):
        b = doc.body
        if b.get("state") != ACTIVE:
            continue
        nat = b.get("nat")
        rng = _network(b["document"]["ip_range"])
        mapped = _network(nat["hub_range"]) if nat else None
        out.append(_Live(doc.id, b["document"]["name"], b["index"], rng, mapped,
                         tuple(b.get("attachments") or ()), span(rng), span(mapped or rng)))
    return out


def records(store: Store) -> list[PersonaRecord]:
    """Every persona record, active and expired, sorted by id."""
    return [PersonaRecord.from_document(d) for d in store.list(KIND)]


def live_records(store: Store) -> list[PersonaRecord]:
    return [r for r in records(store) if r.active]


def _journal(store: Store, id: str, message: str, revision: int, **data: Any) -> None:
    store.append_event(KIND, id, message, {"revision": revision, **data})


# -- allocation -------------------------------------------------------------------------

def lowest_free_index(used: Iterable[int]) -> int | None:
    taken = set(used)
    return next((i for i in range(1, MAX_INDEX + 1) if i not in taken), None)


def allocate_block(pool: IPv4Network, prefixlen: int,
                   taken: Iterable[IPv4Network | Span]) -> IPv4Network | None:
    """The lowest aligned /prefixlen block of ``pool`` that overlaps nothing in ``taken``.

    One pass over the taken ranges sorted by start: each one in the way moves
    the candidate to the next aligned block after it, so allocating among
    thousands of mappings stays linear.
    """
    if prefixlen < pool.prefixlen:
        return None
    size = 1 << (32 - prefixlen)
    first, last = int(pool.network_address), int(pool.broadcast_address)
    spans = sorted(n if isinstance(n, tuple) else span(n) for n in taken)
    candidate = first
    for start, end in spans:
        if end < candidate:
            continue
        if start > candidate + size - 1:
            break
        candidate = (end + size) // size * size  # the aligned block after this range
        if candidate + size - 1 > last:
            return None
    if candidate + size - 1 > last:
        return None
    return IPv4Network((candidate, prefixlen))


@dataclass(frozen=True)
class Plan:
    """A persona as ``create`` would store it: its id, record body, and the NAT
    blocks other live personas would get (persona id -> hub range)."""

    id: str
    body: dict[str, Any]
    remapped: dict[str, str]


def _new_id(store: Store, persona: Persona, id: str | None) -> str:
    if id is not None:
        reason = id_problem(id)
        if reason:
            raise DocumentInvalid([("body.id", reason)], KIND)
        if store.find(KIND, id) is not None:
            raise AlreadyExists(KIND, id)
        return id
    base = slugify(persona.name) or "persona"
    candidate, n = base, 1
    while store.find(KIND, candidate) is not None:  # an expired record keeps its id
        n += 1
        candidate = f"{base[:60]}-{n}"
    return candidate


def _name_free(persona: Persona, live: Sequence[_Live], but: str | None = None) -> None:
    for other in live:
        if other.id != but and other.name == persona.name:
            raise PersonaConflict(f"a live persona is already named {persona.name!r} ({other.id})",
                                  [("body.name", f"is the name of live persona {other.id!r}; "
                                                 "names are unique among live personas")],
                                  title="Name taken", persona_id=other.id)


def _subnet_errors(persona: Persona, subnets: Sequence[Subnet]) -> list[tuple[str, str]]:
    return [("body.ip_range", f"{persona.ip_range} overlaps hub subnet {s.id!r} ({s.cidr})")
            for s in subnets if persona.ip_range.overlaps(s.cidr)]


def plan(store: Store, body: Any, now: float, subnets: Sequence[Subnet],
         nat_pool: IPv4Network = DEFAULT_NAT_POOL, id: str | None = None) -> Plan:
    """Validate a new persona against the store and allocate what it needs; writes nothing.

    The index is the lowest one no live persona holds, the gateway the first
    address of the range. When the range overlaps a live persona's range (its
    own or its NAT block), the new persona and every overlapping one that has
    no NAT mapping yet get a block of their own size from ``nat_pool``: the
    lowest aligned one overlapping no other mapping, hub subnet or live range.
    """
    persona = parse_persona(body, now)
    errors = _subnet_errors(persona, subnets)
    if errors:
        raise DocumentInvalid(errors, KIND)
    live = _live(store)
    _name_free(persona, live)
    index = lowest_free_index(p.index for p in live)
    if index is None:
        raise PersonaConflict(f"all {MAX_INDEX} persona indexes are in use; delete a persona first",
                              title="Too many personas")
    new_id = _new_id(store, persona, id)
    rng, mine = persona.ip_range, span(persona.ip_range)
    clashing = [p for p in live if _overlap(mine, p.ip_span) or _overlap(mine, p.hub_span)]
    nat: IPv4Network | None = None
    remapped: dict[str, str] = {}
    if clashing:
        taken: list[IPv4Network | Span] = [s.cidr for s in subnets] + [p.ip_span for p in live] + \
            [p.hub_span for p in live if p.nat_range is not None] + [mine]
        needing = sorted((p for p in clashing if p.nat_range is None and _overlap(mine, p.ip_span)),
                         key=lambda p: p.index)
        for who, size in [*((p.id, p.ip_range.prefixlen) for p in needing), (new_id, rng.prefixlen)]:
            block = allocate_block(nat_pool, size, taken)
            if block is None:
                raise PersonaConflict(
                    f"the NAT pool {nat_pool} has no free /{size} block left for {who}",
                    [("body.ip_range", f"{rng} overlaps persona "
                      f"{', '.join(repr(p.id) for p in clashing)}, and the NAT pool {nat_pool} "
                      f"has no free /{size} block to map it to")],
                    title="NAT pool exhausted", nat_pool=str(nat_pool))
            taken.append(block)
            if who == new_id:
                nat = block
            else:
                remapped[who] = str(block)
    record = {"document": persona.stored_body(), "index": index, "gateway": str(persona.gateway),
              "nat": {"hub_range": str(nat)} if nat else None, "attachments": [],
              "expires_at": persona.expires_at, "state": ACTIVE, "expired_at": None}
    return Plan(new_id, record, remapped)


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
            new = store.update(KIND, other, {**doc.body, "nat": {"hub_range": block}}, doc.revision)
            _journal(store, other, f"NAT mapping {block} (range shared with {p.id})", new.revision,
                     hub_range=block)
        doc = store.create(KIND, p.id, p.body)
        _journal(store, p.id, "created", doc.revision, index=p.body["index"],
                 nat=p.body["nat"], expires_at=p.body["expires_at"])
    return Created(doc, p.remapped)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


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
        _name_free(persona, _live(store), but=id)
        body = {**doc.body, "document": persona.stored_body(), "expires_at": persona.expires_at}
        updated = store.update(KIND, id, body, revision)
        _journal(store, id, "updated", updated.revision, expires_at=persona.expires_at)
    return updated


def attach(store: Store, id: str, interface_id: str, ip: Any = None) -> Document:
    """Attach an interface to a live persona with ``ip`` (or the lowest free address)."""
    with store.transaction():
        doc = _active(store, id)
        record = PersonaRecord.from_document(doc)
        iface = store.find(INTERFACE, interface_id)
        if iface is None:
            raise DocumentInvalid([("body.interface_id", f"no interface with id {interface_id!r}")], KIND)
        _attachable(store, id, iface)
        address = _address(record, ip)
        attachment = Attachment(interface_id, address, iface.body.get("mac"))
        body = {**doc.body, "attachments": [*doc.body.get("attachments", []), attachment.to_body()]}
        updated = store.update(KIND, id, body, doc.revision)
        _journal(store, id, f"attached {interface_id} as {address}", updated.revision,
                 **attachment.to_body())
    return updated


def _attachable(store: Store, id: str, iface: Document) -> None:
    field = "body.interface_id"
    pid = iface.body.get("personality_id")
    if pid is not None:
        raise PersonaConflict(
            f"interface {iface.id!r} runs personality {pid!r}; an interface takes a personality "
            "or joins a persona, not both", [(field, f"runs personality {pid!r}")],
            title="Interface has a personality", interface_id=iface.id, personality_id=pid)
    op_id = iface.body.get("operation_id")
    op = store.find(OPERATION, op_id) if op_id else None
    if op is not None and op.body.get("state") not in FINAL_OPERATION_STATES:
        raise PersonaConflict(
            f"interface {iface.id!r} has an unfinished personality operation {op_id}",
            [(field, f"is busy with operation {op_id!r}")], title="Interface busy",
            interface_id=iface.id, operation_id=op_id)
    for other in _live(store):
        if any(a["interface_id"] == iface.id for a in other.attachments):
            where = "this persona" if other.id == id else f"persona {other.id!r}"
            raise PersonaConflict(f"interface {iface.id!r} is already attached to {where}",
                                  [(field, f"is already attached to {where}")],
                                  title="Interface attached", interface_id=iface.id,
                                  persona_id=other.id)


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
        updated = store.update(KIND, id, body, doc.revision)
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
        updated = store.update(KIND, id, body, doc.revision)
        _journal(store, id, "expired", updated.revision, expires_at=doc.body.get("expires_at"),
                 released={"index": doc.body.get("index"), "nat": doc.body.get("nat"),
                           "attachments": doc.body.get("attachments", [])})
    return updated


def delete(store: Store, id: str, revision: int | None = None) -> Document:
    """Remove a persona record; returns what was stored."""
    with store.transaction():
        doc = store.get(KIND, id)
        store.delete(KIND, id, revision)
        _journal(store, id, "deleted", doc.revision)
    return doc


def attached_to(store: Store, interface_id: str) -> str | None:
    """The live persona an interface is attached to, if any."""
    return next((p.id for p in _live(store)
                 if any(a["interface_id"] == interface_id for a in p.attachments)), None)


def claimed_by(store: Store, net: IPv4Network) -> str | None:
    """The live persona whose range or NAT block overlaps ``net``, if any."""
    return next((p.id for p in _live(store)
                 if p.ip_range.overlaps(net) or (p.nat_range and p.nat_range.overlaps(net))), None)
