"""``hubctl shard stats POOL``: a pool's figures (``GET /v1/shard-pools/{id}/stats``)."""
from __future__ import annotations

import argparse
from typing import Any

from controller.cli.client import EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.output import Output
from controller.features.shard.cli_shard import pool_url


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _latency(h: dict[str, Any]) -> str:
    if not h.get("count"):
        return "none yet"
    ms = {k: (h[k] * 1000 if h.get(k) is not None else None) for k in ("mean_s", "p50_s", "p99_s")}
    return (f"{h['count']}, mean {ms['mean_s']:.1f} ms, p50 <= {ms['p50_s']:g} ms, "
            f"p99 <= {ms['p99_s']:g} ms" if ms["p99_s"] is not None else f"{h['count']}")


def stats_text(s: dict[str, Any]) -> str:
    return "\n".join([
        f"shard pool {s['pool']}",
        f"  utilization           {s['utilization']:.1%} (active shards)",
        f"  shards                {_counts(s['shards'])}",
        f"  rotation rounds       {_counts(s['rounds'])}",
        f"  moves                 {_counts(s['moves'])}",
        f"  announce -> realized  {_latency(s['announce_to_realized'])}",
        f"  deprecated conns      {s['deprecated_connections']}",
        f"  lease renewals        {s['lease_renewals']}",
        f"  lease expiries        {s['lease_expiries']}",
        f"  probes dropped        {s['probes']}",
        f"  RAP rejected (hub)    {_counts(s['rap_rejected'])}",
        f"  RAP round trip (hub)  {_latency(s['rap_rtt'])}"])


def cmd_stats(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "stats")), stats_text)
    return EXIT_OK


def add_verbs(verbs: Subparsers, common: Common) -> None:
    """``shard stats``."""
    p = common.command(verbs, "stats", cmd_stats,
                       "a pool's figures: utilization, rounds, moves, leases, RAP")
    p.add_argument("pool", metavar="POOL")
