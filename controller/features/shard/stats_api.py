"""A pool's figures over REST, from the hub's Prometheus registry: ``GET .../stats``.

The same numbers `/metrics` exposes (docs/shards.md, "Monitoring"), gathered
for one pool, with the histograms as count, mean and quantiles read off
their buckets (the upper bound of the bucket the quantile falls in), for
`hubctl shard stats`.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from controller.api.context import Ctx
from controller.api.problems import problem_responses
from controller.api.revisions import DocId
from controller.features.shard.document import KIND as POOL
from controller.rap.protocol import REASONS

router = APIRouter(prefix="/v1/shard-pools/{id}", tags=["shard pools"],
                   responses=problem_responses(500))


class HistogramView(BaseModel):
    count: int
    mean_s: float | None
    p50_s: float | None
    p99_s: float | None


class StatsView(BaseModel):
    pool: str
    utilization: float
    shards: dict[str, int]
    rounds: dict[str, int]
    moves: dict[str, int]
    lease_renewals: int
    lease_expiries: int
    deprecated_connections: int
    probes: int
    rap_rejected: dict[str, int]
    announce_to_realized: HistogramView
    rap_rtt: HistogramView


def _samples(registry: CollectorRegistry, metric: str) -> list[tuple[str, dict, float]]:
    for family in registry.collect():
        if family.name == metric:
            return [(s.name, s.labels, s.value) for s in family.samples]
    return []


def _by(registry: CollectorRegistry, metric: str, label: str, pool: str | None,
        suffix: str = "_total") -> dict[str, int]:
    return {s[1][label]: int(s[2]) for s in _samples(registry, metric)
            if s[0] == metric + suffix and (pool is None or s[1].get("pool") == pool)}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def histogram(registry: CollectorRegistry, metric: str) -> dict[str, Any]:
    samples = _samples(registry, metric)
    buckets = sorted((float(l["le"]), v) for n, l, v in samples if n == f"{metric}_bucket")
    count = next((v for n, _, v in samples if n == f"{metric}_count"), 0.0)
    total = next((v for n, _, v in samples if n == f"{metric}_sum"), 0.0)

    def quantile(q: float) -> float | None:
        if not count:
            return None
        return next((le for le, seen in buckets if seen >= q * count), None)
    return {"count": int(count), "mean_s": total / count if count else None,
            "p50_s": quantile(0.5), "p99_s": quantile(0.99)}


def stats(registry: CollectorRegistry, pool: str) -> dict[str, Any]:
    return {
        "pool": pool,
        "utilization": _value(registry, "hub_shard_pool_utilization", pool=pool),
        "shards": _by(registry, "hub_shard_shards", "state", pool, suffix=""),
        "rounds": _by(registry, "hub_shard_rotation_rounds", "reason", pool),
        "moves": _by(registry, "hub_shard_moves", "result", pool),
        "lease_renewals": int(_value(registry, "hub_rap_lease_renewals_total", pool=pool)),
        "lease_expiries": int(_value(registry, "hub_rap_lease_expiries_total", pool=pool)),
        "deprecated_connections": int(_value(registry, "hub_shard_deprecated_connections",
                                             pool=pool)),
        "probes": int(_value(registry, "hub_shard_probes_total", pool=pool)),
        "rap_rejected": {r: int(_value(registry, "hub_rap_rejected_total", reason=r))
                         for r in REASONS},
        "announce_to_realized": histogram(registry, "hub_shard_announce_realized_seconds"),
        "rap_rtt": histogram(registry, "hub_rap_rtt_seconds"),
    }


@router.get("/stats", summary="The pool's figures: utilization, rounds, moves, leases, RAP",
            description="From the hub's metrics since it started (`/metrics` has them "
                        "all). RAP rejections and the two latencies are the hub's, not "
                        "one pool's.",
            responses={200: {"model": StatsView}, **problem_responses(404)})
def get_stats(id: DocId, ctx: Ctx) -> JSONResponse:
    ctx.store.get(POOL, id)
    return JSONResponse(stats(ctx.registry, id))
