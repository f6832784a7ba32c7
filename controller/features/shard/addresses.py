"""Which shard and address a resource gets: shards' members from the leases, free
addresses (not held, not in quarantine), new shards within `max_shards`.

Pure: the state comes in (`PoolState`, the leases), a new state goes out.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Iterable, Mapping

from controller.features.shard.records import Lease, PoolState, Quarantined
from controller.features.shard.rotation import ACTIVE, DRAINING, RETIRED, Limits, Shard, place

RETIRED_KEPT = 20       # retired shards kept per pool, for GET .../shards


@dataclass(frozen=True)
class Placement:
    state: PoolState
    shard_id: str
    address: str


def with_members(state: PoolState, leases: Iterable[Lease]) -> list[Shard]:
    """The pool's shards, each with the resources whose current address is in it
    (a resource moving into a shard counts there already)."""
    members: dict[str, set[str]] = {s.id: set() for s in state.shards}
    for lease in leases:
        sid = lease.move.to_shard if lease.move else lease.shard_id
        if sid in members and lease.address:
            members[sid].add(lease.id)
    return [replace(s, members=frozenset(members[s.id])) for s in state.shards]


def held_addresses(leases: Iterable[Lease]) -> set[str]:
    return {a for lease in leases for a in lease.held()}


def free_address(shard: Shard, taken: set[str], state: PoolState, now: float,
                 rng: random.Random) -> str | None:
    quarantined = {q.address for q in state.quarantine if q.until > now}
    free = [str(a) for a in shard.cidr.hosts()
            if str(a) not in taken and str(a) not in quarantined]
    return rng.choice(free) if free else None


def id_source(state: PoolState) -> Iterable[str]:
    n = state.next_shard
    while True:
        yield f"{state.id}-s{n}"
        n += 1


def add_shards(state: PoolState, shards: Iterable[Shard]) -> PoolState:
    new = tuple(shards)
    if not new:
        return state
    numbers = [int(s.id.rsplit("-s", 1)[1]) for s in new]
    return replace(state, shards=(*state.shards, *(replace(s, members=frozenset()) for s in new)),
                   next_shard=max(state.next_shard, max(numbers) + 1))


def place_new(limits: Limits, state: PoolState, leases: Mapping[str, Lease], now: float,
              rng: random.Random) -> Placement | None:
    """A shard and address for a resource's first lease (None: the pool is full)."""
    shards = with_members(state, leases.values())
    taken = held_addresses(leases.values())
    for _ in range(4):      # a shard with room by count may have every address quarantined
        existing, created = place(limits, shards, now, rng, id_source(state))
        shard = existing or created
        if shard is None:
            return None
        if created is not None:
            state = add_shards(state, [created])
            shards.append(created)
        address = free_address(shard, taken, state, now, rng)
        if address is not None:
            return Placement(state, shard.id, address)
        shards = [s for s in shards if s.id != shard.id]
    return None


def quarantine(state: PoolState, address: str, until: float, now: float) -> PoolState:
    kept = tuple(q for q in state.quarantine if q.until > now and q.address != address)
    return replace(state, quarantine=(*kept, Quarantined(address, until)))


def settle_shards(state: PoolState, leases: Iterable[Lease], retire: Iterable[str] = ()) -> PoolState:
    """Shards asked to retire drain while an address in them is still held, then retire;
    only the newest retired ones are kept."""
    leases = list(leases)
    held = {IPv4Address(a) for a in held_addresses(leases)}
    asked = set(retire)
    out = []
    for s in state.shards:
        state_ = s.state
        if s.id in asked and state_ == ACTIVE:
            state_ = DRAINING
        if state_ == DRAINING and not any(a in s.cidr for a in held):
            state_ = RETIRED
        out.append(replace(s, state=state_))
    retired = [s for s in out if s.state == RETIRED]
    drop = {s.id for s in sorted(retired, key=lambda s: s.expires_at)[:-RETIRED_KEPT or None]} \
        if len(retired) > RETIRED_KEPT else set()
    return replace(state, shards=tuple(s for s in out if s.id not in drop))
