"""The HRT on the worker: which resource of a service each flow goes to.

Hashed services need nothing here: their flows spread clients by
multipath (`services.compile_services`).  A UDP service with a pattern
sends the first datagram of each flow to the controller (shard_service,
ct_state +new, not pinned).  `ServiceRouter.on_packet_in` searches the
pattern in its payload once and picks the resource:

1. an operator's route for the session (``shard-route``), else
2. the session's learned route (``shard-session``), else
3. the default: a hash of the client's address and port over the service's
   resources that have an address; a session found this way is learned.

It answers with one packet-out, ``ct(commit, zone=Zs, ct_mark=position+1,
table=shard_service)``: the datagram goes on to the resource, and so does
every later one of the flow (conntrack keeps the mark).  Datagrams of the
flow punted before the pin took effect get the same answer (decisions are
remembered `REMEMBER_SECONDS`).  A datagram the pattern finds no session in
goes where the hash puts it, unlearned.

Learned sessions are kept in memory and stored (``shard-session``, written
only here), so a restart keeps them; `tick` forgets those unseen for the
service's ``idle_timeout``.  "Seen" is the first datagram of a flow: a flow
pinned in conntrack sends nothing to the controller.  A session's
``last_seen`` is stored at most every `PERSIST_EVERY` seconds.
"""
from __future__ import annotations

import logging
import re
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from ipaddress import IPv4Network
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge

from controller.core.feature import PacketIn
from controller.features.shard.runtime import ShardState
from controller.features.shard.services import (MARK_BITS, ROUTE, SERVICE, SESSION, Route,
                                                Service, ServiceNet, ServicesInput,
                                                compile_services, mark_of, route_id)
from controller.features.shard.translate import ResourceNet
from controller.pipeline import tables
from controller.pipeline.actions import Conntrack
from controller.pipeline.flowspec import FlowSpec
from controller.probes import UdpDatagram, parse_udp

LOG = logging.getLogger("hubshift.shards.hrt")
REMEMBER_SECONDS = 30.0     # a flow's decision, for its datagrams punted before the pin
MAX_REMEMBERED = 4096
PERSIST_EVERY = 60.0        # seconds: a session's last_seen is stored at most this often
ROUTE_BY, LEARNED_BY, DEFAULT_BY, UNROUTED = "route", "learned", "default", "unrouted"


@dataclass(frozen=True)
class Learned:
    """A session default routing sent to a resource, kept until idle."""
    id: str
    pool_id: str
    service_id: str
    session: str
    resource_id: str
    learned_at: float
    last_seen: float
    idle_timeout: int

    @property
    def expires_at(self) -> float:
        return self.last_seen + self.idle_timeout

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        del body["id"]
        return {**body, "expires_at": self.expires_at}

    @classmethod
    def from_doc(cls, id: str, body: dict[str, Any]) -> "Learned":
        return cls(id, body["pool_id"], body["service_id"], body["session"], body["resource_id"],
                   float(body["learned_at"]), float(body["last_seen"]),
                   int(body["idle_timeout"]))


class Decision(NamedTuple):
    position: int               # in the service's resources
    by: str                     # ROUTE_BY, LEARNED_BY, DEFAULT_BY


class FlowKey(NamedTuple):
    """One client flow to a service, on the switch that punted it."""
    dpid: int
    service_id: str
    src: str
    sport: int


class _Remembered(NamedTuple):
    decision: Decision
    at: float


def extract_session(pattern: str, payload: bytes) -> str | None:
    """The pattern's group in the payload (read as UTF-8, undecodable bytes kept), or None."""
    found = re.search(pattern, payload.decode("utf-8", "surrogateescape"))
    return found.group(1) if found is not None else None


def default_position(available: list[int], client_ip: str, client_port: int) -> int:
    """A stable hash of the client's address and port over the available positions."""
    return available[zlib.crc32(f"{client_ip}:{client_port}".encode()) % len(available)]


