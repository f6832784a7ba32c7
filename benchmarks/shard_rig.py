"""An in-process hub for the shard benchmarks (`rap`, `recon`): the real hub and shard
feature over one fake switch, a SQLite store in a file, injected clocks and seed.

`Rig` stores a subnet, one interface record per resource (as discovery writes
them, `record_host`), the pools and the resources (as the REST API stores
them, without its claims), then builds a `controller.core.hub.Hub` with every
feature of the registry on those documents and connects one `RigSwitch`.
Datagrams from a resource are punted into the hub as the switch would
(`packet_in` on table shard_edge, from the resource's port and MAC); the hub's
packet-outs land in the switch's outbox, by output port.  The clocks move only
when the benchmark says so (`advance`).  Nothing here needs root or a switch.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from controller.core.hub import ROUTER_MAC, Hub
from controller.core.interfaces import interface_id, record_host
from controller.core.topology import Host, Port
from controller.features.shard.records import RESOURCE
from controller.pipeline import tables
from controller.pipeline.actions import CONTROLLER, Output
from controller.probes import parse_udp, udp_frame
from controller.registry import feature_factories
from controller.store import open_store
from tests.unit.hubtest import FakeClock, FakeSwitch, ImmediateExecutor, run

DPID = 0xA01
SUBNET = IPv4Network("10.64.0.0/16")
GATEWAY = "10.64.0.1"
RAP_PORT = 6699
CLIENT_PORT = 40000
WALL_START = 1_700_000_000.0


@dataclass(frozen=True)
class Member:
    """One enrolled resource: where it is plugged in and its RAP key."""
    id: str
    pool_id: str
    port: int
    mac: str
    ip: str           # its address on the subnet before any lease
    key: str


class RigSwitch(FakeSwitch):
    """The fake switch of tests/unit/hubtest.py, keeping packet-outs per output port
    (the flow table, bundles and readback are the fake's)."""

    def __init__(self, dpid: int, ports: list[Port]) -> None:
        super().__init__(dpid, ports)
        self.outbox: list[tuple[int, bytes]] = []

    def packet_out(self, data: bytes, actions, in_port: int = CONTROLLER) -> None:
        for action in actions:
            if isinstance(action, Output):
                self.outbox.append((action.port, data))

    def take(self) -> list[tuple[int, bytes]]:
        out, self.outbox = self.outbox, []
        return out


def pool_body(name: str, pool: str, external: str, **fields) -> dict:
    return {"name": name, "pool": pool, "external_range": external, **fields}


class Rig:
    """The hub, its store and clocks, and the members enrolled in its pools."""

    def __init__(self, db: Path, pools: dict[str, dict], members_per_pool: dict[str, int],
                 seed: int) -> None:
        self.clock = FakeClock(1000.0)                  # monotonic
        self.wall = FakeClock(WALL_START)
        self.store = open_store(str(db), clock=self.wall)
        self.members: list[Member] = []
        with self.store.transaction():                  # one commit for the whole setup
            self.store.put("subnet", "bench", {"cidr": str(SUBNET), "gateway": GATEWAY})
            for pool_id, body in pools.items():
                self.store.put("shard-pool", pool_id, body)
            self._enroll(pools, members_per_pool)
        self.by_port = {m.port: m for m in self.members}
        self.hub = Hub(self.store, features=feature_factories({}), clock=self.clock,
                       wallclock=self.wall, settle=1.0, requests=ImmediateExecutor(), seed=seed)
        ports = [Port(m.port, f"sb-eth{m.port}", True) for m in self.members]
        self.switch = RigSwitch(DPID, ports)
        self.hub.switch_connected(self.switch)
        run(self.hub)
        self.advance(1.5)                               # the switch settles
        self.run()
        self.shard = self.hub.feature("shard")

    def _enroll(self, pools: dict[str, dict], members_per_pool: dict[str, int]) -> None:
        """One interface record (port n, the subnet's n+1-th address) and one resource
        per member, numbered across the pools."""
        hosts = SUBNET.hosts()
        next(hosts)                                     # .0.1 is the gateway
        port = 0
        for pool_id, n in members_per_pool.items():
            external = IPv4Network(pools[pool_id]["external_range"]).hosts()
            for i in range(n):
                port += 1
                ip = str(next(hosts))
                mac = "02:00:" + ":".join(f"{b:02x}" for b in IPv4Address(ip).packed)
                member = Member(f"{pool_id}-{i + 1}", pool_id, port, mac, ip,
                                f"{port:04x}" + "ab" * 22)
                record_host(self.store, Host(mac, (ip,), DPID, port))
                self.store.put(RESOURCE, member.id, {
                    "pool_id": pool_id, "interface_id": interface_id(DPID, port),
                    "external_ip": str(next(external)), "key": member.key, "index": port,
                    "created_at": self.wall()})
                self.members.append(member)

    # ------------------------------------------------------------ driving
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)

    def run(self) -> None:
        """What the worker does with what is queued: the work, then converge and ticks."""
        run(self.hub)

    def drain(self) -> None:
        """Only the queued work (packet-ins), without converging or ticking."""
        q = self.hub._queue
        while True:
            try:
                work = q.get_nowait()
            except queue.Empty:
                return
            work()

    def frame(self, member: Member, payload: bytes, src_ip: str, dst_ip: str = GATEWAY) -> bytes:
        """The Ethernet frame of a RAP datagram from `member` to the hub."""
        return udp_frame(member.mac, ROUTER_MAC, src_ip, dst_ip, CLIENT_PORT, RAP_PORT, payload)

    def punt(self, member: Member, frame: bytes) -> None:
        """`frame` punted by the member's switch (queued on the hub, as os-ken's handler does)."""
        self.hub.packet_in(DPID, tables.SHARD_EDGE.id, member.port, frame)

    def replies(self) -> list[tuple[Member, bytes]]:
        """The RAP payloads the hub sent since the last call, with who they went to."""
        out = []
        for port, frame in self.switch.take():
            dgram = parse_udp(frame)
            if dgram is not None and dgram.sport == RAP_PORT and port in self.by_port:
                out.append((self.by_port[port], dgram.payload))
        return out

    def close(self) -> None:
        self.hub.stop(timeout=0)
        self.store.close()
