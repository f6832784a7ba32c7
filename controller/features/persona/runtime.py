"""The persona runtime: turns stored persona records into flows, and keeps time.

Runs on the hub's worker thread only.  REST handlers write the records
(`controller.features.persona.store`) and tell the hub (`documents_changed`);
the next batch `reload`s them.  From the records it builds what the compiler
needs (`controller.features.persona.compile.PersonaNet`), and every tick it

* tears down in order each persona whose expiration has come (or whose
  record was deleted): new connections refused, then routes and edge hooks
  withdrawn, then the gateway flows and meters removed, each step realized on
  every switch before the next (`TeardownBatch`); the expired record is then
  marked (`persona_store.mark_expired`);
* polls the gateway's counters (usage), without blocking the worker, and
  raises alerts (`controller.features.persona.alerts`).
"""
from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from controller.features.persona import dhcp
from controller.features.persona import compile as compiler
from controller.core.context import FeatureContext, Realization
from controller.core.view import FabricView
from controller.features.persona.compile import GatewayInput, PersonaNet
from controller.features.persona.nets import persona_net, real_range_owners
from controller.features.persona import alerts
from controller.features.persona import store as persona_store
from controller.features.persona.usage import (Counters, Sample, Thresholds, Usage,
                                               check_thresholds, checked_kinds, counted,
                                               expiry_warning_seconds, update, usage_view)
from controller.pipeline import tables
from controller.pipeline.actions import CONTROLLER, Output
from controller.features.persona.metrics import PersonaMetrics
from controller.features.persona.settings import PersonaSettings
from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.ofctl import render_flow
from controller.probes import Probe, ping_probe
from controller.pipeline.meters import MeterSpec

LOG = logging.getLogger("hubshift.personas")

KIND = "persona"
GATEWAY_MAC = "02:b5:00:00:00:02"


STAGES = ("closing", "unrouted", "done")


@dataclass
class Teardown:
    """A persona on its way out: the last record, and how far the teardown got."""
    body: dict
    stage: str          # "closing" -> "unrouted" -> "done"
    reason: str         # "expired" | "deleted"
    batched: bool = False


class SentProbe(NamedTuple):
    """A latency echo on its way: what to match the reply against, and when it left."""
    probe: Probe
    sent: float


@dataclass
class TeardownBatch:
    """Personas leaving together: one realization per stage for all of them.

    One by one, deleting a thousand personas blocked the worker for minutes
    (three compiles of everything per persona)."""
    ids: list[str]
    stage: int               # index into STAGES
    generation: int          # what every switch must hold before the next stage
    started: float = field(default=0.0)


