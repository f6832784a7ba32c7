"""A rotation round carried out: moves as a state machine that survives a restart.

Pure: functions from the leases and the pool's state to new ones.  The
runtime sends what they ask (ANNOUNCE, RELEASE), recompiles the flows, and
reports realization and connection counts back.

One move (docs/rap.md, "the hub's state machine"):

1. `start_round` plans the round (`rotation.plan_round`) and gives every
   moving resource a new address in its target shard: its lease gets a
   `Move` in state ANNOUNCING, with a deadline;
2. the runtime sends ANNOUNCE (from 1 s, doubling) until the ACK
   (`acked`) or the deadline (`failed`: the resource keeps its address);
3. `acked`: the new address becomes current (new connections go there once
   the switches hold it: state SWITCHING), the old one deprecated;
4. `realized`: the switches hold it; the move is over, the step done;
5. a deprecated address is released once it has no connections or its time
   is over (`drained`), and its address goes to quarantine.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from controller.features.shard.addresses import (add_shards, free_address, held_addresses,
                                                 id_source, quarantine, settle_shards,
                                                 with_members)
from controller.features.shard.document import ShardPool
from controller.features.shard.records import (ANNOUNCING, LEASED, SWITCHING, Deprecated, Lease,
                                               Move, PoolState, Rotation, Step)
from controller.features.shard.rotation import plan_round

ANNOUNCE_DEADLINE = 15.0        # 1 + 2 + 4 + 8 s of retransmissions, then the move fails


@dataclass(frozen=True)
class Started:
    rotation: Rotation
    state: PoolState
    leases: dict[str, Lease]            # the leases that changed (a move started)


def start_round(pool: ShardPool, state: PoolState, leases: Mapping[str, Lease], round_id: str,
                now: float, rng: random.Random, force: Iterable[str] = (),
                reason: str = "interval") -> Started:
    # Only resources with a lease and no move in flight take part.
    settled = {k: v for k, v in leases.items() if v.state == LEASED and v.move is None}
    shards = with_members(state, settled.values())
    rnd = plan_round(pool.limits(), shards, now, rng, id_source(state), force)
    state = add_shards(state, rnd.created)
    rotation = Rotation(round_id, state.id, now, tuple(force), reason,
                        created_shards=[s.id for s in rnd.created],
                        retired_shards=list(rnd.retired), waiting=list(rnd.waiting))
    taken = held_addresses(leases.values())
    changed: dict[str, Lease] = {}
    for move in rnd.moves:
        lease = settled[move.resource]
        step = Step(move.resource, move.from_shard, move.to_shard, from_address=lease.address,
                    started_at=now)
        rotation.steps.append(step)
        target = state.shard(move.to_shard)
        address = free_address(target, taken, state, now, rng) if target else None
        if address is None:
            step.state, step.message = "failed", "no free address in the target shard"
            continue
        taken.add(address)
        step.to_address, step.state = address, ANNOUNCING
        changed[lease.id] = replace(lease, move=Move(round_id, move.to_shard, address, ANNOUNCING,
                                                     now, now + ANNOUNCE_DEADLINE)).logged(
            now, "announcing", address=address, round=round_id)
    if reason == "interval":    # the interval runs on whatever else started rounds meanwhile
        state = replace(state, last_round_at=now)
    state = settle_shards(state, [*changed.values(), *leases.values()], rnd.retired)
    rotation.settle(now)
    return Started(rotation, state, changed)


def acked(lease: Lease, pool: ShardPool, now: float, lifetime: float) -> Lease:
    """The resource uses its new address: it becomes current, the old one deprecated."""
    move = lease.move
    assert move is not None and move.state == ANNOUNCING
    old = ()
    if lease.address is not None and lease.shard_id is not None:
        old = (Deprecated(lease.address, lease.shard_id, now, now + lifetime),)
    return replace(lease, address=move.to_address, shard_id=move.to_shard,
                   expires_at=now + pool.rap.lease, deprecated=(*lease.deprecated, *old),
                   move=replace(move, state=SWITCHING)).logged(
        now, "switched", address=move.to_address, deprecated=lease.address)


def realized(lease: Lease, now: float) -> Lease:
    assert lease.move is not None
    return replace(lease, move=None).logged(now, "realized", address=lease.address)


def failed(lease: Lease, now: float, why: str) -> Lease:
    address = lease.move.to_address if lease.move else None
    return replace(lease, move=None).logged(now, "move failed", address=address, reason=why)


def drained(lease: Lease, state: PoolState, pool: ShardPool, address: str,
            now: float) -> tuple[Lease, PoolState]:
    """A deprecated address is given up: released, and in quarantine."""
    lease = replace(lease, deprecated=tuple(d for d in lease.deprecated if d.address != address))
    state = quarantine(state, address, now + pool.quarantine, now)
    return lease.logged(now, "released", address=address), state


def step_update(rotation: Rotation, resource: str, now: float, state: str,
                message: str = "") -> bool:
    """Record a step's new state; True when the round just ended with it."""
    step = rotation.step(resource)
    if step is None or step.state in ("done", "failed"):
        return False
    step.state = state
    if message:
        step.message = message
    if state == SWITCHING:
        step.acked_at = now
    if state == "done":
        step.realized_at = now
    return rotation.settle(now)
