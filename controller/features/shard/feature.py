"""Ephemeral network shards as a feature (being built: see docs/notes.md).

Today: shard pools are stored and validated (`/v1/shard-pools`), their ranges
claimed, and the hub keeps every pool's range invisible from outside: a
routed packet addressed into a pool is dropped by a counted flow (a probe)
on every switch, since shard addresses are reachable only through the hub's
translation.  The rotation engine's decisions (`rotation.py`) and the RAP
messages (`rap.py`, docs/rap.md) are written and tested; leases, resources,
translation and the runtime that rotates come next.
"""
from __future__ import annotations

import logging

from controller.core import budgets
from controller.core.documents import DocumentInvalid
from controller.core.feature import Contribution, Feature
from controller.core.view import FabricView
from controller.features.shard.document import KIND, ShardPool, parse_pool
from controller.packets import ETH_IPV4
from controller.pipeline import cookies, tables
from controller.pipeline.flowspec import FlowSpec, flow

LOG = logging.getLogger("hubshift.shards")
PROBE_DROP = 310          # route: to the router MAC, into a pool (budget: route 301..349)


def probe_cookie(pool_id: str) -> int:
    """The counted drop of routed packets into one pool (flow stats read it as probes)."""
    return cookies.make(cookies.Feature.SHARD, f"probe:{pool_id}")


def probe_flows(pools: dict[str, ShardPool], router_mac: str) -> tuple[FlowSpec, ...]:
    return tuple(flow(tables.ROUTE.id, PROBE_DROP,
                      {"eth_dst": router_mac, "eth_type": ETH_IPV4, "ipv4_dst": str(p.pool)},
                      cookie=probe_cookie(id))
                 for id, p in sorted(pools.items()))


class ShardFeature(Feature):
    name = "shard"
    budget = budgets.SHARD
    document_kinds = (KIND,)

    def __init__(self, ctx, settings=None) -> None:
        super().__init__(ctx, settings)
        self.pools: dict[str, ShardPool] = {}

    def load(self) -> None:
        self._read()

    def documents_changed(self, kind: str) -> None:
        self._read()

    def _read(self) -> None:
        pools = {}
        for doc in self.ctx.store.list(KIND):
            try:
                pools[doc.id] = parse_pool(doc.body)
            except DocumentInvalid as exc:
                LOG.error("ignoring invalid shard pool %s: %s", doc.id, exc)
        if pools != self.pools:
            self.pools = pools
            self.ctx.changed()

    def contribute(self, view: FabricView) -> Contribution:
        flows = probe_flows(self.pools, view.router_mac)
        return Contribution(flows={d: flows for d in view.switches} if flows else {})
