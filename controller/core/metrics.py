"""Prometheus metrics of the hub, in a registry of their own."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.packet_in = Counter("hub_packet_in", "Packet-in messages received",
                                 ["datapath", "reason"], registry=r)
        self.packet_out = Counter("hub_packet_out", "Packet-out messages sent",
                                  ["datapath"], registry=r)
        self.flow_changes = Counter("hub_flow_changes", "Flow adds and deletes pushed",
                                    ["datapath", "op"], registry=r)
        self.bundles = Counter("hub_bundles", "Change sets applied to switches",
                               ["datapath", "result"], registry=r)
        self.reconcile_seconds = Histogram("hub_reconcile_seconds",
                                           "Time to reconcile one switch (diff + apply + barrier)",
                                           registry=r)
        self.flows_desired = Gauge("hub_flows_desired", "Desired flows", ["datapath"], registry=r)
        self.flows_installed = Gauge("hub_flows_installed", "Flows known realized",
                                     ["datapath"], registry=r)
        self.datapaths_connected = Gauge("hub_datapaths_connected", "Connected switches",
                                         registry=r)
        self.hosts = Gauge("hub_hosts", "Discovered hosts", registry=r)
        # Exposed as hub_alerts_total (the client library adds the suffix).
        self.alerts = Counter("hub_alerts", "Alerts raised", ["kind", "severity"], registry=r)
