"""RAP at the hub: punted datagrams in, answers out by packet-out, leases that run out.

A datagram is taken only from the interface its resource is enrolled on;
`Receiver.accept` authenticates it (and refuses replays and stale epochs),
`server.answer` decides, and this module stores the lease, recompiles when
the resource's translation changed, and sends the answers to where the
client spoke from.  Every refusal is counted in `hub_rap_rejected_total`
and nothing answers it.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Callable

from controller.core.feature import PacketIn
from controller.rap import protocol as rap
from controller.features.shard.addresses import quarantine, settle_shards
from controller.features.shard.records import LEASED, OFFERED, Client, Lease, Resource
from controller.features.shard.runtime import ShardState
from controller.features.shard.server import Reply, answer, unleased
from controller.features.shard.translate import BROADCAST
from controller.pipeline.actions import Output
from controller.probes import parse_udp, udp_frame

LOG = logging.getLogger("hubshift.shards.rap")
EXPIRY_GRACE = 30.0     # a lease that ran out while the hub was down gets this long to renew


class RapService:
    def __init__(self, ctx, state: ShardState, on_ack: Callable[[Lease, float], None]) -> None:
        self.ctx = ctx
        self.s = state
        self.on_ack = on_ack                 # the ACK of an announced address (moves)
        self.sent_at: dict[str, float] = {}  # resource -> when its OFFER/ANNOUNCE went (RTT)

    def resumed(self) -> None:
        """After a restart: leases that ran out while nobody could renew get a grace."""
        now = self.ctx.wallclock()
        for lease in list(self.s.leases.values()):
            if lease.state == LEASED and lease.expires_at is not None:
                pool = self._pool(lease.id)
                grace = min(EXPIRY_GRACE, pool.rap.lease) if pool else EXPIRY_GRACE
                if lease.expires_at < now + grace:
                    self.s.put_lease(replace(lease, expires_at=now + grace))

    def _pool(self, rid: str):
        r = self.s.resources.get(rid)
        return self.s.pools.get(r.pool_id) if r else None

    # ------------------------------------------------------------ in
    def on_packet_in(self, punt: PacketIn) -> None:
        dgram = parse_udp(punt.data)
        if dgram is None:
            return self.s.metrics.rejected.labels("malformed").inc()
        try:
            msg = self.s.receiver.accept(dgram.payload)
        except rap.Rejected as exc:
            LOG.debug("RAP from %s dropped: %s", dgram.ip_src, exc)
            return self.s.metrics.rejected.labels(exc.reason).inc()
        resource = self.s.resources[msg.resource]
        where = self.s.port_of(resource)
        if where is None or (where.dpid, where.port, where.mac) != (punt.dpid, punt.in_port,
                                                                    dgram.eth_src):
            # Authentic, but from another interface than the enrolled one.
            return self.s.metrics.rejected.labels("unknown_resource").inc()
        self.s.metrics.messages.labels(msg.type.name.lower()).inc()
        pool = self.s.pools[resource.pool_id]
        now = self.ctx.wallclock()
        source = Client(dgram.ip_src if dgram.ip_src != "0.0.0.0" else BROADCAST, dgram.sport)
        lease = self.s.lease(resource.id)
        pool_id = resource.pool_id
        before = self.s.state(pool_id)
        out = answer(msg, source, lease, pool, before, lambda: self.s.leases_by_id(pool_id), now,
                     self.ctx.random, self.s.epoch)
        if out.event:
            out.lease = out.lease.logged(now, out.event, address=out.lease.address)
            self.ctx.journal("shard", resource.id, out.event, address=out.lease.address)
        if out.state != before:
            self.s.put_state(settle_shards(out.state, self.s.leases_of(pool_id)))
        if out.renewed:
            self.s.metrics.renewals.labels(pool_id).inc()
        if msg.type == rap.Type.ACK and resource.id in self.sent_at:
            self.s.metrics.rtt.observe(self.ctx.clock() - self.sent_at.pop(resource.id))
        self.s.put_lease(out.lease)
        for reply in out.replies:
            self.send(resource, out.lease, reply)
        if out.flows:
            self.ctx.changed()
        if out.move_acked:
            self.on_ack(out.lease, now)

    # ------------------------------------------------------------ out
    def send(self, resource: Resource, lease: Lease, reply: Reply) -> bool:
        """Packet-out one message to the client, where it last spoke from."""
        where = self.s.port_of(resource)
        pool = self.s.pools.get(resource.pool_id)
        if where is None or pool is None or lease.client is None:
            return False
        view = self.ctx.view()
        gateway = view.gateway_of(where.ips) or "0.0.0.0"
        msg = rap.Message(reply.type, resource.id, self.s.counter.next(), rap.new_nonce(),
                          self.s.epoch, lease=reply.lease,
                          address=IPv4Address(reply.address) if reply.address else None,
                          reason=reply.reason)
        data = rap.encode(msg, rap.key_bytes(resource.key))
        frame = udp_frame(view.router_mac, where.mac, gateway, lease.client.ip, pool.rap.port,
                          lease.client.port, data)
        self.ctx.packet_out(where.dpid, frame, [Output(where.port)])
        if reply.type in (rap.Type.OFFER, rap.Type.ANNOUNCE):
            self.sent_at.setdefault(resource.id, self.ctx.clock())
        return True

    # ------------------------------------------------------------ time
    def expire(self, now: float) -> None:
        """Leases not renewed in time end: flows go, addresses to quarantine."""
        for lease in list(self.s.leases.values()):
            if lease.state not in (LEASED, OFFERED) or lease.expires_at is None:
                continue
            if lease.expires_at > now or lease.id not in self.s.resources:
                continue
            resource = self.s.resources[lease.id]
            pool = self.s.pools.get(resource.pool_id)
            if pool is None:
                continue
            state = self.s.state(resource.pool_id)
            for address in lease.held():
                state = quarantine(state, address, now + pool.quarantine, now)
            ended = replace(unleased(lease), deprecated=()).logged(now, "expired",
                                                                   address=lease.address)
            self.s.put_lease(ended)
            self.s.put_state(settle_shards(state, self.s.leases_of(resource.pool_id)))
            self.s.metrics.expiries.labels(resource.pool_id).inc()
            self.ctx.journal("shard", lease.id, "lease expired", address=lease.address)
            self.ctx.changed()

    def next_expiry(self) -> float | None:
        times = [l.expires_at for l in self.s.leases.values()
                 if l.state in (LEASED, OFFERED) and l.expires_at is not None]
        return min(times) if times else None
