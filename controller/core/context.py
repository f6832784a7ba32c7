"""What a feature sees of the hub: `FeatureContext`.

Everything here runs on the hub's worker thread (the one writer), except
where it says otherwise.  A feature never holds the hub: it holds this.
"""
from __future__ import annotations

import enum
import random
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, TypeVar

from prometheus_client import CollectorRegistry

from controller.core.metrics import Metrics
from controller.pipeline.actions import CONTROLLER, Action
from controller.store import Store

if TYPE_CHECKING:
    from controller.core.channel import SwitchChannel
    from controller.core.topology import Subnet
    from controller.core.view import FabricView
    from controller.reconcile.tunnels import TunnelPort

T = TypeVar("T")


class Realization(enum.Enum):
    """Whether a switch holds the desired state of a given generation."""
    PENDING = "pending"      # not reconciled that far yet
    DONE = "done"            # the switch holds it (or a later one)
    FAILED = "failed"        # the switch refused it, or is not connected/ready


class HeldPacket(Protocol):
    dpid: int
    in_port: int
    data: bytes


class Core(Protocol):
    """The services of the core a context forwards to (implemented by the hub)."""

    def changed(self) -> int: ...
    def realization(self, dpid: int, generation: int) -> Realization: ...
    def view(self) -> "FabricView": ...
    def ready(self, dpid: int) -> bool: ...
    def packet_out(self, dpid: int, data: bytes, actions: Sequence[Action], in_port: int) -> None: ...
    def request(self, dpid: int, call: Callable[["SwitchChannel"], Any],
                then: Callable[[Future], None]) -> bool: ...
    def post(self, fn: Callable, *args: Any) -> None: ...
    def resolve(self, ip: str, held: HeldPacket | None) -> None: ...
    def flood(self, data: bytes, exclude: tuple[int, int]) -> None: ...
    def ensure_tunnel(self, port: "TunnelPort") -> str | None: ...
    def journal(self, kind: str, subject: str, message: str, **data: Any) -> None: ...
    def set_subnets(self, subnets: Sequence["Subnet"]) -> None: ...


class FeatureContext:
    """Clocks, seeded randomness, store, journal, metrics, topology, switch requests."""

    def __init__(self, name: str, core: Core, *, store: Store, metrics: Metrics,
                 clock: Callable[[], float], wallclock: Callable[[], float],
                 seed: int | None = None) -> None:
        self.name = name
        self.store = store
        self.metrics = metrics
        self.clock = clock            # monotonic seconds: deadlines, polls
        self.wallclock = wallclock    # epoch seconds: what is stored and shown
        self.random = random.Random(f"{seed}:{name}" if seed is not None else None)
        self._core = core

    @property
    def registry(self) -> CollectorRegistry:
        """Where a feature registers metrics of its own."""
        return self.metrics.registry

    # ------------------------------------------------------------ intent
    def changed(self) -> int:
        """This feature's contribution changed: recompile after this batch.

        Returns the generation that will hold the change; pass it to
        `realization` to learn when the switches hold it.
        """
        return self._core.changed()

    def realization(self, dpids: Iterable[int], generation: int) -> Realization:
        """DONE once every one of `dpids` holds `generation` (or a later one),
        FAILED as soon as one refused it or is not ready, else PENDING."""
        states = {self._core.realization(d, generation) for d in dpids}
        if Realization.FAILED in states:
            return Realization.FAILED
        return Realization.PENDING if Realization.PENDING in states else Realization.DONE

    def view(self) -> "FabricView":
        """The fabric as the core knows it now (read-only)."""
        return self._core.view()

    def ready(self, dpid: int) -> bool:
        """Connected and settled: flows for it are compiled and reconciled."""
        return self._core.ready(dpid)

    def journal(self, kind: str, subject: str, message: str, **data: Any) -> None:
        self._core.journal(kind, subject, message, **data)

    def set_subnets(self, subnets: Sequence["Subnet"]) -> None:
        """The subnets the hub routes (their gateways are where discovery ARPs from)."""
        self._core.set_subnets(subnets)

    # ------------------------------------------------------------ switches
    def packet_out(self, dpid: int, data: bytes, actions: Sequence[Action],
                   in_port: int = CONTROLLER) -> None:
        self._core.packet_out(dpid, data, actions, in_port)

    def request(self, dpid: int, call: Callable[["SwitchChannel"], T],
                then: Callable[["Future[T]"], None]) -> bool:
        """Ask a switch something (stats) without blocking the worker.

        `call(channel)` runs off the worker; `then(future)` runs on the worker
        once it answered (or failed: `future.exception()`).  False, and
        nothing runs, when the switch is not connected.
        """
        return self._core.request(dpid, call, then)

    def post(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) on the worker later (any thread)."""
        self._core.post(fn, *args)

    def resolve(self, ip: str, held: HeldPacket | None = None) -> None:
        """Ask the fabric for an address (ARP); a held packet is re-sent once it answers."""
        self._core.resolve(ip, held)

    def flood(self, data: bytes, exclude: tuple[int, int]) -> None:
        """Send a frame out of every host-facing port but `exclude` (dpid, port)."""
        self._core.flood(data, exclude)

    def ensure_tunnel(self, port: "TunnelPort") -> str | None:
        """Create a tunnel port over OVSDB now; None, or why it cannot be."""
        return self._core.ensure_tunnel(port)
