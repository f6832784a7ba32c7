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
class Conntrack:
    """Nicira `ct(...)`: send the packet through the connection tracker.

    `zone` keeps one interface's connections apart from another's.  With
    `commit` the connection is remembered (so its replies match `+est`).  With
    a `table`, the tracked packet is recirculated to that table, where
    `ct_state` is set (match it with `ct_state(...)`); without one, the
    pipeline carries on with the following actions and instructions.

    Encoded as os-ken's NXActionCT (immediate zone, no ALG, no nested
    actions) by `controller.pipeline.ofcodec`.
    """
    commit: bool = False
    zone: int = 0
    table: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.zone <= 0xFFFF:
            raise ValueError(f"conntrack zone {self.zone} is outside 0..65535")


# Bits of the `ct_state` match field, set by a Conntrack action with a table.
CT_NEW = 0x01  # first packet of a connection not yet committed
CT_EST = 0x02  # part of a committed connection
CT_REL = 0x04  # related to a committed connection (e.g. an ICMP error about it)
CT_RPL = 0x08  # in the reply direction
CT_INV = 0x10  # the tracker could not make sense of it
CT_TRK = 0x20  # went through the tracker
CT_FLAGS = {"new": CT_NEW, "est": CT_EST, "rel": CT_REL, "rpl": CT_RPL,
            "inv": CT_INV, "trk": CT_TRK}


def ct_state(flags: str) -> tuple[int, int]:
    """`ct_state("+trk+new-rpl")` -> (value, mask) for a `ct_state` match."""
    value = mask = 0
    rest = flags.replace(" ", "")
    if not rest:
        raise ValueError("empty ct_state")
    while rest:
        sign, rest = rest[0], rest[1:]
        if sign not in "+-":
            raise ValueError(f"bad ct_state {flags!r}: expected + or - before a flag")
        name = rest[:3]
        if name not in CT_FLAGS:
            raise ValueError(f"bad ct_state {flags!r}: unknown flag {name!r}")
        bit, rest = CT_FLAGS[name], rest[3:]
        if mask & bit:
            raise ValueError(f"bad ct_state {flags!r}: {name} given twice")
        mask |= bit
        if sign == "+":
            value |= bit
    return value, mask


@dataclass(frozen=True)
class Opaque:
    """An action read back from a switch that the hub does not model."""
    text: str


Action = Union[Output, SetField, Move, DecTtl, Conntrack, Opaque]
