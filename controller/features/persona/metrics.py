"""The persona feature's Prometheus metrics (on the hub's registry)."""
from __future__ import annotations

from contextlib import suppress

from prometheus_client import CollectorRegistry, Gauge

DIRECTIONS = ("outbound", "inbound")   # from the persona / to the persona


class PersonaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.bytes = Gauge("hub_persona_bytes", "Bytes through a persona's gateway",
                           ["persona", "direction"], registry=r)
        self.rate_bps = Gauge("hub_persona_rate_bps", "A persona's rate over the last poll, bits/s",
                              ["persona", "direction"], registry=r)
        self.denied = Gauge("hub_persona_denied",
                            "A persona's denied connection attempts (security events)",
                            ["persona"], registry=r)
        self.personas = Gauge("hub_personas", "Personas by state", ["state"], registry=r)

    def observe(self, persona: str, *, bytes_out: int, bytes_in: int, rate_out: float,
                rate_in: float, denied: int) -> None:
        """Publish one persona's usage (after each poll of its gateway counters)."""
        self.bytes.labels(persona, "outbound").set(bytes_out)
        self.bytes.labels(persona, "inbound").set(bytes_in)
        self.rate_bps.labels(persona, "outbound").set(rate_out)
        self.rate_bps.labels(persona, "inbound").set(rate_in)
        self.denied.labels(persona).set(denied)

    def forget(self, persona: str) -> None:
        """Drop a persona's label sets once it is gone, so scrapes stop reporting
        its last numbers forever."""
        for direction in DIRECTIONS:
            for gauge in (self.bytes, self.rate_bps):
                with suppress(KeyError):
                    gauge.remove(persona, direction)
        with suppress(KeyError):
            self.denied.remove(persona)
