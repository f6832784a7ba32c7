"""The shard feature's Prometheus metrics (on the hub's registry)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.rap.protocol import REASONS

LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ShardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rejected = Counter("hub_rap_rejected", "RAP datagrams dropped unanswered, by reason",
                                ["reason"], registry=r)
        for reason in REASONS:
            self.rejected.labels(reason)
        self.messages = Counter("hub_rap_messages", "RAP messages accepted, by type", ["type"],
                                registry=r)
        self.renewals = Counter("hub_rap_lease_renewals", "Leases renewed (RENEW or REBIND)",
                                ["pool"], registry=r)
        self.expiries = Counter("hub_rap_lease_expiries", "Leases that ran out unrenewed",
                                ["pool"], registry=r)
        self.rtt = Histogram("hub_rap_rtt_seconds", "From an OFFER or ANNOUNCE to its ACK",
                             registry=r, buckets=LATENCY)
        self.utilization = Gauge("hub_shard_utilization",
                                 "Members / usable addresses, per shard", ["pool", "shard"],
                                 registry=r)
        self.pool_utilization = Gauge("hub_shard_pool_utilization",
                                      "Members / usable addresses of a pool's active shards",
                                      ["pool"], registry=r)
        self.shards = Gauge("hub_shard_shards", "Shards by state", ["pool", "state"], registry=r)
        self.rounds = Counter("hub_shard_rotation_rounds", "Rotation rounds, by reason",
                              ["pool", "reason"], registry=r)
        self.moves = Counter("hub_shard_moves", "Resources moved, by result", ["pool", "result"],
                             registry=r)
        self.announce_realized = Histogram(
            "hub_shard_announce_realized_seconds",
            "From a move's first ANNOUNCE until the switches translate new connections to the "
            "new address", registry=r, buckets=LATENCY)
        self.deprecated_connections = Gauge(
            "hub_shard_deprecated_connections",
            "Connections still open on deprecated addresses", ["pool"], registry=r)
        self.probes = Counter("hub_shard_probes", "Packets into a pool from outside the hub, "
                              "dropped", ["pool"], registry=r)
        self._shard_labels: set[tuple[str, str]] = set()

    def publish_shards(self, pool: str, rows: list[tuple[str, str, float]]) -> None:
        """(shard id, state, utilization) of every shard of a pool."""
        seen = set()
        counts = {"active": 0, "draining": 0, "retired": 0}
        active = []
        for sid, state, util in rows:
            counts[state] = counts.get(state, 0) + 1
            if state == "retired":
                continue
            seen.add((pool, sid))
            self.utilization.labels(pool, sid).set(util)
            if state == "active":
                active.append(util)
        for key in [k for k in self._shard_labels if k[0] == pool and k not in seen]:
            self.utilization.remove(*key)
        self._shard_labels = {k for k in self._shard_labels if k[0] != pool} | seen
        for state, n in counts.items():
            self.shards.labels(pool, state).set(n)
        self.pool_utilization.labels(pool).set(sum(active) / len(active) if active else 0.0)
