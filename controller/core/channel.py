"""What the hub needs from a connected switch.  The os-ken app implements it."""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence

from controller.reconcile.meters import MeterChannel
from controller.pipeline.actions import CONTROLLER, Action
from controller.pipeline.flowspec import FlowSpec
from controller.pipeline.meters import MeterSpec
from controller.reconcile.flows import FlowChannel
from controller.core.topology import Port


class ChannelClosed(RuntimeError):
    """The switch disconnected while a request was outstanding."""


class FlowCounters(NamedTuple):
    """One flow read back from a switch, with its counters."""
    flow: FlowSpec
    packets: int
    bytes: int


class Aggregate(NamedTuple):
    """Counts summed over the flows an aggregate stats request selected."""
    flows: int
    packets: int
    bytes: int


class SwitchChannel(FlowChannel, MeterChannel, Protocol):
    dpid: int
    of_version: str

    def ports(self) -> list[Port]: ...

    def flow_stats(self, table_id: int, cookie: int, cookie_mask: int) -> list[FlowSpec]:
        """One table's flows whose cookie matches `cookie` under `cookie_mask`."""

    def flush_zone(self, zone: int) -> None:
        """Forget every conntrack entry of `zone`, then a barrier; ApplyError if refused."""

    def flow_counters(self, table_id: int | None, cookie: int,
                      cookie_mask: int) -> list[FlowCounters]:
        """As flow_stats (`table_id` None: every table), each flow with its packet and byte counts."""

    def aggregate(self, table_id: int, cookie: int, cookie_mask: int) -> Aggregate:
        """Flow, packet and byte counts summed over those flows."""

    def packet_out(self, data: bytes, actions: Sequence[Action], in_port: int = CONTROLLER) -> None: ...

    def meters(self) -> list[MeterSpec]:
        """Every meter on the switch (see `MeterChannel`)."""

    def apply_meters(self, add: Sequence[MeterSpec] = (), modify: Sequence[MeterSpec] = (),
                     delete: Sequence[int] = ()) -> None:
        """MeterMods ADD, MODIFY, DELETE, then a barrier; ApplyError if the switch refuses one."""