class ServiceRouter:
    def __init__(self, ctx, state: ShardState) -> None:
        self.ctx = ctx
        self.s = state
        self.services: dict[str, Service] = {}
        self.routes: dict[str, Route] = {}
        self.by_session: dict[tuple[str, str], Route] = {}
        self.learned: dict[tuple[str, str], Learned] = {}
        self.stored_seen: dict[tuple[str, str], float] = {}   # last_seen as stored
        self.recent: OrderedDict[FlowKey, _Remembered] = OrderedDict()
        self.compiled: dict[str, ServiceNet] = {}             # as the flows hold them now
        r = ctx.registry
        self.decisions = Counter("hub_shard_service_decisions",
                                 "First datagrams of patterned UDP flows, by how their resource "
                                 "was chosen", ["service", "by"], registry=r)
        self.sessions = Gauge("hub_shard_service_sessions", "Learned sessions, per service",
                              ["service"], registry=r)
        self._gauged: set[str] = set()

    # ------------------------------------------------------------ documents
    def load(self) -> None:
        """Services, routes and the learned sessions a previous run stored."""
        self.reload()
        for doc in self.ctx.store.list(SESSION):
            try:
                learned = Learned.from_doc(doc.id, doc.body)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("ignoring unreadable learned session %s: %s", doc.id, exc)
                continue
            key = (learned.service_id, learned.session)
            self.learned[key] = learned
            self.stored_seen[key] = learned.last_seen
        self._forget_unroutable()

    def documents_changed(self) -> bool:
        """Re-read services and routes; True when the flows may have changed."""
        before = dict(self.services)
        changed = self.reload()
        if changed:
            self.recent.clear()
            self._forget_unroutable()
            self._flush_moved(before)
        return changed

    def reload(self) -> bool:
        services, routes = {}, {}
        for doc in self.ctx.store.list(SERVICE):
            try:
                services[doc.id] = Service.from_doc(doc.id, doc.body)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("ignoring invalid shard service %s: %s", doc.id, exc)
        for doc in self.ctx.store.list(ROUTE):
            try:
                routes[doc.id] = Route.from_doc(doc.id, doc.body)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("ignoring invalid shard route %s: %s", doc.id, exc)
        changed = services != self.services or routes != self.routes
        self.services, self.routes = services, routes
        self.by_session = {(r.service_id, r.session): r for r in routes.values()}
        return changed

    def _forget_unroutable(self) -> None:
        """Learned sessions of a service gone, of a resource no longer behind it, or that an
        operator's route now decides."""
        for key, learned in list(self.learned.items()):
            service = self.services.get(learned.service_id)
            if (service is None or service.pattern is None
                    or learned.resource_id not in service.resources or key in self.by_session):
                self._drop(key)

    def _flush_moved(self, before: dict[str, Service]) -> None:
        """A service gone, or whose resources changed: its pinned flows are forgotten (their
        marks name positions), so the next datagram of each is decided again."""
        for sid, old in before.items():
            new = self.services.get(sid)
            if old.pattern is None or (new is not None and (new.resources, new.index)
                                       == (old.resources, old.index)):
                continue
            zone = old.zone
            for dpid in self.ctx.view().switches:
                self.ctx.request(dpid, lambda channel, z=zone: channel.flush_zone(z),
                                 lambda future: None)

    # ------------------------------------------------------------ flows
    def flows(self, view, nets: list[ResourceNet]) -> dict[int, list[FlowSpec]]:
        """Per switch, the flows of every service of a known pool."""
        by_id = {n.id: n for n in nets}
        compiled = []
        for s in sorted(self.services.values(), key=lambda s: s.id):
            if s.pool_id not in self.s.pools:
                continue
            members = tuple(self._member(s, by_id.get(rid)) for rid in s.resources)
            compiled.append(ServiceNet(s, members, self._prefixes(s)))
        try:
            flows = compile_services(ServicesInput(view.switches, view.router_mac, view.hops,
                                                   tuple(compiled)))
        except ValueError as exc:       # a stored service the API would refuse now
            LOG.error("shard services not compiled: %s", exc)
            return {}
        self.compiled = {sn.service.id: sn for sn in compiled}
        return flows

    @staticmethod
    def _member(s: Service, net: ResourceNet | None) -> ResourceNet | None:
        ok = net is not None and net.pool_id == s.pool_id and net.address is not None
        return net if ok else None

    def _prefixes(self, s: Service) -> tuple[tuple[IPv4Network, int], ...]:
        """A service without a pattern: its routes are client prefixes."""
        if s.pattern is not None:
            return ()
        out = []
        for r in sorted(self.routes.values(), key=lambda r: r.id):
            if r.service_id != s.id or r.resource_id not in s.resources:
                continue
            try:
                out.append((IPv4Network(r.session, strict=False),
                            s.resources.index(r.resource_id)))
            except ValueError:
                LOG.error("shard route %s: %r is not a client prefix", r.id, r.session)
        return tuple(out)

    # ------------------------------------------------------------ first datagrams
    def on_packet_in(self, punt: PacketIn) -> None:
        dgram = parse_udp(punt.data)
        sn = self._service_at(dgram) if dgram is not None else None
        if dgram is None or sn is None:
            return
        s, mono = sn.service, self.ctx.clock()
        self._forget_old(mono)
        key = FlowKey(punt.dpid, s.id, dgram.ip_src, dgram.sport)
        known = self.recent.get(key)
        if known is not None and sn.members[known.decision.position] is not None:
            decision = known.decision
        else:
            decision = self._decide(sn, dgram, self.ctx.wallclock())
            self.decisions.labels(s.id, decision.by if decision else UNROUTED).inc()
            if decision is None:
                return
        self.recent[key] = _Remembered(decision, mono)
        self.recent.move_to_end(key)
        pin = Conntrack(commit=True, zone=s.zone, mark=mark_of(decision.position),
                        mark_mask=MARK_BITS.mask, table=tables.SHARD_SERVICE.id)
        self.ctx.packet_out(punt.dpid, punt.data, [pin], punt.in_port)

    def _service_at(self, dgram: UdpDatagram) -> ServiceNet | None:
        return next((sn for sn in self.compiled.values()
                     if sn.service.pattern is not None and sn.service.protocol == "udp"
                     and (sn.service.external_ip, sn.service.port) == (dgram.ip_dst,
                                                                         dgram.dport)), None)

    def _decide(self, sn: ServiceNet, dgram: UdpDatagram, now: float) -> Decision | None:
        s = sn.service
        available = [k for k, m in enumerate(sn.members) if m is not None]
        if not available:
            return None
        assert s.pattern is not None
        session = extract_session(s.pattern, dgram.payload)
        if session is not None:
            route = self.by_session.get((s.id, session))
            if route is not None and route.resource_id in s.resources:
                k = s.resources.index(route.resource_id)
                if k in available:
                    return Decision(k, ROUTE_BY)
            learned = self.learned.get((s.id, session))
            if (learned is not None and learned.resource_id in s.resources
                    and s.resources.index(learned.resource_id) in available):
                self._seen(learned, now)
                return Decision(s.resources.index(learned.resource_id), LEARNED_BY)
        k = default_position(available, dgram.ip_src, dgram.sport)
        if session is not None and (s.id, session) not in self.by_session:
            self._learn(s, session, s.resources[k], now)
        return Decision(k, DEFAULT_BY)

    def _forget_old(self, mono: float) -> None:
        while self.recent:
            key, oldest = next(iter(self.recent.items()))
            if mono - oldest.at <= REMEMBER_SECONDS and len(self.recent) < MAX_REMEMBERED:
                break
            del self.recent[key]

    # ------------------------------------------------------------ learned sessions
    def _learn(self, s: Service, session: str, resource_id: str, now: float) -> None:
        learned = Learned(route_id(s.id, session), s.pool_id, s.id, session, resource_id,
                          now, now, s.idle_timeout)
        self.learned[(s.id, session)] = learned
        self._store(learned)
        self.ctx.journal("shard", s.id, "session learned", session=session,
                         resource=resource_id)

    def _seen(self, learned: Learned, now: float) -> None:
        key = (learned.service_id, learned.session)
        learned = self.learned[key] = replace(learned, last_seen=now)
        every = min(PERSIST_EVERY, learned.idle_timeout / 10)
        if now - self.stored_seen.get(key, 0.0) >= every:
            self._store(learned)

    def _store(self, learned: Learned) -> None:
        self.ctx.store.put(SESSION, learned.id, learned.to_body())
        self.stored_seen[(learned.service_id, learned.session)] = learned.last_seen

    def _drop(self, key: tuple[str, str]) -> None:
        learned = self.learned.pop(key)
        self.stored_seen.pop(key, None)
        if self.ctx.store.find(SESSION, learned.id) is not None:
            self.ctx.store.delete(SESSION, learned.id)

    def tick(self, now: float) -> None:
        """Forget the learned sessions idle for their service's idle_timeout."""
        for key, learned in list(self.learned.items()):
            if learned.expires_at <= now:
                self._drop(key)
                self.ctx.journal("shard", learned.service_id, "session expired",
                                 session=learned.session, resource=learned.resource_id)
        counts = {sid: 0 for sid, s in self.services.items() if s.pattern is not None}
        for sid, _ in self.learned:
            counts[sid] = counts.get(sid, 0) + 1
        for sid in self._gauged - counts.keys():
            self.sessions.remove(sid)
        for sid, n in counts.items():
            self.sessions.labels(sid).set(n)
        self._gauged = set(counts)
