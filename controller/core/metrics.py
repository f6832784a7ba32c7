"""Prometheus metrics of the hub, in a registry of their own."""
from __future__ import annotations

from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PERSONA_DIRECTIONS = ("outbound", "inbound")   # from the persona / to the persona


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
        self.persona_bytes = Gauge("hub_persona_bytes", "Bytes through a persona's gateway",
                                   ["persona", "direction"], registry=r)
        self.persona_rate_bps = Gauge("hub_persona_rate_bps",
                                      "A persona's rate over the last poll, bits/s",
                                      ["persona", "direction"], registry=r)
        self.persona_denied = Gauge("hub_persona_denied",
                                    "A persona's denied connection attempts (security events)",
                                    ["persona"], registry=r)
        self.personas = Gauge("hub_personas", "Personas by state", ["state"], registry=r)

    def observe_persona(self, persona: str, *, bytes_out: int, bytes_in: int, rate_out: float,
                        rate_in: float, denied: int) -> None:
        """Publish one persona's usage (after each poll of its gateway counters)."""
        self.persona_bytes.labels(persona, "outbound").set(bytes_out)
        self.persona_bytes.labels(persona, "inbound").set(bytes_in)
        self.persona_rate_bps.labels(persona, "outbound").set(rate_out)
        self.persona_rate_bps.labels(persona, "inbound").set(rate_in)
        self.persona_denied.labels(persona).set(denied)

    def forget_persona(self, persona: str) -> None:
        """Drop a persona's label sets once it is gone, so scrapes stop reporting
        its last numbers forever (older client libraries raise KeyError for a
        label set that was never set)."""
        for direction in PERSONA_DIRECTIONS:
            for gauge in (self.persona_bytes, self.persona_rate_bps):
                with suppress(KeyError):
                    gauge.remove(persona, direction)
        with suppress(KeyError):
            self.persona_denied.remove(persona)
