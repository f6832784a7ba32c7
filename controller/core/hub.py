"""The hub core: one worker thread owns the fabric model and talks to switches.

os-ken handlers, REST handlers and timers never change state themselves: they
`post` work here.  The worker runs posted work in order, then, once the queue
is drained, asks every feature for its contribution, reconciles every switch
whose inputs changed, and lets the features' state machines advance
(`Feature.tick`).  Readers (the REST API) get an immutable snapshot published
after each batch.  The core names no feature: the registry hands it a list.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

from controller.core.channel import SwitchChannel
from controller.core.context import FeatureContext, HeldPacket, Realization
from controller.core.convergence import Convergence
from controller.core.discovery import Discovery, Punted, bootstrap_flows, is_lldp, table_name
from controller.core.feature import Contribution, Feature, FeatureFactory, PacketIn
from controller.core.metrics import Metrics
from controller.core.snapshot import Snapshot, empty_snapshot, publish
from controller.core.topology import Port, Subnet, dpid_str
from controller.core.view import FabricView
from controller.ovsdb import OvsdbError, OvsdbSwitches
from controller.packets import parse
from controller.pipeline import tables
from controller.pipeline.actions import Action, LOCAL
from controller.reconcile.tunnels import TunnelPort, TunnelPorts
from controller.store import Store

LOG = logging.getLogger("hubshift.hub")

ROUTER_MAC = "02:b5:00:00:00:01"
MAX_ROUNDS = 8   # converge + tick rounds per step, at most


class Hub:
    def __init__(self, store: Store, metrics: Metrics | None = None, *,
                 features: Iterable[FeatureFactory] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 settle: float = 1.0, router_mac: str = ROUTER_MAC,
                 ovsdb: OvsdbSwitches | None = None, seed: int | None = None,
                 requests: Executor | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.wallclock = wallclock
        self.router_mac = router_mac
        self.channels: dict[int, SwitchChannel] = {}
        self.discovery = Discovery(store, self.metrics, self.channels, clock=clock,
                                   wallclock=wallclock, router_mac=router_mac,
                                   changed=self.changed, journal=self.journal)
        self.topo = self.discovery.topo
        self.tunnels = TunnelPorts(ovsdb, clock)        # VPN tunnel ports, made over OVSDB
        self.convergence = Convergence(self.metrics, clock, wallclock, settle, self.journal)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Switch requests (stats) run here, off the worker; their answers are posted back.
        self._requests = requests or ThreadPoolExecutor(max_workers=4,
                                                        thread_name_prefix="hub-request")
        self._started_at = wallclock()
        self._snapshot: Snapshot = empty_snapshot(self._started_at)
        self._view: FabricView | None = None
        self._tunnels_wanted: dict[int, list[TunnelPort]] = {}
        self.features: list[Feature] = []
        for factory in features:
            ctx = FeatureContext(factory.name, self, store=store, metrics=self.metrics,
                                 clock=clock, wallclock=wallclock, seed=seed)
            self.features.append(factory.build(ctx))
        self._by_name = {f.name: f for f in self.features}
        self._punts = _owners(self.features, "punts from table", lambda f: f.punt_tables)
        self._kinds = _owners(self.features, "owns documents of kind", lambda f: f.document_kinds)
        self.discovery.load()
        for feature in self.features:
            feature.load()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hub-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(lambda: None)
        if self._thread:
            self._thread.join(timeout)
        self._requests.shutdown(wait=False, cancel_futures=True)

    def post(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) on the worker thread (thread-safe)."""
        self._queue.put(lambda: fn(*args))

    def feature(self, name: str) -> Feature:
        return self._by_name[name]

    # ------------------------------------------------ entry points (any thread)
    def switch_connected(self, channel: SwitchChannel) -> None:
        self.post(self._on_switch_connected, channel)

    def switch_disconnected(self, dpid: int, channel: SwitchChannel) -> None:
        self.post(self._on_switch_disconnected, dpid, channel)

    def port_status(self, dpid: int, port: Port, deleted: bool) -> None:
        self.post(self._on_port_status, dpid, port, deleted)

    def packet_in(self, dpid: int, table_id: int, in_port: int, data: bytes) -> None:
        self.metrics.packet_in.labels(dpid_str(dpid), table_name(table_id)).inc()
        self.post(self._on_packet_in, dpid, table_id, in_port, data)

    # HubView (controller.api.context): what the REST API reads and asks.
    def documents_changed(self, kind: str) -> None:
        feature = self._kinds.get(kind)
        if feature is not None:
            self.post(feature.documents_changed, kind)

    def query(self, feature: str, name: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run a feature's query on the worker and wait for its answer.

        A query may answer with a Future (it asked a switch); the caller then
        waits for that too, within the same timeout.
        """
        owner = self._by_name.get(feature)
        if owner is None:
            raise LookupError(f"no feature {feature!r}")
        answer = self._ask(lambda: owner.query(name, **args), timeout)
        return answer.result(timeout) if isinstance(answer, Future) else answer

    def _ask(self, fn: Callable[[], Any], timeout: float) -> Any:
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
        self.post(run)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError("the hub did not answer in time") from None

    def health(self) -> dict:
        snap = self._snapshot
        connected = sum(1 for d in snap.datapaths if d["connected"])
        in_sync = all(d["flows"]["in_sync"] for d in snap.datapaths if d["connected"])
        return {"status": "ok" if in_sync else "degraded", "datapaths_connected": connected,
                "uptime_s": round(self.wallclock() - snap.started_at, 3)}

    def datapaths(self) -> list[dict]:
        return list(self._snapshot.datapaths)

    def datapath(self, id: str) -> dict | None:
        return next((d for d in self._snapshot.datapaths if d["id"] == id.lower()), None)

    def topology(self) -> dict:
        return self._snapshot.topology

    # ------------------------------------------------------------ the worker
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                work = self._queue.get(timeout=self._next_timeout())
            except queue.Empty:
                work = None
            while work is not None:
                self._safely(work)
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    work = None
            self.step()

    def step(self) -> None:
        """After a batch of work: converge, let the features advance, and again while
        their ticks change intent (a state machine walks several steps in one go)."""
        for _ in range(MAX_ROUNDS):
            self._safely(self._converge)
            before = self.convergence.generation
            for feature in self.features:
                self._safely(feature.tick)
            if self.convergence.generation == before:
                break   # (a switch that refused a change is retried at the next change)

    def _safely(self, work: Callable) -> None:
        try:
            work()
        except Exception:
            LOG.exception("hub worker: unhandled error")

    def _next_timeout(self) -> float:
        pending = [self.convergence.next_settle()]
        for feature in self.features:
            try:
                pending.append(feature.next_wakeup())
            except Exception:
                LOG.exception("%s: next_wakeup", feature.name)
        waits = [w for w in pending if w is not None]
        return max(0.01, min(waits)) if waits else 1.0

    # ------------------------------------------------------------- services
    def journal(self, kind: str, subject: str, message: str, **data: Any) -> None:
        self.store.append_event(kind, subject, message, data)
        LOG.info("%s %s: %s", kind, subject, message)

    def changed(self) -> int:
        self._view = None
        return self.convergence.changed()

    def realization(self, dpid: int, generation: int) -> Realization:
        if not self.ready(dpid):
            return Realization.FAILED
        return self.convergence.realization(dpid, generation)

    def ready(self, dpid: int) -> bool:
        return dpid in self.channels and not self.convergence.settling(dpid)

    def ready_switches(self) -> frozenset[int]:
        return frozenset(d for d in self.channels if self.ready(d))

    def view(self) -> FabricView:
        if self._view is None:
            self._view = FabricView(
                switches=self.ready_switches(), links=frozenset(self.topo.links),
                hosts=tuple(sorted(self.topo.hosts.values(), key=lambda h: h.mac)),
                subnets=self.discovery.subnets, router_mac=self.router_mac,
                tunnel_ports=self.tunnels.ofports(),
                bridges={d: n for d in self.channels if (n := self._bridge_name(d))})
        return self._view

    def set_subnets(self, subnets: Sequence[Subnet]) -> None:
        if tuple(subnets) != self.discovery.subnets:
            self.discovery.subnets = tuple(subnets)
            self.changed()

    def packet_out(self, dpid: int, data: bytes, actions: Sequence[Action], in_port: int) -> None:
        channel = self.channels.get(dpid)
        if channel is not None:
            channel.packet_out(data, list(actions), in_port=in_port)
            self.metrics.packet_out.labels(dpid_str(dpid)).inc()

    def request(self, dpid: int, call: Callable[[SwitchChannel], Any],
                then: Callable[[Future], None]) -> bool:
        channel = self.channels.get(dpid)
        if channel is None:
            return False
        future = self._requests.submit(call, channel)
        future.add_done_callback(lambda done: self.post(then, done))
        return True

    def resolve(self, ip: str, held: HeldPacket | None) -> None:
        self.discovery.resolve(ip, None if held is None else
                               Punted(held.dpid, held.in_port, held.data))

    def flood(self, data: bytes, exclude: tuple[int, int]) -> None:
        self.discovery.flood(data, exclude)

    def ensure_tunnel(self, port: TunnelPort) -> str | None:
        try:
            self.tunnels.ensure(port, self._bridge_name(port.dpid))
        except OvsdbError as exc:
            return f"the tunnel port could not be created over OVSDB: {exc}"
        return None

    def _bridge_name(self, dpid: int) -> str | None:
        """The switch's bridge name: OpenFlow reports it as the name of the LOCAL port."""
        sw = self.topo.switches.get(dpid)
        local = sw.ports.get(LOCAL) if sw else None
        return local.name if local else None

    # ---------------------------------------------------------------- switches
    def _on_switch_connected(self, channel: SwitchChannel) -> None:
        dpid = channel.dpid
        sw = self.topo.switch(dpid)
        sw.connected, sw.of_version = True, channel.of_version
        self.channels[dpid] = channel
        self.topo.set_ports(dpid, channel.ports())
        # Links on ports that no longer exist or are down are gone.
        for port_no in self.topo.link_ports(dpid):
            if port_no not in sw.ports or not sw.ports[port_no].up:
                self.discovery.drop_links(dpid, port_no)
        installed = self.convergence.connect(channel)
        self.journal("datapath", dpid_str(dpid), "connected",
                     of_version=channel.of_version, ports=len(sw.ports), installed=installed)
        # Discover links during the settle time, before the first full reconcile:
        # the switch punts LLDP, probes out of every port, and every other switch
        # probes out of its edge ports (which may face this one).
        self.convergence.ensure(dpid, bootstrap_flows())
        self.discovery.probe_links(dpid)
        for other in self.channels:
            if other != dpid:
                self.discovery.probe_links(other, self.topo.edge_ports(other))
        self.changed()

    def _on_switch_disconnected(self, dpid: int, channel: SwitchChannel) -> None:
        if self.channels.get(dpid) is not channel:
            return  # an older connection of a switch that has already reconnected
        del self.channels[dpid]
        self.convergence.disconnect(dpid)
        self.topo.switch(dpid).connected = False
        self.journal("datapath", dpid_str(dpid), "disconnected")
        self.changed()

    def _on_port_status(self, dpid: int, port: Port, deleted: bool) -> None:
        sw = self.topo.switch(dpid)
        if deleted:
            sw.ports.pop(port.port_no, None)
        else:
            sw.ports[port.port_no] = port
        if deleted or not port.up:
            self.discovery.drop_links(dpid, port.port_no)
        else:
            self.discovery.probe_links(dpid, [port.port_no])
        self.changed()

    # --------------------------------------------------------------- packet-in
    def _on_packet_in(self, dpid: int, table_id: int, in_port: int, data: bytes) -> None:
        pkt = parse(data)
        if pkt is None:
            return
        if is_lldp(pkt):
            self.discovery.on_lldp(dpid, in_port, pkt)
        elif not self.ready(dpid):
            return  # links not known yet: a packet here could come from another switch
        elif table_id == tables.CLASSIFY.id:
            self.discovery.on_unknown_source(Punted(dpid, in_port, data), pkt)
        else:
            owner = self._punts.get(table_id)
            if owner is not None:
                owner.on_packet_in(PacketIn(dpid, table_id, in_port, data, pkt))

    # ------------------------------------------------------------- convergence
    def _converge(self) -> None:
        if self.convergence.settle_due():
            self.changed()
        ready = self.ready_switches()
        contributions = self._contributions() if self.convergence.dirty(ready) else None
        if contributions is not None:
            self._tunnels_wanted = _merge_tunnels(contributions)
        # Tunnel ports exist (over OVSDB) before any flow names them, and go once no
        # flow does; both are retried on their own timers, so they run every time.
        if self.tunnels.sync(self._tunnels_wanted, ready, self._bridge_name):
            self.changed()        # a tunnel port's number became known (or went)
            contributions = self._contributions()
        if contributions is not None:
            self.convergence.reconcile(ready, contributions)
        self.tunnels.prune(self._tunnels_wanted,
                           [d for d in ready if self.convergence.in_sync(d)])
        self.discovery.flush_reinject(self.convergence.in_sync)
        self._snapshot = publish(self._started_at, self.topo, self.convergence, self.channels,
                                 self.metrics)

    def _contributions(self) -> list[Contribution]:
        view = self.view()
        out = [Contribution(flows={d: bootstrap_flows() for d in view.switches})]
        for feature in self.features:
            try:
                out.append(feature.contribute(view))
            except Exception:
                LOG.exception("%s: contribute", feature.name)
                raise
        return out


def _owners(features: Iterable[Feature], what: str,
            owned: Callable[[Feature], Iterable[Any]]) -> dict[Any, Feature]:
    """What each feature owns (punt tables, document kinds): one owner each."""
    owners: dict[Any, Feature] = {}
    for feature in features:
        for item in owned(feature):
            if item in owners:
                raise ValueError(f"{owners[item].name} and {feature.name} both say it "
                                 f"{what} {item!r}")
            owners[item] = feature
    return owners


def _merge_tunnels(contributions: Iterable) -> dict[int, list[TunnelPort]]:
    wanted: dict[int, list[TunnelPort]] = {}
    for c in contributions:
        for dpid, ports in c.tunnels.items():
            for port in ports:
                if port not in wanted.setdefault(dpid, []):
                    wanted[dpid].append(port)
    return wanted
