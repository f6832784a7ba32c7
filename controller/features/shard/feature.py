"""Ephemeral network shards as a feature: the Feature interface over the shard runtime.

Pools and resources come from the store (`documents_changed`); leases,
moves and rounds are the runtime's (`runtime.ShardState`, `rapd.RapService`,
`rotor.Rotor`).  The flows are compiled from the state as it is
(`translate.compile_shards`), so a restarted hub puts back exactly what the
switches held: leases, external addresses and the translation of every
established connection (conntrack keeps it across a controller restart).
"""
from __future__ import annotations

from typing import Any

from controller.core import budgets
from controller.core.feature import Contribution, Feature, PacketIn
from controller.core.view import FabricView
from controller.features.shard import services
from controller.features.shard.document import KIND
from controller.features.shard.hrt import ServiceRouter
from controller.features.shard.probes import ProbeCounter
from controller.features.shard.rapd import RapService
from controller.features.shard.records import RESOURCE
from controller.features.shard.rotor import Rotor
from controller.features.shard.runtime import ShardState
from controller.features.shard.translate import (PUNT_METER, ShardInput, compile_shards,
                                                 punt_meter)
from controller.pipeline import tables

IDLE_TICK = 1.0         # seconds: leases, rounds and metrics are looked at this often


class ShardFeature(Feature):
    name = "shard"
    budget = budgets.SHARD
    document_kinds = (KIND, RESOURCE, services.SERVICE, services.ROUTE)
    punt_tables = frozenset({tables.SHARD_EDGE.id, tables.SHARD_SERVICE.id})

    def __init__(self, ctx, settings=None) -> None:
        super().__init__(ctx, settings)
        self.state = ShardState(ctx)
        self.rapd = RapService(ctx, self.state, self._acked)
        self.rotor = Rotor(ctx, self.state, self.rapd)
        self.probes = ProbeCounter(ctx, self.state)
        self.router = ServiceRouter(ctx, self.state)
        self._next_tick = 0.0

    def _acked(self, lease, now: float) -> None:
        self.rotor.on_ack(lease, now)

    def load(self) -> None:
        self.state.load()
        self.router.load()
        self.rapd.resumed()
        self.rotor.resumed()
        self.ctx.changed()

    def documents_changed(self, kind: str) -> None:
        changed = self.state.reload()
        if self.router.documents_changed() or changed:
            self.ctx.changed()

    def contribute(self, view: FabricView) -> Contribution:
        nets = self.state.nets(view)
        pools = tuple(sorted((pid, p.pool) for pid, p in self.state.pools.items()))
        flows = compile_shards(ShardInput(view.switches, view.router_mac, pools, tuple(nets)))
        for dpid, extra in self.router.flows(view, nets).items():
            flows[dpid] = (*flows.get(dpid, ()), *extra)
        meter = (punt_meter(),)
        return Contribution(flows=flows, meters={
            dpid: meter for dpid, fl in flows.items() if any(f.meter == PUNT_METER for f in fl)})

    def on_packet_in(self, punt: PacketIn) -> None:
        if punt.table_id == tables.SHARD_SERVICE.id:
            return self.router.on_packet_in(punt)
        self.rapd.on_packet_in(punt)

    def tick(self) -> None:
        now, mono = self.ctx.wallclock(), self.ctx.clock()
        self.rotor.announce(now)
        self.rotor.realized(now)
        if mono >= self._next_tick:
            self._every_second(now, mono)
        self.rotor.flush()

    def _every_second(self, now: float, mono: float) -> None:
        self._next_tick = mono + IDLE_TICK
        self.rapd.expire(now)
        self.router.tick(now)
        self.rotor.drain(now)
        self.rotor.settle_rounds(now)
        self.rotor.due_rounds(now)
        self.probes.poll(mono)
        self.state.publish()

    def next_wakeup(self) -> float | None:
        if not self.state.pools:
            return None
        mono = self.ctx.clock()
        times = [max(0.0, self._next_tick - mono)]
        rotor = self.rotor.next_wakeup()
        if rotor is not None:
            times.append(rotor)
        return min(times)

    def query(self, name: str, **args: Any) -> Any:
        if name == "rotate":
            pool_id = args["pool_id"]
            if pool_id not in self.state.pools:
                raise LookupError(f"no shard pool {pool_id!r}")
            resources = args.get("resources")
            unknown = [r for r in resources or () if r not in self.state.resources
                       or self.state.resources[r].pool_id != pool_id]
            if unknown:
                raise LookupError(f"no resource {unknown[0]!r} in shard pool {pool_id!r}")
            rotation = self.rotor.force(pool_id, resources)
            return {"id": rotation.id, "state": rotation.state}
        return super().query(name, **args)
