"""The hub core: one worker thread owns the fabric model and talks to switches.

os-ken handlers, REST handlers and timers never change state themselves: they
`post` work here.  The worker runs posted work in order, then, once the queue
is drained, compiles desired flows and reconciles every switch whose inputs
changed.  Readers (the REST API) get an immutable snapshot published after
each batch.
"""
from __future__ import annotations

import logging
import queue
from ipaddress import IPv4Address
import threading
import time
from dataclasses import dataclass
from typing import Callable

from concurrent.futures import Future

from controller.core import interfaces
from controller.core.channel import SwitchChannel
from controller.features.fabric.compile import FabricInput, bootstrap_flows, compile_fabric, subnet_of
from controller.features.personality.compile import Context
from controller.features.personality.vpn import TunnelPort, is_tunnel_port_name
from controller.features.personality.binding import Binding
from controller.features.personality.inspector import TABLES as INSPECTED_TABLES, Inspector
from controller.features.persona.runtime import Personas
from controller.features.personality.switcher import Switcher
from controller.core.metrics import Metrics
from controller.packets import ETH_ARP, ETH_IPV4, ETH_LLDP, Packet, arp_request, lldp_frame, parse
from controller.pipeline import tables
from controller.pipeline.actions import LOCAL, TABLE, Action, Output
from controller.pipeline.flowspec import FlowSpec
from controller.reconcile.meters import MeterReconciler
from controller.pipeline.meters import MeterSpec
from controller.ovsdb import OvsdbError, OvsdbSwitches
from controller.reconcile.flows import Reconciler
from controller.reconcile.tunnels import TunnelPorts
from controller.store import Store
from controller.core.topology import Host, Link, Port, Subnet, Topology, dpid_str

LOG = logging.getLogger("hubshift.hub")

ROUTER_MAC = "02:b5:00:00:00:01"
PROBE_INTERVAL = 1.0  # seconds between ARP probes for one unknown address
AWAIT_SECONDS = 3.0   # how long a routed packet waits for its destination to answer
AWAIT_MAX = 256       # routed packets held at most, over all destinations


@dataclass(frozen=True)
class Snapshot:
    started_at: float
    datapaths: tuple[dict, ...]
    topology: dict


