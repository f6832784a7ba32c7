"""Claims: which feature owns an interface, which IPv4 ranges and numbers are taken.

A feature declares, for a stored kind, the claims a document of that kind
makes: ``declare(kind, extractor, feature=...)``, where ``extractor(id, body)``
returns a list of ``Claim``.  The claims live in the store next to the
documents (``controller.store`` claim rows): the store's write hook records
the claims of every write in the write's own transaction, so the rows always
say what the stored documents claim, whoever wrote them.  Recording never
refuses.  Refusing is ``check_write``: a writer acting for a request calls it
inside its ``store.transaction()`` before writing, and a claim another owner
holds raises ``ClaimConflict`` (HTTP 409, naming the owner and the field).
The SQLite store serialises transactions, so two writers cannot both pass.

Three spaces of claims, and one rule each:

* ``interface`` (``Claim.interface``): an interface has one holder.  The
  personality feature holds an interface that runs a personality or has an
  operation in flight; a persona holds its attached interfaces.
* a feature's own numbered or named space (``Claim.unique``, e.g.
  "persona.index"): one holder per value.  ``lowest_free`` allocates in it.
* ``ipv4`` (``Claim.range``): ranges of different features may not overlap.
  One feature's ranges may: it allocates among its own (overlapping personas
  get NAT blocks: allocation, not a claim; the NAT block itself is a claim).

A holder re-writing a claim it already holds is never refused, so a
conflict left by data written before the rule (a configured subnet over a
persona) does not block unrelated changes.  The rows are rebuilt from the
documents when the declarations change (a new store, a new feature, an
upgraded database): ``rebuild``.  Declarations are made when a feature's
package is imported; ``controller.registry`` imports every feature.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, NamedTuple

from controller.store import ClaimRow, Store, add_write_hook, claim_order

LOG = logging.getLogger(__name__)

INTERFACE = "interface"
RANGE = "ipv4"
META_KEY = "claims"
FORMAT = "1"   # bump when the meaning of stored rows changes: every store rebuilds


class Owner(NamedTuple):
    """Whom a claim is held for: "<kind> <id>", e.g. ``personality web``."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class Claim:
    """One claim a document makes; build it with ``interface``, ``range`` or ``unique``.

    ``field`` is where the claim comes from in the request that writes it
    (``body.ip_range``); ``reason`` says what holding it means, for the other
    side of a conflict ("runs personality 'web'"); ``owner`` defaults to the
    holding document itself.
    """

    space: str
    key: str
    field: str
    reason: str
    owner: Owner | None = None
    first: int = 0
    last: int = 0

    @classmethod
    def interface(cls, interface_id: str, field: str, reason: str,
                  owner: Owner | None = None) -> Claim:
        return cls(INTERFACE, interface_id, field, reason, owner)

    @classmethod
    def range(cls, cidr: str | IPv4Network, field: str, reason: str,
              owner: Owner | None = None) -> Claim:
        net = IPv4Network(cidr)
        return cls(RANGE, str(net), field, reason, owner,
                   int(net.network_address), int(net.broadcast_address))

    @classmethod
    def unique(cls, space: str, value: str | int, field: str, reason: str,
               owner: Owner | None = None) -> Claim:
        """``value`` of a feature's own ``space``; an int can be allocated by ``lowest_free``."""
        assert space not in (INTERFACE, RANGE), space
        number = value if isinstance(value, int) else 0
        return cls(space, str(value), field, reason, owner, number, number)


class ClaimConflict(Exception):
    """A write would take a claim another owner holds (HTTP 409).

    ``owner`` ("persona dev-1"), ``field`` (of the refused write,
    "body.cidr"), ``message`` (one sentence); ``reason`` is what the owner's
    claim means ("is the range of persona 'dev-1'"), ``claim`` the refused
    claim and ``held`` the row in the way.
    """

    def __init__(self, owner: str, field: str, message: str, *, reason: str = "",
                 claim: ClaimRow | None = None, held: ClaimRow | None = None) -> None:
        super().__init__(message)
        self.owner, self.field, self.message = owner, field, message
        self.reason, self.claim, self.held = reason, claim, held

    @property
    def owner_kind(self) -> str:
        return self.owner.partition(" ")[0]

    @property
    def owner_id(self) -> str:
        return self.owner.partition(" ")[2]


Extractor = Callable[[str, dict[str, Any]], list[Claim]]


class _Declaration(NamedTuple):
    feature: str
    extractor: Extractor


_DECLARED: dict[str, list[_Declaration]] = {}


