"""The shard feature's state on the worker: pools, resources, leases, rounds in flight.

Everything here runs on the hub's worker thread, the one writer of the
runtime's kinds (`records`: shard-lease, shard-state, shard-rotation).  The
REST API writes shard-resource documents and pools; `reload` picks them up.
RAP answers (`server.answer`) and moves (`moves`) are pure; this module
applies them: it stores the result, recompiles when a translation changed,
and sends the answers with packet-out (`RapLink`).
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from controller.core.documents import DocumentInvalid
from controller.core.interfaces import KIND as INTERFACE
from controller.rap import protocol as rap
from controller.features.shard.addresses import quarantine, settle_shards, with_members
from controller.features.shard.document import KIND as POOL, ShardPool, parse_pool
from controller.features.shard.metrics import ShardMetrics
from controller.features.shard.records import (LEASE, RESOURCE, ROTATION, STATE, Lease, PoolState,
                                               Resource, Rotation)
from controller.features.shard.translate import ResourceNet

LOG = logging.getLogger("hubshift.shards")
EPOCH_KEY = "shard.epoch"
ROTATIONS_KEPT = 200


@dataclass(frozen=True)
class Port:
    """Where a resource is plugged in, from its interface record."""
    dpid: int
    port: int
    mac: str
    ips: tuple[str, ...]


class ShardState:
    """What is stored, loaded once and kept in step with every write."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.metrics = ShardMetrics(ctx.registry)
        self.pools: dict[str, ShardPool] = {}
        self.resources: dict[str, Resource] = {}
        self.leases: dict[str, Lease] = {}
        self.states: dict[str, PoolState] = {}
        self.rotations: dict[str, Rotation] = {}        # the running ones
        self.epoch = 0
        self.receiver = rap.Receiver(self.key_of, self.epoch_ok)
        self.counter = rap.Counter(ctx.wallclock)

    # ------------------------------------------------------------ loading
    def load(self) -> None:
        store = self.ctx.store
        with store.transaction():
            old = int(store.get_meta(EPOCH_KEY) or 0)
            self.epoch = (old % 0xFFFFFFFE) + 1
            store.set_meta(EPOCH_KEY, str(self.epoch))
        self.leases = {d.id: Lease.from_doc(d.id, d.body) for d in store.list(LEASE)}
        self.states = {d.id: PoolState.from_doc(d.id, d.body) for d in store.list(STATE)}
        for doc in store.list(ROTATION):
            rotation = Rotation.from_doc(doc.id, doc.body)
            if rotation.state == "running":
                self.rotations[doc.id] = rotation
        self.receiver.counters = {k: v.counter for k, v in self.leases.items() if v.counter >= 0}
        self.reload()

    def reload(self) -> bool:
        """Re-read pools and resources; a resource gone is released.  True if anything changed."""
        pools = {}
        for doc in self.ctx.store.list(POOL):
            try:
                pools[doc.id] = parse_pool(doc.body)
            except DocumentInvalid as exc:
                LOG.error("ignoring invalid shard pool %s: %s", doc.id, exc)
        resources = {d.id: Resource.from_doc(d.id, d.body) for d in self.ctx.store.list(RESOURCE)}
        changed = pools != self.pools or resources != self.resources
        gone = {rid: r.pool_id for rid, r in self.resources.items() if rid not in resources}
        self.pools, self.resources = pools, resources
        for rid in [r for r in self.leases if r not in resources]:
            self.forget(rid, gone.get(rid))
        for pid in [p for p in self.states if p not in pools]:
            self.ctx.store.delete(STATE, pid)
            del self.states[pid]
        return changed

    def forget(self, rid: str, pool_id: str | None) -> None:
        """A resource was deleted: its addresses go to quarantine, its lease record goes."""
        lease = self.leases.pop(rid)
        if pool_id in self.pools:
            pool, now = self.pools[pool_id], self.ctx.wallclock()
            state = self.state(pool_id)
            for address in lease.held():
                state = quarantine(state, address, now + pool.quarantine, now)
            self.put_state(settle_shards(state, self.leases_of(pool_id)))
        if self.ctx.store.find(LEASE, rid) is not None:
            self.ctx.store.delete(LEASE, rid)
        self.receiver.counters.pop(rid, None)
        self.ctx.journal("shard", rid, "resource released")

    # ------------------------------------------------------------ reads
    def key_of(self, rid: str) -> bytes | None:
        r = self.resources.get(rid)
        return rap.key_bytes(r.key) if r and r.pool_id in self.pools else None

    def epoch_ok(self, rid: str, epoch: int, type_: rap.Type) -> bool:
        if type_ == rap.Type.REGISTER or epoch == self.epoch:
            return True
        lease = self.leases.get(rid)
        return lease is not None and lease.epoch == epoch and epoch != 0

    def lease(self, rid: str) -> Lease:
        return self.leases.get(rid) or Lease(rid)

    def state(self, pool_id: str) -> PoolState:
        return self.states.get(pool_id) or PoolState(pool_id)

    def leases_of(self, pool_id: str) -> list[Lease]:
        return [self.lease(r.id) for r in self.resources.values() if r.pool_id == pool_id]

    def leases_by_id(self, pool_id: str) -> dict[str, Lease]:
        return {lease.id: lease for lease in self.leases_of(pool_id)}

    def port_of(self, resource: Resource) -> Port | None:
        doc = self.ctx.store.find(INTERFACE, resource.interface_id)
        if doc is None:
            return None
        b = doc.body
        return Port(int(b["datapath"], 16), int(b["port"]), b["mac"], tuple(b.get("ips") or ()))

    def nets(self, view) -> list[ResourceNet]:
        """Every enrolled resource of a known pool and interface, for the flows."""
        out = []
        for r in sorted(self.resources.values(), key=lambda r: r.id):
            pool = self.pools.get(r.pool_id)
            where = self.port_of(r) if pool else None
            if pool is None or where is None:
                continue
            lease = self.lease(r.id)
            gateway = view.gateway_of(where.ips)
            current = lease.address if lease.state != "offered" else None
            sources = sorted({*(d.address for d in lease.deprecated),
                              *([current] if current else [])})
            out.append(ResourceNet(r.id, r.pool_id, where.dpid, where.port, where.mac, r.zone,
                                   r.external_ip, gateway, pool.rap.port, current,
                                   tuple(sources)))
        return out

    # ------------------------------------------------------------ writes
    def put_lease(self, lease: Lease) -> None:
        self.leases[lease.id] = lease
        self.ctx.store.put(LEASE, lease.id, lease.to_body())

    def put_state(self, state: PoolState) -> None:
        self.states[state.id] = state
        self.ctx.store.put(STATE, state.id, state.to_body())

    def put_rotation(self, rotation: Rotation) -> None:
        if rotation.state == "running":
            self.rotations[rotation.id] = rotation
        else:
            self.rotations.pop(rotation.id, None)
        self.ctx.store.put(ROTATION, rotation.id, rotation.to_body())

    def new_rotation_id(self) -> str:
        return f"r{int(self.ctx.wallclock())}-{secrets.token_hex(3)}"

    def prune_rotations(self) -> None:
        docs = sorted(self.ctx.store.list(ROTATION), key=lambda d: d.created_at)
        for doc in docs[:-ROTATIONS_KEPT]:
            if doc.id not in self.rotations:
                self.ctx.store.delete(ROTATION, doc.id)

    # ------------------------------------------------------------ metrics
    def publish(self) -> None:
        for pid in self.pools:
            state = self.state(pid)
            shards = with_members(state, self.leases_of(pid))
            self.metrics.publish_shards(pid, [(s.id, s.state, s.utilization) for s in shards])
            open_ = sum(d.connections for lease in self.leases_of(pid) for d in lease.deprecated)
            self.metrics.deprecated_connections.labels(pid).set(open_)

