"""Allocation for a new persona: its id, index, gateway and NAT blocks (``plan``).

Reads the claims (``controller.core.claims``), not the records: the lowest
free index, the personas overlapping a range and the ranges taken in the NAT
pool are each a few rows of the store's claim index, however many personas
there are.  Writes nothing; ``controller.features.persona.store.create``
stores the plan.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Network
from typing import Any

from controller.core import claims
from controller.core.documents import DocumentInvalid, id_problem, slugify
from controller.core.topology import Subnet
from controller.features.persona import net
from controller.features.persona.claims import ACTIVE, INDEX, KIND
from controller.features.persona.document import Persona, parse_persona
from controller.features.persona.record import PersonaConflict
from controller.store import AlreadyExists, Store

MAX_INDEX = net.MAX_INDEX  # one conntrack zone per index (controller.core.budgets)
DEFAULT_NAT_POOL = IPv4Network("100.64.0.0/10")

Span = tuple[int, int]
"""A range as (first, last) addresses: allocation compares integers, not ``ipaddress`` objects."""


@lru_cache(maxsize=1 << 16)
def _network(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def span(net: IPv4Network) -> Span:
    return int(net.network_address), int(net.broadcast_address)


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


def _free_index(store: Store) -> int:
    index = claims.lowest_free(store, INDEX, 1, MAX_INDEX)
    if index is None:
        raise PersonaConflict(f"all {MAX_INDEX} persona indexes are in use; delete a persona first",
                              title="Too many personas")
    return index


def _subnet_errors(persona: Persona, subnets: Sequence[Subnet]) -> list[tuple[str, str]]:
    return [("body.ip_range", f"{persona.ip_range} overlaps hub subnet {s.id!r} ({s.cidr})")
            for s in subnets if persona.ip_range.overlaps(s.cidr)]


def _clashing(store: Store, rng: IPv4Network) -> dict[str, dict[str, Any]]:
    """The live personas whose range or NAT block overlaps ``rng``: id -> record body."""
    ids = sorted({r.holder_id for r in claims.overlapping(store, rng) if r.holder_kind == KIND})
    return {pid: store.get(KIND, pid).body for pid in ids}


def _nat_blocks(store: Store, persona: Persona, new_id: str, subnets: Sequence[Subnet],
                pool: IPv4Network) -> dict[str, IPv4Network]:
    """The NAT blocks a new persona's range calls for: persona id -> block (maybe none).

    When the range overlaps a live persona's range or NAT block, the new
    persona and each overlapping one without a NAT block yet (lowest index
    first) get a block of their own size from ``pool``: the lowest aligned
    one overlapping no hub subnet and no claimed range (any persona's range
    or block, any other feature's range).
    """
    rng = persona.ip_range
    clashing = _clashing(store, rng)
    if not clashing:
        return {}
    taken: list[IPv4Network | Span] = [s.cidr for s in subnets] + [rng] + \
        [(r.first, r.last) for r in claims.overlapping(store, pool)]
    needing = sorted((pid for pid, b in clashing.items() if not b.get("nat")
                      and _network(b["document"]["ip_range"]).overlaps(rng)),
                     key=lambda pid: clashing[pid]["index"])
    blocks: dict[str, IPv4Network] = {}
    for who in [*needing, new_id]:
        size = rng.prefixlen if who == new_id else \
            _network(clashing[who]["document"]["ip_range"]).prefixlen
        block = allocate_block(pool, size, taken)
        if block is None:
            raise PersonaConflict(
                f"the NAT pool {pool} has no free /{size} block left for {who}",
                [("body.ip_range", f"{rng} overlaps persona {', '.join(map(repr, clashing))}, "
                  f"and the NAT pool {pool} has no free /{size} block to map it to")],
                title="NAT pool exhausted", nat_pool=str(pool))
        taken.append(block)
        blocks[who] = block
    return blocks


def plan(store: Store, body: Any, now: float, subnets: Sequence[Subnet],
         nat_pool: IPv4Network = DEFAULT_NAT_POOL, id: str | None = None) -> Plan:
    """Validate a new persona against the store and allocate what it needs; writes nothing.

    The index is the lowest one no live persona holds, the gateway the first
    address of the range, the NAT blocks those of ``_nat_blocks``. Reads the
    claims, not the records: a few rows however many personas there are.
    The claims the record makes (its name, its range against other features'
    ranges) are checked when ``create`` writes it, in the same transaction.
    """
    persona = parse_persona(body, now)
    errors = _subnet_errors(persona, subnets)
    if errors:
        raise DocumentInvalid(errors, KIND)
    index = _free_index(store)
    new_id = _new_id(store, persona, id)
    blocks = _nat_blocks(store, persona, new_id, subnets, nat_pool)
    nat = blocks.pop(new_id, None)
    record = {"document": persona.stored_body(), "index": index, "gateway": str(persona.gateway),
              "nat": {"hub_range": str(nat)} if nat else None, "attachments": [],
              "expires_at": persona.expires_at, "state": ACTIVE, "expired_at": None}
    return Plan(new_id, record, {pid: str(b) for pid, b in blocks.items()})