def declare(kind: str, extractor: Extractor, *, feature: str) -> None:
    """Documents of ``kind`` make the claims ``extractor(id, body)`` returns, for ``feature``."""
    entries = _DECLARED.setdefault(kind, [])
    if any(d.extractor is extractor for d in entries):
        return
    entries.append(_Declaration(feature, extractor))


def signature() -> str:
    """The declarations in force, as stored with the rows built from them."""
    parts = sorted(f"{kind}={d.feature}:{d.extractor.__module__}.{d.extractor.__qualname__}"
                   for kind, entries in _DECLARED.items() for d in entries)
    return ";".join([FORMAT, *parts])


# -- writing ----------------------------------------------------------------------------

def check_write(store: Store, kind: str, id: str, body: dict[str, Any] | None) -> None:
    """Refuse (ClaimConflict) or record the claims of writing ``body`` as (kind, id).

    Call it inside the transaction of the write, before writing; ``body`` is
    None for a delete.  The old claims of (kind, id) are released.
    """
    with store.transaction():
        _apply(store, kind, id, body, refuse=True)


def _record(store: Store, kind: str, id: str, body: dict[str, Any] | None) -> None:
    """The store's write hook: keep the rows in step with every write, refusing nothing."""
    _apply(store, kind, id, body, refuse=False)


def _apply(store: Store, kind: str, id: str, body: dict[str, Any] | None, *,
           refuse: bool) -> None:
    if kind not in _DECLARED:
        return
    _ensure_built(store)
    new = sorted(_rows(kind, id, body), key=claim_order)
    old = store.claims_of(kind, id)
    if new == old:
        return
    if refuse:
        held = {(r.space, r.key) for r in old}
        for row in new:
            if (row.space, row.key) not in held:
                _refuse_taken(store, row)
    store.set_claims(kind, id, new)


def _rows(kind: str, id: str, body: dict[str, Any] | None) -> list[ClaimRow]:
    if body is None:
        return []
    rows: dict[tuple[str, str], ClaimRow] = {}
    for decl in _DECLARED.get(kind, ()):
        try:
            claims = decl.extractor(id, body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            LOG.warning("%s %s: claims not readable (%s); it claims nothing", kind, id, exc)
            continue
        for c in claims:
            owner = str(c.owner or Owner(kind, id))
            rows.setdefault((c.space, c.key), ClaimRow(c.space, c.key, c.first, c.last, kind, id,
                                                       decl.feature, owner, c.reason, c.field))
    return list(rows.values())


def _refuse_taken(store: Store, row: ClaimRow) -> None:
    if row.space == RANGE:
        others = [o for o in store.claims_overlapping(RANGE, row.first, row.last)
                  if o.feature != row.feature]
    else:
        others = [o for o in store.claims_on(row.space, row.key)
                  if (o.holder_kind, o.holder_id) != (row.holder_kind, row.holder_id)]
    if not others:
        return
    held = others[0]
    reason = held.reason or f"is claimed by {held.owner}"
    if row.space == RANGE:
        message = f"{row.key} overlaps {held.key}, which {reason}"
    elif row.space == INTERFACE:
        message = f"interface {row.key} {reason}"
    else:
        message = f"{row.key!r} {reason}"
    raise ClaimConflict(held.owner, row.field, message, reason=reason, claim=row, held=held)


# -- reading ----------------------------------------------------------------------------

def holders(store: Store, space: str, key: str) -> list[ClaimRow]:
    """Who holds ``key`` of ``space`` (an interface id, a name)."""
    _ensure_built(store)
    return store.claims_on(space, key)


def overlapping(store: Store, net: IPv4Network) -> list[ClaimRow]:
    """Every range claim overlapping ``net``, of any feature."""
    _ensure_built(store)
    return store.claims_overlapping(RANGE, int(net.network_address), int(net.broadcast_address))


def lowest_free(store: Store, space: str, lo: int, hi: int) -> int | None:
    """The lowest number of ``space`` in lo..hi nobody holds, or None when all are held."""
    _ensure_built(store)
    return store.lowest_free_number(space, lo, hi)


# -- rebuilding -------------------------------------------------------------------------

def _ensure_built(store: Store) -> None:
    """Rebuild the rows when they were built from other declarations (or never).

    Read from the store every time, not remembered: a rebuild inside a
    transaction that is rolled back is undone with it.
    """
    sig = signature()
    if store.get_meta(META_KEY) != sig:
        rebuild(store)


def rebuild(store: Store) -> None:
    """Recompute every claim row from the stored documents of the declared kinds."""
    sig = signature()
    with store.transaction():
        store.clear_claims()
        for kind in sorted(_DECLARED):
            for doc in store.list(kind):
                store.set_claims(kind, doc.id, _rows(kind, doc.id, doc.body))
        store.set_meta(META_KEY, sig)


add_write_hook(_record)
