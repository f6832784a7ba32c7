"""Rotation at the hub: when rounds run, and each move carried through (`moves`).

Rounds start every `rotation_interval`, when an active shard reaches the end
of its lifespan, and on demand (`force`).  Per move: ANNOUNCE from 1 s,
doubling, until the ACK or the deadline; after the ACK one recompile points
new connections at the new address, and the move is over once every switch
of the resource holds it (its realization); the old address then drains:
its connections are counted over OpenFlow (aggregate stats of its learned
flows in shard_connections) until none is left or its time is over, and it
is released (RELEASE to the resource) into quarantine.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from controller.core.context import Realization
from controller.features.shard import moves
from controller.rap import protocol as rap
from controller.features.shard.addresses import settle_shards
from controller.features.shard.records import ANNOUNCING, SWITCHING, Lease, Rotation
from controller.features.shard.runtime import ShardState
from controller.features.shard.rapd import RapService
from controller.features.shard.server import Reply
from controller.features.shard.translate import connection_cookie
from controller.pipeline import tables

LOG = logging.getLogger("hubshift.shards.rotation")
ALL_BITS = (1 << 64) - 1
DRAIN_POLL = 1.0            # seconds between connection counts of a deprecated address
EXPIRED_RETRY = 5.0         # a round for expired shards again after this, if members wait
RETRY_SECONDS = 1.0         # a switch that failed a move's recompile is asked again after this


@dataclass
class Announce:
    next_at: float          # monotonic
    interval: float
    first_at: float


@dataclass
class Switching:
    generation: int
    dpid: int
    retry_at: float = 0.0   # monotonic: a switch that failed it is asked again after this


class Rotor:
    def __init__(self, ctx, state: ShardState, rapd: RapService) -> None:
        self.ctx = ctx
        self.s = state
        self.rapd = rapd
        self.announces: dict[str, Announce] = {}
        self.switching: dict[str, Switching] = {}
        self.counting: set[tuple[str, str]] = set()
        self.next_count: dict[tuple[str, str], float] = {}
        self.expired_round_at: dict[str, float] = {}
        self.dirty: set[str] = set()        # rounds whose steps changed since the last flush

    def resumed(self) -> None:
        """After a restart, moves in flight go on where they were."""
        for lease in self.s.leases.values():
            if lease.move and lease.move.state == SWITCHING:
                self._switch(lease)

    # ------------------------------------------------------------ rounds
    def force(self, pool_id: str, resources: list[str] | None) -> Rotation:
        """A round now; `resources` move (None: the algorithm alone decides)."""
        return self._round(pool_id, self.ctx.wallclock(), resources or (), "forced")

    def _round(self, pool_id: str, now: float, force, reason: str) -> Rotation:
        pool = self.s.pools[pool_id]
        leases = self.s.leases_by_id(pool_id)
        started = moves.start_round(pool, self.s.state(pool_id), leases, self.s.new_rotation_id(),
                                    now, self.ctx.random, force, reason)
        self.s.put_state(started.state)
        for lease in started.leases.values():
            self.s.put_lease(lease)
            self.announces[lease.id] = Announce(0.0, 1.0, self.ctx.clock())
        r = started.rotation
        self.s.put_rotation(r)
        self.s.prune_rotations()
        self.s.metrics.rounds.labels(pool_id, reason).inc()
        for step in r.steps:
            if step.state == "failed":
                self.s.metrics.moves.labels(pool_id, "failed").inc()
        self.ctx.journal("shard", pool_id, f"rotation round {r.id} ({reason}): "
                         f"{len(r.steps)} move(s), {len(r.created_shards)} new shard(s), "
                         f"{len(r.retired_shards)} retired", rotation=r.id)
        return r

    def due_rounds(self, now: float) -> None:
        for pid, pool in self.s.pools.items():
            if any(r.pool_id == pid for r in self.s.rotations.values()):
                continue
            state = self.s.state(pid)
            if state.last_round_at is None:
                self.s.put_state(replace(state, last_round_at=now))
                continue
            if now - state.last_round_at >= pool.rotation_interval:
                self._round(pid, now, (), "interval")
            elif any(s.state == "active" and s.expired(now) for s in state.shards) and \
                    now - self.expired_round_at.get(pid, -EXPIRED_RETRY) >= EXPIRED_RETRY:
                self.expired_round_at[pid] = now
                self._round(pid, now, (), "expired")

    # ------------------------------------------------------------ one move
    def announce(self, now: float) -> None:
        mono = self.ctx.clock()
        for lease in list(self.s.leases.values()):
            move = lease.move
            if move is None or move.state != ANNOUNCING:
                continue
            if now >= move.deadline:
                self._fail(lease, now, "no ACK to the ANNOUNCE by the deadline")
                continue
            timer = self.announces.setdefault(lease.id, Announce(0.0, 1.0, mono))
            if mono < timer.next_at:
                continue
            resource = self.s.resources.get(lease.id)
            pool = self.s.pools.get(resource.pool_id) if resource else None
            if resource is None or pool is None:
                continue
            new = rap.Lease(IPv4Address(move.to_address), pool.shard_prefix, pool.rap.lease,
                            pool.rap.lease)
            self.rapd.send(resource, lease, Reply(rap.Type.ANNOUNCE, lease=new,
                                                  address=lease.address))
            timer.next_at, timer.interval = mono + timer.interval, timer.interval * 2

    def on_ack(self, lease: Lease, now: float) -> None:
        pool = self.s.pools[self.s.resources[lease.id].pool_id]
        lease = moves.acked(lease, pool, now, pool.deprecated_lifetime)
        self.s.put_lease(lease)
        self._step(lease.move.round_id, lease.id, now, SWITCHING)
        self._switch(lease)

    def _switch(self, lease: Lease) -> None:
        where = self.s.port_of(self.s.resources[lease.id])
        generation = self.ctx.changed()
        if where is not None:
            self.switching[lease.id] = Switching(generation, where.dpid)

    def realized(self, now: float) -> None:
        for rid, sw in list(self.switching.items()):
            state = self.ctx.realization([sw.dpid], sw.generation)
            if state == Realization.PENDING:
                continue
            if state == Realization.FAILED:     # not connected, or refused: ask again, soon
                mono = self.ctx.clock()
                if mono >= sw.retry_at:
                    self.switching[rid] = Switching(self.ctx.changed(), sw.dpid,
                                                    mono + RETRY_SECONDS)
                continue
            del self.switching[rid]
            lease = self.s.leases.get(rid)
            if lease is None or lease.move is None:
                continue
            round_id = lease.move.round_id
            self.s.put_lease(moves.realized(lease, now))
            timer = self.announces.pop(rid, None)
            if timer is not None:
                self.s.metrics.announce_realized.observe(self.ctx.clock() - timer.first_at)
            self.s.metrics.moves.labels(self.s.resources[rid].pool_id, "moved").inc()
            self._step(round_id, rid, now, "done")

    def _fail(self, lease: Lease, now: float, why: str) -> None:
        round_id = lease.move.round_id
        self.s.put_lease(moves.failed(lease, now, why))
        self.announces.pop(lease.id, None)
        pool_id = self.s.resources[lease.id].pool_id
        self.s.put_state(settle_shards(self.s.state(pool_id), self.s.leases_of(pool_id)))
        self.s.metrics.moves.labels(pool_id, "failed").inc()
        self.ctx.journal("shard", lease.id, f"move failed: {why}", rotation=round_id)
        self._step(round_id, lease.id, now, "failed", why)

    def settle_rounds(self, now: float) -> None:
        """Steps whose move is gone without an end of its own (the resource was released,
        its lease ran out) end here, so their round ends too."""
        for rotation in list(self.s.rotations.values()):
            for step in rotation.steps:
                if step.state in ("done", "failed"):
                    continue
                lease = self.s.leases.get(step.resource)
                if lease is not None and lease.move is not None \
                        and lease.move.round_id == rotation.id:
                    continue
                if lease is not None and lease.address == step.to_address:
                    self._step(rotation.id, step.resource, now, "done")
                else:
                    self._step(rotation.id, step.resource, now, "failed",
                               "the move was abandoned (the resource left or its lease ended)")

    def _step(self, round_id: str, rid: str, now: float, state: str, message: str = "") -> None:
        rotation = self.s.rotations.get(round_id)
        if rotation is None:
            return
        moves.step_update(rotation, rid, now, state, message)
        self.dirty.add(round_id)

    def flush(self) -> None:
        """Store the rounds whose steps changed (once per tick: a round of a hundred
        moves is written a few times, not twice per move)."""
        for round_id in sorted(self.dirty):
            rotation = self.s.rotations.get(round_id)
            if rotation is not None:
                self.s.put_rotation(rotation)
        self.dirty.clear()

    # ------------------------------------------------------------ draining
    def drain(self, now: float) -> None:
        mono = self.ctx.clock()
        for lease in list(self.s.leases.values()):
            if not lease.deprecated or (lease.move and lease.move.state == SWITCHING):
                continue
            for d in lease.deprecated:
                if now >= d.expires_at:
                    self._release(lease.id, d.address, now, "its time is over")
                    lease = self.s.leases[lease.id]
                    continue
                key = (lease.id, d.address)
                if key in self.counting or mono < self.next_count.get(key, 0.0):
                    continue
                self._count(lease.id, d.address, mono)

    def _count(self, rid: str, address: str, mono: float) -> None:
        where = self.s.port_of(self.s.resources[rid])
        if where is None:
            return
        key = (rid, address)
        self.next_count[key] = mono + DRAIN_POLL
        cookie = connection_cookie(rid, address)
        asked = self.ctx.request(
            where.dpid,
            lambda ch: ch.aggregate(tables.SHARD_CONNECTIONS.id, cookie, ALL_BITS),
            lambda answer: self._counted(rid, address, answer))
        if asked:
            self.counting.add(key)

    def _counted(self, rid: str, address: str, answer: Future) -> None:
        self.counting.discard((rid, address))
        lease = self.s.leases.get(rid)
        if lease is None or answer.exception() is not None:
            return
        entry = next((d for d in lease.deprecated if d.address == address), None)
        if entry is None:
            return
        count = answer.result().flows
        if count == 0:
            self._release(rid, address, self.ctx.wallclock(), "its connections are gone")
        elif count != entry.connections:
            self.s.put_lease(replace(lease, deprecated=tuple(
                replace(d, connections=count) if d.address == address else d
                for d in lease.deprecated)))

    def _release(self, rid: str, address: str, now: float, why: str) -> None:
        lease = self.s.leases[rid]
        resource = self.s.resources[rid]
        pool = self.s.pools[resource.pool_id]
        lease, state = moves.drained(lease, self.s.state(resource.pool_id), pool,
                                     address, now)
        self.s.put_lease(lease)
        self.s.put_state(settle_shards(state, self.s.leases_of(resource.pool_id)))
        self.rapd.send(resource, lease, Reply(rap.Type.RELEASE, address=address))
        self.next_count.pop((rid, address), None)
        self.ctx.journal("shard", rid, f"deprecated address {address} released: {why}",
                         address=address)
        self.ctx.changed()

    def next_wakeup(self) -> float | None:
        mono = self.ctx.clock()
        times = [t.next_at for t in self.announces.values()]
        times += list(self.next_count.values())
        if self.switching:
            times.append(mono + 0.05)
        return max(0.0, min(times) - mono) if times else None
