"""A hub core over fake switches, an in-memory store, fake clocks and synchronous requests.

Shared by the unit tests of the core and of the features that run on it.
"""
from __future__ import annotations

import queue
import socket
import struct
from concurrent.futures import Executor, Future

from controller.core.channel import Aggregate, FlowCounters
from controller.core.hub import ROUTER_MAC, Hub
from controller.core.topology import Link, Port
from controller.features.fabric.compile import FabricInput, compile_fabric
from controller.core.discovery import bootstrap_flows
from controller.packets import BROADCAST, ETH_ARP, ETH_IPV4, mac_bytes
from controller.pipeline import tables
from controller.pipeline.actions import CONTROLLER, LOCAL
from controller.pipeline.flowspec import FlowKey, FlowSpec
from controller.packets import lldp_frame
from controller.reconcile.flows import ApplyError, FlowDiff
from controller.registry import feature_factories
from controller.store import open_store


class ImmediateExecutor(Executor):
    """Runs a switch request at once, in the caller's thread (its answer is still
    posted back to the worker, as with the real pool)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


A, B = 1, 2
LINK = Link.of(A, 1, B, 2)          # A port 1 <-> B port 2
H1_MAC, H1_IP = "00:00:00:00:01:0a", "10.0.1.10"   # on A port 2
H2_MAC, H2_IP = "00:00:00:00:02:0b", "10.0.2.20"   # on B port 3
SUBNETS = {"blue": {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"},
           "red": {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"}}


# ----------------------------------------------------------------- fakes
class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSwitch:
    """A SwitchChannel: a flow table keyed like a switch, atomic applies, recorded packet-outs."""

    def __init__(self, dpid: int, ports: list[Port], flows: dict[FlowKey, FlowSpec] | None = None,
                 of_version: str = "1.4") -> None:
        self.dpid = dpid
        self.of_version = of_version
        self._ports = ports
        self.flows: dict[FlowKey, FlowSpec] = dict(flows or {})
        self.log: list[tuple] = []       # ("apply", diff) and ("out", data, actions, in_port)
        self.dumps = 0
        self.fail_next_apply = False
        self.meter_table: dict = {}
        self.counts: dict[FlowKey, tuple[int, int]] = {}     # flow -> (packets, bytes) counted

    @property
    def applies(self) -> list[FlowDiff]:
        return [e[1] for e in self.log if e[0] == "apply"]

    @property
    def sent(self) -> list[tuple]:
        return [e[1:] for e in self.log if e[0] == "out"]

    def ports(self) -> list[Port]:
        return list(self._ports)

    def dump_flows(self, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        self.dumps += 1
        return [f for f in self.flows.values() if f.cookie & cookie_mask == cookie & cookie_mask]

    def apply(self, diff: FlowDiff) -> None:
        self.log.append(("apply", diff))
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise ApplyError("bundle refused")
        for f in diff.delete:
            self.flows.pop(f.key, None)
        for f in diff.add:
            self.flows[f.key] = f

    def packet_out(self, data: bytes, actions, in_port: int = CONTROLLER) -> None:
        self.log.append(("out", data, list(actions), in_port))

    def aggregate(self, table_id: int, cookie: int, cookie_mask: int) -> Aggregate:
        return Aggregate(0, 0, 0)

    def flow_stats(self, table_id: int, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        return [c.flow for c in self.flow_counters(table_id, cookie, cookie_mask)]

    def flow_counters(self, table_id, cookie: int, cookie_mask: int) -> list:
        return [FlowCounters(f, *self.counts.get(f.key, (0, 0))) for f in self.flows.values()
                if f.cookie & cookie_mask == cookie & cookie_mask
                and (table_id is None or f.table == table_id)]

    def flush_zone(self, zone: int) -> None:
        self.log.append(("flush_zone", zone))

    @property
    def flushed(self) -> list[int]:
        return [e[1] for e in self.log if e[0] == "flush_zone"]

    def meters(self):
        return list(self.meter_table.values())

    def apply_meters(self, add=(), modify=(), delete=()) -> None:
        self.log.append(("meters", tuple(add), tuple(modify), tuple(delete)))
        for m in (*add, *modify):
            self.meter_table[m.meter_id] = m
        for meter_id in delete:
            self.meter_table.pop(meter_id, None)


def ports_a() -> list[Port]:
    return [Port(1, "a-eth1", True), Port(2, "a-eth2", True), Port(3, "a-eth3", True),
            Port(4, "a-eth4", False), Port(LOCAL, "a", True)]


def ports_b() -> list[Port]:
    return [Port(1, "b-eth1", True), Port(2, "b-eth2", True), Port(3, "b-eth3", True)]


def run(hub: Hub) -> None:
    """What the worker does: run posted work in order, then step (converge, tick);
    again while that posted more (switch answers)."""
    while True:
        drained = False
        while True:
            try:
                work = hub._queue.get_nowait()
            except queue.Empty:
                break
            work()
            drained = True
        hub.step()
        if not drained and hub._queue.empty():
            break


# ----------------------------------------------------------------- frames
def arp_frame(op: int, src_mac: str, src_ip: str, target_ip: str, dst: str = BROADCAST) -> bytes:
    eth = mac_bytes(dst) + mac_bytes(src_mac) + struct.pack("!H", ETH_ARP)
    tha = b"\x00" * 6 if op == 1 else mac_bytes(dst)
    return eth + struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op) + mac_bytes(src_mac) + \
        socket.inet_aton(src_ip) + tha + socket.inet_aton(target_ip)


def ipv4_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    eth = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_IPV4)
    return eth + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, 1, 0,
                             socket.inet_aton(src_ip), socket.inet_aton(dst_ip))


# ----------------------------------------------------------------- fixtures
class Fabric:
    def settings(self) -> dict:
        """Each feature's settings (none: the defaults)."""
        return {}

    def __init__(self, store=None) -> None:
        self.store = store or open_store(":memory:", clock=lambda: 5.0)
        self.clock = FakeClock(1000.0)
        self.wall = FakeClock(1_700_000_000.0)
        self.hub = self.make_hub()
        self.a = FakeSwitch(A, ports_a())
        self.b = FakeSwitch(B, ports_b())

    def connect(self, *switches) -> None:
        for sw in switches or (self.a, self.b):
            self.hub.switch_connected(sw)
        run(self.hub)

    def settle(self) -> None:
        self.clock.advance(1.0)
        run(self.hub)

    def lldp(self) -> None:
        """A's probe out of its port 1 arrives at B port 2."""
        self.hub.packet_in(B, tables.CLASSIFY.id, 2, lldp_frame(A, 1, ROUTER_MAC))
        run(self.hub)

    def learn(self, dpid=A, port=2, mac=H1_MAC, ip=H1_IP) -> bytes:
        data = arp_frame(1, mac, ip, "10.0.1.1")
        self.hub.packet_in(dpid, tables.CLASSIFY.id, port, data)
        run(self.hub)
        return data

    def make_hub(self, **kw) -> Hub:
        """A hub on this fabric's store and clocks (a restarted controller)."""
        return Hub(self.store, features=feature_factories(self.settings()), clock=self.clock,
                   wallclock=self.wall, settle=1.0, requests=ImmediateExecutor(), **kw)

    def query(self, feature: str, name: str, **args):
        """What `Hub.query` answers, without a worker thread: asked, then run."""
        answer = self.hub.feature(feature).query(name, **args)
        run(self.hub)
        return answer.result(0) if isinstance(answer, Future) else answer

    def feature(self, name: str):
        return self.hub.feature(name)

    @property
    def bindings(self):
        """The personality feature's current binding of each interface."""
        return self.hub.feature("personality").bindings.current

    @property
    def changes(self):
        return self.hub.feature("personality").changes

    def load_subnets(self) -> None:
        self.hub.feature("fabric").load()

    def events(self, kind=None):
        return [(e.kind, e.subject, e.message) for e in self.store.events(limit=1000, kind=kind)]



def expected_flows(fab: Fabric, switches=(A, B)) -> dict[int, set[FlowSpec]]:
    hub = fab.hub
    compiled = compile_fabric(FabricInput(
        frozenset(switches), frozenset(hub.topo.links),
        tuple(sorted(hub.topo.hosts.values(), key=lambda h: h.mac)), hub.discovery.subnets,
        ROUTER_MAC))
    return {d: set(f) | set(bootstrap_flows()) for d, f in compiled.items()}