class Personas:
    def __init__(self, ctx: FeatureContext, settings: PersonaSettings | None = None, *,
                 gateway_mac: str = GATEWAY_MAC) -> None:
        settings = settings or PersonaSettings()
        self.ctx = ctx
        self.store = ctx.store
        self.gateway_dpid = settings.gateway
        self.gateway_mac = gateway_mac
        self.poll_seconds = settings.poll_seconds
        self.metrics = PersonaMetrics(ctx.registry)
        self._active: dict[str, dict] = {}         # id -> body of a live persona
        self._stale = False                        # the records changed since read
        self._expired = 0                          # expired records, for the metric
        self.teardowns: dict[str, Teardown] = {}
        self.batches: list[TeardownBatch] = []
        self._cache: dict = {}
        self._nets: dict[tuple[str, str, bool], tuple[dict, PersonaNet]] = {}
        self.usages: dict[str, Usage] = {}
        self.latency: dict[str, float] = {}                   # id -> last round trip, seconds
        self.probes: dict[str, SentProbe] = {}               # id -> its latency echo in flight
        self._seq = 0
        self._next_poll = 0.0
        self._polling = False
        self._polled_at: float | None = None      # wallclock of the last poll answered
        self._alerts: dict[str, set[str]] | None = None   # id -> kinds of its active alerts
        self._kinds: tuple[dict | None, dict[int, tuple[str, str]]] = (None, {})

    # ------------------------------------------------------------- records
    def load(self) -> None:
        """Read the records; personas that expired while the controller was down go now."""
        self.reload()

    def reload(self) -> None:
        """The records changed: read them again at the next use of `active`.

        Every REST write posts one reload, and a read decodes every record: a
        burst of writes (a thousand creates) queued behind one compile is read
        once, not once per write.
        """
        self._stale = True
        self.ctx.changed()

    @property
    def active(self) -> dict[str, dict]:
        """id -> body of every live persona; a persona no longer there starts its teardown."""
        if self._stale:
            self._stale = False
            docs = self.store.list(KIND)
            bodies = {d.id: d.body for d in docs if d.body.get("state") == "active"}
            self._expired = len(docs) - len(bodies)
            for id, body in self._active.items():
                if id not in bodies and id not in self.teardowns:
                    self.teardowns[id] = Teardown(body, "closing", "deleted")
            self._active = bodies
        return self._active

    # --------------------------------------------------------------- flows
    def nets(self) -> list[PersonaNet]:
        live = {id: body for id, body in self.active.items() if id not in self.teardowns}
        owners = real_range_owners(live)
        # Every compile needs every persona's PersonaNet: parsing a thousand bodies
        # each time cost more than the rest of the compile, so a body equal to the
        # one last seen (same id, stage, ownership) keeps its PersonaNet.
        seen, self._nets = self._nets, {}

        def net(id: str, body: dict, stage: str = "active", owns_real: bool = False) -> PersonaNet:
            key = (id, stage, owns_real)
            hit = seen.get(key)
            if hit is None or hit[0] != body:
                hit = (body, persona_net(id, body, stage, owns_real))
            self._nets[key] = hit
            return hit[1]

        nets = [net(id, body, owns_real=id in owners) for id, body in live.items()]
        nets += [net(id, t.body, t.stage) for id, t in self.teardowns.items()
                 if t.stage != "done"]
        return sorted(nets, key=lambda p: p.id)

    def gateway_input(self, view: FabricView, switches: frozenset[int],
                      nets: list[PersonaNet]) -> GatewayInput:
        return GatewayInput(gateway_dpid=self.gateway_dpid if self.gateway_dpid is not None else -1,
                            gateway_mac=self.gateway_mac, router_mac=view.router_mac,
                            switches=switches, hops=view.hops, hosts=view.hosts,
                            personas=tuple(nets))

    def contribute(self, view: FabricView) -> tuple[dict[int, tuple[FlowSpec, ...]],
                                                    dict[int, tuple[MeterSpec, ...]]]:
        """Every switch's persona flows, and the gateway's meters."""
        nets = self.nets()
        if self.gateway_dpid is None or not nets:
            return {}, {}
        inp = self.gateway_input(view, view.switches, nets)
        meters = compiler.compile_meters(inp)
        return compiler.compile_personas(inp, self._cache), \
            ({self.gateway_dpid: meters} if meters else {})

    def preview(self, id: str, body: dict) -> dict:
        """The flows a persona body would add, per switch, one rendered flow per item
        (nothing changes)."""
        if self.gateway_dpid is None:
            raise ValueError("no persona gateway: set personas.gateway in the controller config")
        view = self.ctx.view()
        nets = [n for n in self.nets() if n.id != id] + [persona_net(id, body)]
        inp = self.gateway_input(view, view.switches | {self.gateway_dpid}, nets)
        mine = compiler.persona_cookie(id), *(compiler.usage_cookie(id, k) for k in
                                             (compiler.OUT, compiler.IN, compiler.CONNECTION,
                                              compiler.DENIED))
        flows = {f"{d:016x}": [render_flow(f) for f in fl if f.cookie in mine]
                 for d, fl in compiler.compile_personas(inp).items()}
        meters = [m.__dict__ for m in compiler.persona_meters(persona_net(id, body))]
        return {"flows": {d: f for d, f in flows.items() if f}, "meters": meters}

    # ---------------------------------------------------------------- time
    def next_wakeup(self) -> float | None:
        if any(not t.batched for t in self.teardowns.values()):
            return 0.0
        if self.batches:
            return 0.05
        if not self.active:
            return None
        now = self.ctx.wallclock()
        return max(0.0, min(min(b["expires_at"] for b in self.active.values()) - now,
                            self.poll_seconds))

    def tick(self) -> None:
        now = self.ctx.wallclock()
        for id, body in self.active.items():
            if body["expires_at"] <= now and id not in self.teardowns:
                self.teardowns[id] = Teardown(body, "closing", "expired")
        self._advance_teardowns()
        if self.active and self.ctx.clock() >= self._next_poll and not self._polling:
            self._next_poll = self.ctx.clock() + self.poll_seconds
            self._poll()

    def _advance_teardowns(self) -> None:
        """Walk personas out in order, each stage realized everywhere before the next."""
        new = [id for id, t in self.teardowns.items() if not t.batched]
        if new:
            for id in new:
                self.teardowns[id].batched = True
            self.batches.append(TeardownBatch(new, -1, 0, self.ctx.clock()))
        for batch in list(self.batches):
            if batch.stage >= 0 and self.ctx.realization(
                    self.ctx.view().switches, batch.generation) is Realization.PENDING:
                continue
            batch.stage += 1
            if batch.stage < len(STAGES):
                for id in batch.ids:
                    self.teardowns[id].stage = STAGES[batch.stage]
                batch.generation = self.ctx.changed()
            else:
                self.batches.remove(batch)
                self._torn_down(batch)

    def _torn_down(self, batch: TeardownBatch) -> None:
        ms = round((self.ctx.clock() - batch.started) * 1000, 1)
        now = self.ctx.wallclock()
        for id in batch.ids:
            t = self.teardowns.pop(id)
            self._flush_zone(id, t.body)
            self.active.pop(id, None)
            if t.reason == "expired":
                persona_store.mark_expired(self.store, id, now)
                self._expired += 1
                alerts.clear_persona(self.store, self.ctx.journal, persona_id=id, now=now)
            else:
                alerts.remove_persona(self.store, id)
            self.usages.pop(id, None)
            if self._alerts is not None:
                self._alerts.pop(id, None)
            self.latency.pop(id, None)
            self.probes.pop(id, None)
            self.metrics.forget(id)
            self.ctx.journal("persona", id, f"{t.reason}: torn down", ms=ms,
                             together=len(batch.ids))

    def _flush_zone(self, id: str, body: dict) -> None:
        """The persona's conntrack zone is free again: forget its connections, so the
        next persona given the zone inherits nothing."""
        if self.gateway_dpid is None:
            return
        zone = persona_net(id, body, "done").zone

        def flushed(answer: Future) -> None:
            if answer.exception() is not None:
                LOG.warning("persona %s: flushing zone %d: %s", id, zone, answer.exception())
        self.ctx.request(self.gateway_dpid, lambda channel: channel.flush_zone(zone), flushed)

    # ------------------------------------------------------------ monitoring
    def _poll(self) -> None:
        """Ask the gateway for its usage counters; `_counted` goes on with the answer."""
        if self.gateway_dpid is None or not self.ctx.ready(self.gateway_dpid):
            return
        cookie, mask = compiler.usage_mask()
        self._polling = self.ctx.request(
            self.gateway_dpid, lambda channel: channel.flow_counters(None, cookie, mask),
            self._counted)

    def _counted(self, answer: Future) -> None:
        """The gateway's counters: usage, thresholds, latency, alerts (on the worker)."""
        self._polling = False
        if answer.exception() is not None:
            LOG.warning("persona usage poll: %s", answer.exception())
            return
        kinds = self._usage_kinds()
        readings: dict[str, dict[tuple[int, int, int], Counters]] = {}
        for spec, packets, nbytes in answer.result():
            owner = kinds.get(spec.cookie)
            if owner is None:
                continue
            id, kind = owner
            # A source is one flow: the same flow is read under the same key every poll.
            key = (spec.table, spec.priority, hash(spec.match))
            readings.setdefault(id, {})[key] = counted(kind, packets, nbytes)
        at, now = self.ctx.clock(), self.ctx.wallclock()
        for id, body in self.active.items():
            self.usages[id] = update(self.usages.get(id), Sample.of(at, readings.get(id, {})))
            self._check(id, body, now)
        self._probe_latency()
        self._publish()

    def _usage_kinds(self) -> dict[int, tuple[str, str]]:
        """Counted flow cookie -> (persona id, what it counts), kept while the
        personas stay the same."""
        active = self.active
        if self._kinds[0] is not active:
            self._kinds = (active, {compiler.usage_cookie(id, k): (id, k) for id in active
                                    for k in (compiler.OUT, compiler.IN, compiler.CONNECTION,
                                              compiler.DENIED)})
        return self._kinds[1]

    def _check(self, id: str, body: dict, now: float) -> None:
        doc = body["document"]
        limits = doc.get("alert_thresholds")
        thresholds = Thresholds.from_body(limits)
        objective = (doc.get("qos") or {}).get("latency_ms")
        objective = objective / 1000 if objective else None
        warning = expiry_warning_seconds(limits)
        measured = self.latency.get(id)
        usage = self.usages[id]
        crossings = check_thresholds(usage, thresholds, objective, measured, body["expires_at"],
                                     now, warning)
        checked = checked_kinds(thresholds, objective, measured, body["expires_at"], warning)
        # Only what changes reaches the store: a crossing not raised yet, a raised
        # alert whose condition went (the runtime is the only writer of alerts).
        raised = self._raised(id)
        new = [c for c in crossings if c.kind not in raised]
        crossed = {c.kind for c in crossings}
        gone = [k for k in checked if k in raised and k not in crossed]
        if new or gone:
            alerts.sync(self.store, self.ctx.journal, self.ctx.metrics, persona_id=id,
                        crossings=new, checked=gone, now=now, subject=doc["name"])
            raised.difference_update(gone)
            raised.update(c.kind for c in new)
        t = usage.totals
        self.metrics.observe(id, bytes_out=t.bytes_out, bytes_in=t.bytes_in,
                             rate_out=usage.rate_out_bps, rate_in=usage.rate_in_bps,
                             denied=t.denied)

    def _raised(self, id: str) -> set[str]:
        """The kinds of a persona's active alerts (read from the store once)."""
        if self._alerts is None:
            self._alerts = {}
            for alert in alerts.alerts(self.store, active=True):
                self._alerts.setdefault(alert.persona_id, set()).add(alert.kind)
        return self._alerts.setdefault(id, set())

    def _probe_latency(self) -> None:
        """One echo from each persona's gateway address to its first member, per poll."""
        for net in self.nets():
            body = self.active.get(net.id)
            if body is None or not net.members \
                    or not (body["document"].get("qos") or {}).get("latency_ms"):
                continue
            id = net.id
            m = net.members[0]
            self._seq = (self._seq + 1) & 0xFFFF
            probe = ping_probe(self.gateway_mac, str(net.gateway_ip), m.mac, str(m.ip),
                               net.index, self._seq)
            self.probes[id] = SentProbe(probe, self.ctx.clock())
            self.ctx.packet_out(m.dpid, probe.frame, [Output(m.port)], CONTROLLER)

    def _publish(self) -> None:
        self._polled_at = self.ctx.wallclock()
        self.metrics.personas.labels("active").set(len(self.active))
        self.metrics.personas.labels("expired").set(self._expired)

    def usage(self, id: str) -> dict | None:
        """The last poll's usage of a persona (a query: on the worker), or None."""
        usage = self.usages.get(id)
        if usage is None or id not in self.active or self._polled_at is None:
            return None
        return usage_view(usage, self._polled_at, self.latency.get(id))

    # ------------------------------------------------------------ packet-in
    def on_packet_in(self, dpid: int, table_id: int, in_port: int, pkt: Any, data: bytes) -> None:
        """DHCP from an attached interface (persona_edge), echo replies (persona_gateway)."""
        if table_id == tables.PERSONA_GATEWAY.id:
            for id, (probe, sent) in list(self.probes.items()):   # SentProbe
                if probe.is_reply(data):
                    self.latency[id] = self.ctx.clock() - sent
                    del self.probes[id]
            return
        request = dhcp.parse_request(data)
        if request is None:
            return
        for net in self.nets():
            body, id = self.active.get(net.id), net.id
            if body is None or net.closing:
                continue
            member = next((m for m in net.members if m.dpid == dpid and m.port == in_port
                           and m.mac == request.client_mac.lower()), None)
            if member is None:
                continue
            decision = dhcp.decide(request, str(member.ip), str(net.gateway_ip))
            if decision is None:
                return
            lease = int(max(60, min(body["expires_at"] - self.ctx.wallclock(), dhcp.MAX_LEASE)))
            frame = dhcp.build_reply(request, kind=decision.kind, your_ip=str(member.ip),
                                     server_ip=str(net.gateway_ip), server_mac=self.gateway_mac,
                                     netmask=str(net.ip_range.netmask),
                                     router=str(net.gateway_ip), lease_seconds=lease)
            self.ctx.packet_out(dpid, frame, [Output(in_port)], CONTROLLER)
            self.ctx.journal("dhcp", member.interface_id, decision.reason, persona_id=id)
            return
