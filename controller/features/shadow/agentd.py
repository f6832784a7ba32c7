"""The shadow agents' channel at the hub: punted datagrams in, packet-outs back.

A datagram is taken only from its slot's own interface (the interface record's
datapath, port and MAC): the key of a slot is offered to the receiver only for
a datagram punted from there, so anything else naming the slot, authentic or
not, is `unknown_slot` and raises no counter.  `protocol.Receiver` checks the
HMAC, the counter (replays) and the epoch; every refusal is counted in
`hub_shadow_agent_rejected_total{reason}` and nothing answers it.  Answers go
by packet-out out of the slot's port, from the gateway of its subnet to where
the agent spoke from (docs/shadow-agent.md).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.agents.channel import MALFORMED, Counter as SendCounter, key_bytes, new_nonce
from controller.agents.shadow import protocol
from controller.agents.shadow.protocol import Body, Message, Rejected
from controller.core.feature import PacketIn
from controller.features.shadow.document import AGENT_PORT
from controller.features.shadow.records import INSTANCE_STATES
from controller.pipeline.actions import Output
from controller.probes import parse_udp, udp_frame
from controller.store import Store

LOG = logging.getLogger("hubshift.shadows.agents")
EPOCH_KEY = "shadow.epoch"


@dataclass(frozen=True)
class Port:
    """Where a slot is plugged in, from its interface record."""
    dpid: int
    port: int
    mac: str
    ips: tuple[str, ...]


@dataclass(frozen=True)
class Heard:
    """An accepted message and where its agent spoke from."""
    msg: Message
    ip: str
    port: int


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rejected = Counter("hub_shadow_agent_rejected", "Shadow agent datagrams dropped "
                                "unanswered, by reason", ["reason"], registry=r)
        for reason in protocol.REASONS:
            self.rejected.labels(reason)
        self.messages = Counter("hub_shadow_agent_messages", "Shadow agent messages accepted, "
                                "by type", ["type"], registry=r)
        self.instances = Gauge("hub_shadow_instances", "Shadow instances listed, by state",
                               ["state"], registry=r)
        for state in INSTANCE_STATES:
            self.instances.labels(state)
        self.findings = Counter("hub_shadow_findings", "Findings of the analysis profiles",
                                ["appliance", "profile", "severity"], registry=r)
        self.mirrored = Counter("hub_shadow_mirrored", "What was mirrored to the shadows, by "
                                "what it counts (connections, packets, bytes, dropped: lost "
                                "at the slots)", ["appliance", "what"], registry=r)
        self.profile = Gauge("hub_shadow_profile", "Figures the shadows' profiles report "
                             "(latency_p50_ms, latency_p99_ms, throughput_bps, memory_bytes, "
                             "...), per instance", ["appliance", "instance", "name"], registry=r)


def next_epoch(store: Store) -> int:
    """The hub's epoch for this start: one more than the last start's (never 0)."""
    with store.transaction():
        old = int(store.get_meta(EPOCH_KEY) or 0)
        epoch = (old % 0xFFFFFFFE) + 1
        store.set_meta(EPOCH_KEY, str(epoch))
    return epoch


class AgentLink:
    """Datagrams of the slots' agents, in and out; `epoch` is what the hub sends."""

    def __init__(self, ctx, metrics: AgentMetrics, key_of: Callable[[str], str | None],
                 port_of: Callable[[str], Port | None],
                 epoch_ok: Callable[[str, int, protocol.Type], bool]) -> None:
        self.ctx, self.metrics = ctx, metrics
        self.key_of, self.port_of = key_of, port_of
        self.receiver = protocol.Receiver(self._key_from_here, epoch_ok)
        self.counter = SendCounter(ctx.wallclock)
        self.epoch = 0
        self._from: tuple[int, int, str] | None = None     # the punt being read

    def _key_from_here(self, slot_id: str) -> bytes | None:
        key, where = self.key_of(slot_id), self.port_of(slot_id)
        if key is None or where is None or self._from != (where.dpid, where.port, where.mac):
            return None
        return key_bytes(key)

    def receive(self, punt: PacketIn) -> Heard | None:
        """The message of a punted datagram, or None (counted) when it is refused."""
        dgram = parse_udp(punt.data)
        if dgram is None or dgram.dport != AGENT_PORT:
            self.metrics.rejected.labels(MALFORMED).inc()
            return None
        self._from = (punt.dpid, punt.in_port, dgram.eth_src.lower())
        try:
            msg = self.receiver.accept(dgram.payload)
        except Rejected as exc:
            LOG.debug("shadow agent datagram from %s dropped: %s", dgram.ip_src, exc)
            self.metrics.rejected.labels(exc.reason).inc()
            return None
        finally:
            self._from = None
        self.metrics.messages.labels(msg.type.name.lower()).inc()
        return Heard(msg, dgram.ip_src, dgram.sport)

    def send(self, slot_id: str, ip: str, port: int, body: Body) -> bool:
        """Packet-out one message to a slot's agent at ip:port; False if the slot's
        interface or key is not known."""
        key, where = self.key_of(slot_id), self.port_of(slot_id)
        if key is None or where is None:
            return False
        view = self.ctx.view()
        msg = Message(slot_id, self.counter.next(), new_nonce(), self.epoch, body)
        frame = udp_frame(view.router_mac, where.mac, view.gateway_of(where.ips) or "0.0.0.0",
                          ip, AGENT_PORT, port, protocol.encode(msg, key_bytes(key)))
        self.ctx.packet_out(where.dpid, frame, [Output(where.port)])
        return True
