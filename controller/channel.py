"""What the hub needs from a connected switch.  The os-ken app implements it."""
from __future__ import annotations

from typing import Protocol, Sequence

from controller.pipeline.actions import CONTROLLER, Action
from controller.reconcile import FlowChannel
from controller.topology import Port


class ChannelClosed(RuntimeError):
    """The switch disconnected while a request was outstanding."""


class SwitchChannel(FlowChannel, Protocol):
    dpid: int
    of_version: str

    def ports(self) -> list[Port]: ...

    def packet_out(self, data: bytes, actions: Sequence[Action], in_port: int = CONTROLLER) -> None: ...
