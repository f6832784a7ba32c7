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
        self._children: dict[str, tuple] = {}   # persona -> its five labelled gauges

    def observe(self, persona: str, *, bytes_out: int, bytes_in: int, rate_out: float,
                rate_in: float, denied: int) -> None:
        """Publish one persona's usage (after each poll of its gateway counters)."""
        children = self._children.get(persona)
        if children is None:   # a label lookup costs more than the set: once per persona
            children = self._children[persona] = (
                self.bytes.labels(persona, "outbound"), self.bytes.labels(persona, "inbound"),
                self.rate_bps.labels(persona, "outbound"), self.rate_bps.labels(persona, "inbound"),
                self.denied.labels(persona))
        for gauge, value in zip(children, (bytes_out, bytes_in, rate_out, rate_in, denied)):
            gauge.set(value)

    def forget(self, persona: str) -> None:
        """Drop a persona's label sets once it is gone, so scrapes stop reporting
        its last numbers forever."""
        self._children.pop(persona, None)
        for direction in DIRECTIONS:
            for gauge in (self.bytes, self.rate_bps):
                with suppress(KeyError):
                    gauge.remove(persona, direction)
        with suppress(KeyError):
            self.denied.remove(persona)
