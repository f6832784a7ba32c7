"""The hub's side of RAP for one authenticated message: the lease it leaves, the answers.

Pure (no switch, no store): `answer` takes the message, the resource's lease
and its pool's state, and returns an `Outcome` the runtime applies.  The
state machine is docs/rap.md's "hub's state machine, per resource"; a move's
ANNOUNCE and its ACK are the rotation's (`controller.features.shard.moves`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Callable, Mapping

from controller.rap import protocol as rap
from controller.features.shard.addresses import place_new, quarantine
from controller.features.shard.document import ShardPool
from controller.features.shard.records import (ANNOUNCING, LEASED, OFFERED, UNLEASED, Client,
                                               Lease, PoolState)
from controller.rap.protocol import Type


@dataclass(frozen=True)
class Reply:
    type: Type
    lease: rap.Lease | None = None
    address: str | None = None          # ANNOUNCE: the old one; RELEASE: the one given up
    reason: rap.Reason | None = None


@dataclass
class Outcome:
    lease: Lease
    state: PoolState
    replies: list[Reply] = field(default_factory=list)
    flows: bool = False                 # the resource's translation changed
    event: str | None = None            # for the journal and the history
    renewed: bool = False
    move_acked: bool = False            # the ACK of an announced address


def offer(lease: Lease, pool: ShardPool, prefix: int) -> Reply:
    valid = pool.rap.lease
    assert lease.address is not None
    return Reply(Type.OFFER, rap.Lease(IPv4Address(lease.address), prefix, valid, valid))


def answer(msg: rap.Message, source: Client, lease: Lease, pool: ShardPool, state: PoolState,
           leases: Callable[[], Mapping[str, Lease]], now: float, rng: random.Random,
           epoch: int) -> Outcome:
    """`leases()`: every lease of the pool (asked only when an address is placed)."""
    lease = replace(lease, client=source, counter=msg.counter)
    out = Outcome(lease, state)
    address = str(msg.address) if msg.address is not None else None
    t = msg.type
    if t == Type.REGISTER:
        _register(out, pool, leases, now, rng)
    elif t == Type.ACK:
        if lease.state == OFFERED and address == lease.address:
            out.lease = replace(out.lease, state=LEASED)
            out.flows, out.event = True, "leased"
        elif lease.move and lease.move.state == ANNOUNCING and address == lease.move.to_address:
            out.move_acked = True
    elif t in (Type.RENEW, Type.REBIND):
        if lease.state in (LEASED, OFFERED) and address == lease.address:
            out.lease = replace(out.lease, expires_at=now + pool.rap.lease)
            out.replies.append(offer(out.lease, pool, pool.shard_prefix))
            out.renewed = True
        else:
            out.replies.append(Reply(Type.NAK, reason=rap.Reason.UNKNOWN_LEASE))
    elif t == Type.RELEASE and address is not None:
        _release(out, address, pool, now)
    if any(r.type in (Type.OFFER, Type.NAK) for r in out.replies):
        out.lease = replace(out.lease, epoch=epoch)
    return out


def _register(out: Outcome, pool: ShardPool, leases: Callable[[], Mapping[str, Lease]],
              now: float, rng: random.Random) -> None:
    lease = out.lease
    if lease.address is not None and lease.state in (LEASED, OFFERED):
        # The client restarted (or lost the OFFER): the same address again.
        out.lease = replace(lease, expires_at=now + pool.rap.lease)
        out.replies.append(offer(out.lease, pool, pool.shard_prefix))
        out.event = "re-registered"
        return
    others = {k: v for k, v in leases().items() if k != lease.id}
    placed = place_new(pool.limits(), out.state, others, now, rng)
    if placed is None:
        out.replies.append(Reply(Type.NAK, reason=rap.Reason.NO_ADDRESS))
        out.event = "no address free"
        return
    out.state = placed.state
    out.lease = replace(lease, state=OFFERED, address=placed.address, shard_id=placed.shard_id,
                        expires_at=now + pool.rap.lease)
    out.replies.append(offer(out.lease, pool, pool.shard_prefix))
    out.event = "offered"


def _release(out: Outcome, address: str, pool: ShardPool, now: float) -> None:
    lease = out.lease
    if address == lease.address:
        out.lease = unleased(lease)
        out.state = quarantine(out.state, address, now + pool.quarantine, now)
        out.flows, out.event = True, "released by the resource"
    elif any(d.address == address for d in lease.deprecated):
        out.lease = replace(lease, deprecated=tuple(d for d in lease.deprecated
                                                    if d.address != address))
        out.state = quarantine(out.state, address, now + pool.quarantine, now)
        out.flows, out.event = True, "deprecated address released by the resource"


def unleased(lease: Lease) -> Lease:
    """No current address any more (a move in flight is dropped; deprecated ones drain on)."""
    return replace(lease, state=UNLEASED, address=None, shard_id=None, expires_at=None, move=None)
