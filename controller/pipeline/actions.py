"""OpenFlow actions as plain, hashable data.

Compilers build flows out of these; `controller.pipeline.ofcodec` is the one
place that turns them into os-ken objects (and back, when flows are read from a
switch).  Only what the hub uses is modelled; anything else read back from a
switch decodes to `Opaque`, which never equals a desired action, so the
reconciler replaces such a flow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# Reserved OpenFlow port numbers (OpenFlow 1.3+).
IN_PORT = 0xFFFFFFF8
TABLE = 0xFFFFFFF9
CONTROLLER = 0xFFFFFFFD
LOCAL = 0xFFFFFFFE
NO_BUFFER = 0xFFFF


@dataclass(frozen=True)
class Output:
    """Send the packet out of `port`; `max_len` only matters for CONTROLLER."""
    port: int
    max_len: int = 0

    @classmethod
    def controller(cls) -> "Output":
        return cls(CONTROLLER, NO_BUFFER)


@dataclass(frozen=True)
class SetField:
    field: str
    value: Union[int, str]


@dataclass(frozen=True)
class Move:
    """Copy `n_bits` of one field into another (Nicira reg_move)."""
    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class DecTtl:
    pass


@dataclass(frozen=True)
class Opaque:
    """An action read back from a switch that the hub does not model."""
    text: str


Action = Union[Output, SetField, Move, DecTtl, Opaque]
