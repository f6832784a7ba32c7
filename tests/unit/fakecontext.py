"""A stand-in for the hub core behind a `FeatureContext`, to drive one feature alone.

Everything the feature does to the core is recorded; realization is under the
test's control (`realize`, `refuse`), and switch requests wait until the test
answers them (`answer`), so a test sees the feature between asking and hearing.
`tests/unit/test_fake_context.py` runs the same calls on this and on the real
hub and compares what they answer.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from controller.core.context import FeatureContext, HeldPacket, Realization
from controller.core.metrics import Metrics
from controller.core.topology import Host, Link, Subnet
from controller.core.view import FabricView
from controller.store import Store


@dataclass
class Request:
    dpid: int
    call: Callable
    then: Callable[[Future], None]


@dataclass
class FakeCore:
    switches: set[int] = field(default_factory=set)
    hosts: tuple[Host, ...] = ()
    links: frozenset[Link] = frozenset()
    subnets: tuple[Subnet, ...] = ()
    router_mac: str = "02:b5:00:00:00:01"
    generation: int = 0
    synced: dict[int, int] = field(default_factory=dict)    # dpid -> generation realized
    failed: dict[int, int] = field(default_factory=dict)    # dpid -> generation refused
    sent: list[tuple[int, bytes, list, int]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    flooded: list[bytes] = field(default_factory=list)
    events: list[tuple[str, str, str, dict]] = field(default_factory=list)
    posted: list[Callable] = field(default_factory=list)

    # ------------------------------------------------------------ Core
    def changed(self) -> int:
        self.generation += 1
        return self.generation

    def realization(self, dpid: int, generation: int) -> Realization:
        if dpid not in self.switches:
            return Realization.FAILED
        if self.synced.get(dpid, -1) >= generation:
            return Realization.DONE
        if self.failed.get(dpid, -1) >= generation:
            return Realization.FAILED
        return Realization.PENDING

    def view(self) -> FabricView:
        return FabricView(switches=frozenset(self.switches), links=self.links, hosts=self.hosts,
                          subnets=self.subnets, router_mac=self.router_mac)

    def ready(self, dpid: int) -> bool:
        return dpid in self.switches

    def packet_out(self, dpid: int, data: bytes, actions: Sequence, in_port: int) -> None:
        self.sent.append((dpid, data, list(actions), in_port))

    def request(self, dpid: int, call: Callable, then: Callable[[Future], None]) -> bool:
        if dpid not in self.switches:
            return False
        self.requests.append(Request(dpid, call, then))
        return True

    def post(self, fn: Callable, *args: Any) -> None:
        self.posted.append(lambda: fn(*args))

    def resolve(self, ip: str, held: HeldPacket | None) -> None:
        self.resolved.append(ip)

    def flood(self, data: bytes, exclude: tuple[int, int]) -> None:
        self.flooded.append(data)

    def ensure_tunnel(self, port: Any) -> str | None:
        return None

    def journal(self, kind: str, subject: str, message: str, **data: Any) -> None:
        self.events.append((kind, subject, message, data))

    def set_subnets(self, subnets: Sequence[Subnet]) -> None:
        self.subnets = tuple(subnets)

    # ------------------------------------------------------------ the test's side
    def realize(self, *dpids: int) -> None:
        """These switches now hold the current generation."""
        for dpid in dpids or tuple(self.switches):
            self.synced[dpid] = self.generation

    def refuse(self, dpid: int) -> None:
        self.failed[dpid] = self.generation

    def answer(self, channel: Any) -> int:
        """Run every outstanding request against `channel` and deliver the answers."""
        pending, self.requests = self.requests, []
        for request in pending:
            future: Future = Future()
            try:
                future.set_result(request.call(channel))
            except Exception as exc:
                future.set_exception(exc)
            request.then(future)
        return len(pending)


def fake_context(core: FakeCore, store: Store, *, name: str = "test",
                 clock: Callable[[], float] = lambda: 0.0,
                 wallclock: Callable[[], float] = lambda: 0.0) -> FeatureContext:
    return FeatureContext(name, core, store=store, metrics=Metrics(), clock=clock,
                          wallclock=wallclock, seed=1)