class Hub:
    def __init__(self, store: Store, metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 settle: float = 1.0, router_mac: str = ROUTER_MAC,
                 persona_gateway: int | None = None, persona_poll: float = 1.0,
                 ovsdb: OvsdbSwitches | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.wallclock = wallclock
        self.settle = settle
        self.router_mac = router_mac
        self.topo = Topology()
        self.subnets: tuple[Subnet, ...] = ()
        self.channels: dict[int, SwitchChannel] = {}
        self.reconcilers: dict[int, Reconciler] = {}
        self.settling_until: dict[int, float] = {}
        self.desired: dict[int, tuple[FlowSpec, ...]] = {}
        self.desired_meters: dict[int, tuple[MeterSpec, ...]] = {}
        self.meter_reconcilers: dict[int, MeterReconciler] = {}
        self._generation = 0
        self._synced_generation: dict[int, int] = {}
        self._reconciled_at: dict[int, float] = {}
        self._reinject: list[tuple[int, int, bytes]] = []
        self._probed: dict[str, float] = {}
        self._awaiting: dict[str, list[tuple[float, int, int, bytes]]] = {}
        self.bindings: dict[str, Binding] = {}       # interface id -> its personality
        self._extra: dict[tuple, tuple[int, tuple[FlowSpec, ...]]] = {}  # temporary flows
        self._binding_flows: dict[tuple, tuple[FlowSpec, ...]] = {}
        self.tunnels = TunnelPorts(ovsdb, clock)        # VPN tunnel ports, made over OVSDB
        self.switcher = Switcher(self)
        self.inspector = Inspector(self.bindings, clock)   # application signatures
        self.personas = Personas(self, persona_gateway, poll_seconds=persona_poll)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = wallclock()
        self._snapshot = Snapshot(self._started_at, (), {"switches": [], "links": [], "hosts": []})
        self._load()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hub-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(lambda: None)
        if self._thread:
            self._thread.join(timeout)

    def post(self, fn: Callable, *args) -> None:
        """Run fn(*args) on the worker thread (thread-safe)."""
        self._queue.put(lambda: fn(*args))

    # ------------------------------------------------ entry points (any thread)
    def switch_connected(self, channel: SwitchChannel) -> None:
        self.post(self._on_switch_connected, channel)

    def switch_disconnected(self, dpid: int, channel: SwitchChannel) -> None:
        self.post(self._on_switch_disconnected, dpid, channel)

    def port_status(self, dpid: int, port: Port, deleted: bool) -> None:
        self.post(self._on_port_status, dpid, port, deleted)

    def packet_in(self, dpid: int, table_id: int, in_port: int, data: bytes) -> None:
        self.metrics.packet_in.labels(dpid_str(dpid), tables.BY_ID.get(table_id, tables.CLASSIFY).name).inc()
        self.post(self._on_packet_in, dpid, table_id, in_port, data)

    def reload_subnets(self) -> None:
        self.post(self._load_subnets)

    def operations_changed(self) -> None:
        """New operations are in the store: the coordinator picks them up after this batch."""
        self.post(self.switcher.wake)

    def personas_changed(self) -> None:
        """Persona records were written: the runtime re-reads them after this batch."""
        self.post(self.personas.reload)

    def persona_preview(self, body: dict, timeout: float = 10.0) -> dict:
        return self._ask(self.personas.preview, body.get("id") or "preview", body,
                         timeout=timeout)

    def persona_usage(self, id: str) -> dict | None:
        return self.personas.usage(id)

    def dry_run_switch(self, interface_id: str, personality_id: str,
                       timeout: float = 10.0) -> dict:
        return self._ask(self.switcher.dry_run, interface_id, personality_id, timeout=timeout)

    def _ask(self, fn: Callable, *args, timeout: float) -> object:
        """Run fn(*args) on the worker and wait for its result (or its exception)."""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
        self.post(run)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError("the hub did not answer in time") from None

    # ------------------------------------------------------------- read side
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # HubView (controller.api.context): what the REST API reads.
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
            self._safely(self._converge)
            self._safely(self.switcher.tick)
            self._safely(self.personas.tick)

    def _safely(self, work: Callable) -> None:
        try:
            work()
        except Exception:
            LOG.exception("hub worker: unhandled error")

    def _next_timeout(self) -> float:
        now = self.clock()
        pending = [t - now for t in self.settling_until.values()]
        for wake in (self.switcher.next_wakeup(), self.personas.next_wakeup()):
            if wake is not None:
                pending.append(wake)
        return max(0.01, min(pending)) if pending else 1.0

    # ------------------------------------------------------------- persistence
    def _load(self) -> None:
        for doc in self.store.list("link"):
            self.topo.links.add(Link.from_body(doc.body))
        with self.store.transaction():
            for doc in self.store.list("host"):
                host = Host.from_body(doc.body)
                self.topo.hosts[host.mac] = host
                interfaces.record_host(self.store, host)  # a store from before interface records
        self._load_subnets()
        self.switcher.load()
        self.personas.load()

    def _load_subnets(self) -> None:
        subnets = []
        for doc in self.store.list("subnet"):
            try:
                subnets.append(Subnet.from_body(doc.id, doc.body, doc.revision))
            except (KeyError, ValueError) as exc:
                LOG.error("ignoring invalid subnet %s: %s", doc.id, exc)
        if tuple(subnets) != self.subnets:
            self.subnets = tuple(subnets)
            self._changed()

    def journal(self, kind: str, subject: str, message: str, **data) -> None:
        self.store.append_event(kind, subject, message, data)
        LOG.info("%s %s: %s", kind, subject, message)

    def _changed(self) -> None:
        self._generation += 1

    # ---------------------------------------------------------------- switches
    def _on_switch_connected(self, channel: SwitchChannel) -> None:
        dpid = channel.dpid
        sw = self.topo.switch(dpid)
        sw.connected, sw.of_version = True, channel.of_version
        self.channels[dpid] = channel
        self.reconcilers[dpid] = Reconciler(channel, self.clock, ignore_tables=tables.LEARNED)
        self.topo.set_ports(dpid, channel.ports())
        # Links on ports that no longer exist or are down are gone.
        for port_no in self.topo.link_ports(dpid):
            if port_no not in sw.ports or not sw.ports[port_no].up:
                self._drop_links(dpid, port_no)
        reconciler = self.reconcilers[dpid]
        reconciler.readback()
        self.meter_reconcilers[dpid] = MeterReconciler(channel)
        self.meter_reconcilers[dpid].readback()
        self.settling_until[dpid] = self.clock() + self.settle
        self.journal("datapath", dpid_str(dpid), "connected",
                      of_version=channel.of_version, ports=len(sw.ports),
                      installed=len(reconciler.realized))
        # Discover links during the settle time, before the first full reconcile:
        # the switch punts LLDP, probes out of every port, and every other switch
        # probes out of its edge ports (which may face this one).
        reconciler.ensure(bootstrap_flows())
        self._probe_links(dpid)
        for other in self.channels:
            if other != dpid:
                self._probe_links(other, self.topo.edge_ports(other))
        self._changed()

    def _on_switch_disconnected(self, dpid: int, channel: SwitchChannel) -> None:
        if self.channels.get(dpid) is not channel:
            return  # an older connection of a switch that has already reconnected
        del self.channels[dpid]
        self.reconcilers.pop(dpid, None)
        self.meter_reconcilers.pop(dpid, None)
        self.settling_until.pop(dpid, None)
        self.desired.pop(dpid, None)
        self._reconciled_at.pop(dpid, None)
        self._synced_generation.pop(dpid, None)
        self.topo.switch(dpid).connected = False
        self.journal("datapath", dpid_str(dpid), "disconnected")
        self._changed()

    def _on_port_status(self, dpid: int, port: Port, deleted: bool) -> None:
        sw = self.topo.switch(dpid)
        if deleted:
            sw.ports.pop(port.port_no, None)
        else:
            sw.ports[port.port_no] = port
        if deleted or not port.up:
            self._drop_links(dpid, port.port_no)
        else:
            self._probe_links(dpid, [port.port_no])
        self._changed()

    def _probe_links(self, dpid: int, ports: list[int] | None = None) -> None:
        channel = self.channels.get(dpid)
        if channel is None:
            return
        sw = self.topo.switch(dpid)
        for port_no in ports if ports is not None else sorted(sw.ports):
            port = sw.ports.get(port_no)
            if port and port.up and port_no < 0xFFFFFF00 and not is_tunnel_port_name(port.name):
                channel.packet_out(lldp_frame(dpid, port_no, self.router_mac), [Output(port_no)])
                self.metrics.packet_out.labels(dpid_str(dpid)).inc()

    def _drop_links(self, dpid: int, port: int) -> None:
        for link in self.topo.remove_links_at(dpid, port):
            if self.store.find("link", link.id):
                self.store.delete("link", link.id)
            self.journal("link", link.id, "removed")
            self._changed()

    # --------------------------------------------------------------- packet-in
    def _on_packet_in(self, dpid: int, table_id: int, in_port: int, data: bytes) -> None:
        pkt = parse(data)
        if pkt is None:
            return
        if pkt.eth_type == ETH_LLDP:
            self._on_lldp(dpid, in_port, pkt)
        elif dpid not in self.channels or dpid in self.settling_until:
            return  # links not known yet: a packet here could come from another switch
        elif table_id == tables.CLASSIFY.id:
            self._on_unknown_source(dpid, in_port, pkt, data)
        elif table_id == tables.ARP.id and pkt.eth_type == ETH_ARP and pkt.arp_op == 1:
            self._flood_to_edges(data, exclude=(dpid, in_port))
        elif table_id == tables.ROUTE.id and pkt.eth_type == ETH_IPV4:
            self._probe_address(pkt.ip_dst, (dpid, in_port, data))
        elif table_id == tables.L2.id:
            self.switcher.on_packet_in(dpid, data)
        elif table_id in INSPECTED_TABLES and pkt.eth_type == ETH_IPV4:
            out = self.inspector.on_packet_in(dpid, table_id, in_port, data)
            if out is not None:
                self.packet_out(out.dpid, out.data, list(out.actions), out.in_port)
        elif table_id == tables.PERSONALITY_ROUTES.id and pkt.eth_type == ETH_IPV4:
            self._probe_next_hop(dpid, in_port, pkt, data)
        elif table_id == tables.PERSONA_FORWARD.id and pkt.eth_type == ETH_IPV4:
            self._probe_address(pkt.ip_dst, None)
        elif table_id in (tables.PERSONA_EDGE.id, tables.PERSONA_GATEWAY.id):
            self.personas.on_packet_in(dpid, table_id, in_port, pkt, data)

    def _probe_next_hop(self, dpid: int, in_port: int, pkt: Packet, data: bytes) -> None:
        """A packet an interface routes via a next hop not yet discovered: ask for it."""
        binding = self.bindings.get(interfaces.interface_id(dpid, in_port))
        if binding is None or pkt.ip_dst is None:
            return
        dst = IPv4Address(pkt.ip_dst)
        routes = [r for r in binding.policy.routes if dst in r.destination]
        if routes:
            best = max(routes, key=lambda r: r.destination.prefixlen)
            self._probe_address(best.next_hop, None)

    def _on_lldp(self, dpid: int, in_port: int, pkt: Packet) -> None:
        if pkt.lldp_dpid is None or pkt.lldp_port is None:
            return
        link = Link.of(pkt.lldp_dpid, pkt.lldp_port, dpid, in_port)
        if link in self.topo.links:
            return
        self.topo.add_link(link)
        with self.store.transaction():
            for doc in self.store.list("link"):
                if Link.from_body(doc.body) not in self.topo.links:
                    self.store.delete("link", doc.id)
            self.store.put("link", link.id, link.to_body())
            # Hosts "learned" on what turns out to be a link port were not hosts.
            for d, p in link.ends():
                for host in self.topo.hosts_at(d, p):
                    del self.topo.hosts[host.mac]
                    self.store.delete("host", host.mac)
        self.journal("link", link.id, "discovered")
        self._changed()

    def _on_unknown_source(self, dpid: int, in_port: int, pkt: Packet, data: bytes) -> None:
        if in_port in self.topo.link_ports(dpid) or not pkt.unicast_src \
                or self._is_tunnel_port(dpid, in_port):   # never a host behind a VPN tunnel
            return
        if pkt.eth_src == self.router_mac:
            return  # the hub's own probe, looped back through an undiscovered link
        if pkt.eth_type not in (ETH_ARP, ETH_IPV4):
            return  # learn hosts from ARP and IPv4 only
        ip = pkt.sender_ip
        before = dict(self.topo.hosts)
        old = before.get(pkt.eth_src)
        if self.topo.learn_host(pkt.eth_src, ip, dpid, in_port, self.wallclock()):
            host = self.topo.hosts[pkt.eth_src]
            with self.store.transaction():
                # The learned host, and any host an IP was taken from.
                for changed in self.topo.hosts.values():
                    if before.get(changed.mac) != changed:
                        self.store.put("host", changed.mac, changed.to_body())
                        interfaces.record_host(self.store, changed)
            verb = "learned" if old is None else "moved" if (old.dpid, old.port) != (dpid, in_port) else "updated"
            self.journal("host", host.mac, verb, ips=list(host.ips),
                          datapath=dpid_str(dpid), port=in_port)
            self._changed()
        self._reinject.append((dpid, in_port, data))
        now = self.clock()
        for expires, *held in self._awaiting.pop(ip, []) if ip else []:
            if expires >= now:
                self._reinject.append(tuple(held))

    def _flood_to_edges(self, data: bytes, exclude: tuple[int, int]) -> None:
        for dpid, channel in sorted(self.channels.items()):
            ports = [p for p in self.topo.edge_ports(dpid)
                     if (dpid, p) != exclude and not self._is_tunnel_port(dpid, p)]
            if ports:
                channel.packet_out(data, [Output(p) for p in ports])
                self.metrics.packet_out.labels(dpid_str(dpid)).inc()

    def _probe_address(self, ip: str | None, packet: tuple[int, int, bytes] | None) -> None:
        """A routed packet for an undiscovered address: hold it, ask for the address.

        Like a router's ARP queue: the packet is re-injected once the address
        answers and its flows are installed, or dropped after AWAIT_SECONDS.
        """
        subnet = subnet_of(ip, self.subnets) if ip else None
        if subnet is None:
            return
        now = self.clock()
        for key in [k for k, held in self._awaiting.items() if held[0][0] < now]:
            del self._awaiting[key]
        if packet is not None and sum(len(v) for v in self._awaiting.values()) < AWAIT_MAX:
            self._awaiting.setdefault(ip, []).append((now + AWAIT_SECONDS, *packet))
        if now - self._probed.get(ip, -PROBE_INTERVAL) < PROBE_INTERVAL:
            return
        self._probed = {k: t for k, t in self._probed.items() if now - t < PROBE_INTERVAL}
        self._probed[ip] = now
        self._flood_to_edges(arp_request(self.router_mac, str(subnet.gateway), ip), exclude=(0, 0))

    # ------------------------------------------------------------- convergence
    def _converge(self) -> None:
        now = self.clock()
        for dpid, until in list(self.settling_until.items()):
            if now >= until:
                del self.settling_until[dpid]
                self._changed()
        ready = frozenset(d for d in self.channels if d not in self.settling_until)
        wanted_tunnels = self._tunnels_wanted()
        if self.tunnels.sync(wanted_tunnels, ready, self._bridge_name):
            self._changed()        # a tunnel port's number became known (or went)
        if any(self._synced_generation.get(d) != self._generation for d in ready):
            self.desired = compile_fabric(FabricInput(
                switches=ready, links=frozenset(self.topo.links),
                hosts=tuple(sorted(self.topo.hosts.values(), key=lambda h: h.mac)),
                subnets=self.subnets, router_mac=self.router_mac))
            self._add_personalities(ready)
            self._add_personas(ready)
            for dpid in sorted(ready):
                if self._synced_generation.get(dpid) != self._generation:
                    self._reconcile(dpid)
        self.tunnels.prune(wanted_tunnels, [d for d in ready
                                            if self._synced_generation.get(d) == self._generation])
        self._flush_reinject()
        self._publish()

    def _add_personalities(self, ready: frozenset[int]) -> None:
        """Add each bound interface's personality flows, and temporary flows, to `desired`."""
        ctx = self.compile_context()
        cache: dict[tuple, tuple[FlowSpec, ...]] = {}
        extra: dict[int, list[FlowSpec]] = {}
        meters: dict[int, list[MeterSpec]] = {}
        for binding in self.bindings.values():
            if binding.interface.dpid not in ready:
                continue
            meters.setdefault(binding.interface.dpid, []).extend(binding.meters())
            key = (binding, tuple(ctx.mac_of(r.next_hop) for r in binding.policy.routes),
                   binding.tunnel and ctx.tunnel_ports.get(binding.tunnel.name))
            flows = self._binding_flows.get(key)
            if flows is None:
                flows = binding.flows(ctx)
            cache[key] = flows
            extra.setdefault(binding.interface.dpid, []).extend(flows)
        self._binding_flows = cache
        for dpid, flows in self._extra.values():
            if dpid in ready:
                extra.setdefault(dpid, []).extend(flows)
        for dpid, flows in extra.items():
            self.desired[dpid] = self.desired.get(dpid, ()) + tuple(flows)
        self.desired_meters = {d: tuple(m) for d, m in meters.items()}

    def _add_personas(self, ready: frozenset[int]) -> None:
        for dpid, flows in self.personas.flows(ready).items():
            self.desired[dpid] = self.desired.get(dpid, ()) + flows
        for dpid, meters in self.personas.meters().items():
            self.desired_meters[dpid] = self.desired_meters.get(dpid, ()) + meters

    # ---------------------------------------------- for features (worker only)
    def converge(self) -> None:
        """Compile and reconcile now (features walking through steps)."""
        self._converge()

    def ready(self, dpid: int) -> bool:
        return dpid in self.channels and dpid not in self.settling_until

    def bind(self, interface_id: str, binding: Binding | None) -> None:
        if self.bindings.get(interface_id) == binding:
            return
        if binding is None:
            self.bindings.pop(interface_id, None)
        else:
            self.bindings[interface_id] = binding
        self._changed()

    def set_extra(self, key: tuple, dpid: int, flows: tuple[FlowSpec, ...] | None) -> None:
        if flows is None:
            if self._extra.pop(key, None) is not None:
                self._changed()
        elif self._extra.get(key) != (dpid, flows):
            self._extra[key] = (dpid, flows)
            self._changed()

    def realize(self, dpid: int) -> bool:
        """Converge now; True once `dpid` holds exactly the current desired flows."""
        if not self.ready(dpid):
            return False
        self._converge()
        return self._synced_generation.get(dpid) == self._generation

    def compile_context(self) -> Context:
        return Context(router_mac=self.router_mac,
                       macs={ip: h.mac for h in self.topo.hosts.values() for ip in h.ips},
                       tunnel_ports=self.tunnels.ofports())

    # VPN tunnel ports (controller.reconcile.tunnels): made over OVSDB before any
    # flow names them, removed once no binding (bound, or held by an operation) needs them.
    def _tunnels_wanted(self) -> dict[int, list[TunnelPort]]:
        wanted: dict[int, list[TunnelPort]] = {}
        for binding in [*self.bindings.values(), *self.switcher.held_bindings()]:
            if binding.tunnel is not None and binding.tunnel not in wanted.get(binding.tunnel.dpid, ()):
                wanted.setdefault(binding.tunnel.dpid, []).append(binding.tunnel)
        return wanted

    def prepare_tunnel(self, binding: Binding) -> str | None:
        """Create the tunnel port `binding` needs now; None, or why it cannot be."""
        port = binding.tunnel
        if port is None:
            return None
        for other in [*self.bindings.values(), *self.switcher.held_bindings()]:
            if (other.tunnel is not None and other.interface.id != binding.interface.id
                    and other.tunnel.endpoint == port.endpoint):
                return (f"interface {other.interface.id} already has a {port.type} tunnel to "
                        f"{port.remote_ip} with key {port.key or 0}; Open vSwitch could not tell "
                        "their packets apart (use another key)")
        try:
            self.tunnels.ensure(port, self._bridge_name(port.dpid))
        except OvsdbError as exc:
            return f"the tunnel port could not be created over OVSDB: {exc}"
        return None

    def _bridge_name(self, dpid: int) -> str | None:
        """The switch's bridge name: OpenFlow reports it as the name of the LOCAL port."""
        local = self.topo.switches[dpid].ports.get(LOCAL) if dpid in self.topo.switches else None
        return local.name if local else None

    def _is_tunnel_port(self, dpid: int, port_no: int) -> bool:
        sw = self.topo.switches.get(dpid)
        port = sw.ports.get(port_no) if sw else None
        return port is not None and is_tunnel_port_name(port.name)

    def next_mac(self, src_ip: str, dst_ip: str) -> str:
        """The MAC a host at src_ip sends to for dst_ip: the host's own on its subnet, else the router's."""
        subnet = subnet_of(src_ip, self.subnets)
        if subnet is not None and IPv4Address(dst_ip) in subnet.cidr:
            mac = self.compile_context().mac_of(dst_ip)
            if mac is not None:
                return mac
        return self.router_mac

    def packet_out(self, dpid: int, data: bytes, actions: list[Action], in_port: int) -> None:
        channel = self.channels.get(dpid)
        if channel is not None:
            channel.packet_out(data, actions, in_port=in_port)
            self.metrics.packet_out.labels(dpid_str(dpid)).inc()

    def _reconcile(self, dpid: int) -> None:
        name = dpid_str(dpid)
        desired = self.desired.get(dpid, ())
        try:
            meters = self.meter_reconcilers[dpid]
            desired_meters = self.desired_meters.get(dpid, ())
            with self.metrics.reconcile_seconds.time():
                meters.sync_before_flows(desired_meters)   # flows may name only existing meters
                result = self.reconcilers[dpid].sync(desired)
                meters.sync_after_flows(desired_meters)    # no flow uses what is deleted now
        except Exception as exc:
            self.metrics.bundles.labels(name, "failed").inc()
            self.journal("reconcile", name, f"failed: {exc}")
            return  # retried at the next change (readback first)
        self._synced_generation[dpid] = self._generation
        self._reconciled_at[dpid] = self.wallclock()
        self.metrics.flows_desired.labels(name).set(len(desired))
        self.metrics.flows_installed.labels(name).set(len(self.reconcilers[dpid].realized))
        if result.diff:
            self.metrics.bundles.labels(name, "applied").inc()
            self.metrics.flow_changes.labels(name, "add").inc(len(result.diff.add))
            self.metrics.flow_changes.labels(name, "delete").inc(len(result.diff.delete))
            self.journal("reconcile", name, "applied", **result.diff.summary(),
                          ms=round(result.seconds * 1000, 3))

    def _flush_reinject(self) -> None:
        pending, self._reinject = self._reinject, []
        for dpid, in_port, data in pending:
            channel = self.channels.get(dpid)
            if channel is not None and self._synced_generation.get(dpid) == self._generation:
                channel.packet_out(data, [Output(TABLE)], in_port=in_port)
                self.metrics.packet_out.labels(dpid_str(dpid)).inc()

    # ---------------------------------------------------------------- snapshot
    def _publish(self) -> None:
        link_ports = {}
        for link in self.topo.links:
            for d, p in link.ends():
                link_ports.setdefault(d, set()).add(p)
        datapaths = []
        for dpid, sw in sorted(self.topo.switches.items()):
            rec = self.reconcilers.get(dpid)
            desired = len(self.desired.get(dpid, ())) if sw.connected else 0
            installed = len(rec.realized) if rec else 0
            in_sync = bool(rec) and dpid not in self.settling_until and \
                self._synced_generation.get(dpid) == self._generation
            ports = [{"port_no": p.port_no, "name": p.name, "up": p.up,
                      "role": "link" if p.port_no in link_ports.get(dpid, ()) else "host"}
                     for p in sorted(sw.ports.values(), key=lambda p: p.port_no)
                     if p.port_no < 0xFFFFFF00]  # not LOCAL: it faces the switch itself
            datapaths.append({"id": dpid_str(dpid), "dpid": dpid, "connected": sw.connected,
                              "of_version": sw.of_version, "ports": ports,
                              "flows": {"desired": desired, "installed": installed,
                                        "in_sync": in_sync},
                              "last_reconciled_at": self._reconciled_at.get(dpid)})
        topology = {
            "switches": [{"id": dpid_str(d), "dpid": d, "connected": s.connected}
                         for d, s in sorted(self.topo.switches.items())],
            "links": [{"src": {"datapath": dpid_str(l.a_dpid), "port_no": l.a_port},
                       "dst": {"datapath": dpid_str(l.b_dpid), "port_no": l.b_port}}
                      for l in sorted(self.topo.links)],
            "hosts": [{"mac": h.mac, "ips": list(h.ips), "datapath": dpid_str(h.dpid),
                       "port_no": h.port, "last_seen": h.last_seen}
                      for h in sorted(self.topo.hosts.values(), key=lambda h: h.mac)],
        }
        self.metrics.datapaths_connected.set(len(self.channels))
        self.metrics.hosts.set(len(self.topo.hosts))
        self._snapshot = Snapshot(self._started_at, tuple(datapaths), topology)
