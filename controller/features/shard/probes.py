"""Probes into a pool, counted: the packet counts of the pools' drop flows, polled.

Every switch drops routed packets into a pool (route) and, on a resource's
switch, packets into a pool sent straight to a resource's MAC (shard_in);
both carry the pool's `probe_cookie`.  Each poll adds what the counters grew
by since the last one to `hub_shard_probes_total{pool}` (a flow put back
starts from 0 again: what it shows then is new).
"""
from __future__ import annotations

from concurrent.futures import Future

from controller.features.shard.runtime import ShardState
from controller.features.shard.translate import probe_cookie

ALL_BITS = (1 << 64) - 1
POLL_SECONDS = 5.0


class ProbeCounter:
    def __init__(self, ctx, state: ShardState) -> None:
        self.ctx = ctx
        self.s = state
        self.seen: dict[tuple[int, str], int] = {}     # (dpid, pool) -> packets last read
        self.asking: set[int] = set()
        self.next_at = 0.0

    def poll(self, mono: float) -> None:
        if mono < self.next_at or not self.s.pools:
            return
        self.next_at = mono + POLL_SECONDS
        for dpid in self.ctx.view().switches:
            if dpid in self.asking:
                continue
            for pool_id in self.s.pools:
                cookie = probe_cookie(pool_id)
                if self.ctx.request(dpid, lambda ch, c=cookie: ch.flow_counters(None, c, ALL_BITS),
                                    lambda answer, d=dpid, p=pool_id: self._read(d, p, answer)):
                    self.asking.add(dpid)

    def _read(self, dpid: int, pool_id: str, answer: Future) -> None:
        self.asking.discard(dpid)
        if answer.exception() is not None or pool_id not in self.s.pools:
            return
        packets = sum(c.packets for c in answer.result())
        last = self.seen.get((dpid, pool_id), 0)
        grown = packets - last if packets >= last else packets
        self.seen[(dpid, pool_id)] = packets
        if grown:
            self.s.metrics.probes.labels(pool_id).inc(grown)
