"""OpenFlow actions as plain, hashable data.

Compilers build flows out of these; `controller.pipeline.ofcodec` is the one
place that turns them into os-ken objects (and back, when flows are read from a
switch).  Only what the hub uses is modelled; anything else read back from a
switch decodes to `Opaque`, which never equals a desired action, so the
reconciler replaces such a flow.
"""
from __future__ import annotations

import ipaddress
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
class Nat:
    """The `nat` of a Conntrack action.

    `Nat(dst="10.0.0.53", dst_port=53)` rewrites the destination of a new
    connection (needs `commit`), `Nat(src=...)` its source; `Nat()` applies the
    translation of an already committed connection (and un-NATs its replies).
    One address, not a range.
    """
    dst: str | None = None
    dst_port: int | None = None
    src: str | None = None

    def __post_init__(self) -> None:
        if self.dst is not None and self.src is not None:
            raise ValueError("nat translates the source or the destination, not both")
        for addr in (self.dst, self.src):
            if addr is not None and str(ipaddress.IPv4Address(addr)) != addr:
                raise ValueError(f"nat address {addr!r} is not a plain dotted quad")
        if self.dst_port is not None and (self.dst is None or not 0 < self.dst_port <= 0xFFFF):
            raise ValueError(f"nat dst_port {self.dst_port!r} needs dst and 1..65535")


@dataclass(frozen=True)
class Conntrack:
    """Nicira `ct(...)`: send the packet through the connection tracker.

    `zone` keeps one interface's connections apart from another's.  With
    `commit` the connection is remembered (so its replies match `+est`).  With
    a `table`, the tracked packet is recirculated to that table, where
    `ct_state` is set (match it with `ct_state(...)`); without one, the
    pipeline carries on with the following actions and instructions.

    With `nat`, the tracker also translates addresses (see `Nat`).

    With `mark` (needs `commit`), the commit also stores `mark` in the
    connection's `ct_mark`, in the bits of `mark_mask` (all 32 by default):
    `ct(commit, exec(set_field:mark/mark_mask->ct_mark))`.  Later packets of
    the connection carry it after `ct(table=...)`; the bits the hub uses are
    laid out in `controller.pipeline.ctmark`.

    Encoded as os-ken's NXActionCT (immediate zone, no ALG) by
    `controller.pipeline.ofcodec`; its nested actions are an NXActionNAT when
    `nat` is set, then the mark: an OFPActionSetField of ct_mark for a whole
    mark, an NXActionRegLoad2 for a masked one (OpenFlow 1.3/1.4 set-field
    takes no mask).
    """
    commit: bool = False
    zone: int = 0
    table: int | None = None
    nat: Nat | None = None
    mark: int | None = None
    mark_mask: int = 0xFFFFFFFF

    def __post_init__(self) -> None:
        if not 0 <= self.zone <= 0xFFFF:
            raise ValueError(f"conntrack zone {self.zone} is outside 0..65535")
        if self.nat is not None and (self.nat.dst or self.nat.src) and not self.commit:
            raise ValueError("nat with an address needs commit (OVS refuses it otherwise)")
        if not (isinstance(self.mark_mask, int) and 0 < self.mark_mask <= 0xFFFFFFFF):
            raise ValueError(f"ct_mark mask {self.mark_mask!r} is outside 1..0xffffffff")
        if self.mark is None:
            if self.mark_mask != 0xFFFFFFFF:
                raise ValueError("a ct_mark mask without a mark")
            return
        if not self.commit:
            raise ValueError("setting ct_mark needs commit (OVS refuses it otherwise)")
        if not (isinstance(self.mark, int) and 0 <= self.mark <= 0xFFFFFFFF):
            raise ValueError(f"ct_mark {self.mark!r} is outside 0..0xffffffff")
        if self.mark & ~self.mark_mask:
            raise ValueError(f"ct_mark {self.mark:#x} sets bits outside its mask "
                             f"{self.mark_mask:#x}")


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
class LearnMatch:
    """One match field of a flow added by `Learn`.

    The learned flow matches `dst[dst_ofs .. dst_ofs+n_bits-1]` against the
    learning packet's `src[src_ofs ..]`, or against the immediate `value`
    (exactly one of `src` and `value`).  Field names are os-ken's (`ipv4_src`,
    `tcp_src`, `reg0`).  The learned flow needs its prerequisites too: a `dst`
    of `ipv4_src` takes an `eth_type` = 0x0800 spec as well.
    """
    dst: str
    n_bits: int
    dst_ofs: int = 0
    src: str | None = None
    src_ofs: int = 0
    value: int | None = None

    def __post_init__(self) -> None:
        if (self.src is None) == (self.value is None):
            raise ValueError("a learn match takes exactly one of src and value")
        if not 0 < self.n_bits < 0x400:
            raise ValueError(f"learn match n_bits {self.n_bits} is outside 1..1023")


@dataclass(frozen=True)
class Learn:
    """Nicira `learn(...)`: add (or refresh) a flow in `table` from this packet.

    The learned flow matches `specs` and has no actions; it carries `cookie`, so
    a table of learned flows can be counted with an aggregate stats request.
    Re-learning an existing flow (OVS) restarts its `hard_timeout` but not its
    `idle_timeout`, which only packets matching the learned flow itself reset:
    for "expire N seconds after the last packet" use hard_timeout.
    """
    table: int
    cookie: int
    idle_timeout: int = 0
    hard_timeout: int = 0
    priority: int = 0x8000
    specs: tuple[LearnMatch, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.table <= 254:
            raise ValueError(f"learn table {self.table} is outside 0..254")


@dataclass(frozen=True)
class Multipath:
    """Nicira `multipath(fields, basis, algorithm, n_links, arg, dst[ofs..ofs+n_bits-1])`.

    Hashes the packet's `fields` (with `basis`) and writes a link number in
    0..n_links-1, chosen by `algorithm`, into bits of a register: flows
    further on match it.  `symmetric_l3l4+udp` hashes addresses, protocol and
    TCP/UDP ports, so every packet of one flow (and of its replies) gets the
    same number: flow-consistent spreading without the controller.  Encoded
    as os-ken's NXActionMultipath (its `max_link` is n_links - 1).
    """
    n_links: int
    dst: str                                # a register: "reg1"
    n_bits: int = 16
    ofs: int = 0
    fields: str = "symmetric_l3l4+udp"
    algorithm: str = "modulo_n"
    basis: int = 0
    arg: int = 0

    def __post_init__(self) -> None:
        if self.fields not in MULTIPATH_FIELDS:
            raise ValueError(f"multipath fields {self.fields!r} is not one of "
                             f"{', '.join(MULTIPATH_FIELDS)}")
        if self.algorithm not in MULTIPATH_ALGORITHMS:
            raise ValueError(f"multipath algorithm {self.algorithm!r} is not one of "
                             f"{', '.join(MULTIPATH_ALGORITHMS)}")
        if not (0 < self.n_bits <= 32 and 0 <= self.ofs and self.ofs + self.n_bits <= 32):
            raise ValueError(f"multipath bits {self.ofs}..{self.ofs + self.n_bits - 1} are "
                             "not within a 32-bit register")
        if not 1 <= self.n_links <= min(1 << self.n_bits, 0x10000):
            raise ValueError(f"multipath n_links {self.n_links} is outside 1.."
                             f"{min(1 << self.n_bits, 0x10000)}")
        if not (0 <= self.basis <= 0xFFFF and 0 <= self.arg <= 0xFFFFFFFF):
            raise ValueError("multipath basis is 16 bits and arg 32 bits")


# OVS's enum nx_hash_fields and enum nx_mp_algorithm, by the names ovs-ofctl uses.
MULTIPATH_FIELDS = {"eth_src": 0, "symmetric_l4": 1, "symmetric_l3l4": 2,
                    "symmetric_l3l4+udp": 3, "nw_src": 4, "nw_dst": 5, "symmetric_l3": 6}
MULTIPATH_ALGORITHMS = {"modulo_n": 0, "hash_threshold": 1, "hrw": 2, "iter_hash": 3}


@dataclass(frozen=True)
class OutputTrunc:
    """Nicira `output(port=P,max_len=N)`: send at most the first `max_len` bytes of the
    packet out of `port` (the packet itself, for the actions after it, is not cut).

    OpenFlow's own output `max_len` only applies to CONTROLLER; this one truncates
    toward any port but a patch port.  Its IP total length is left as it was.
    Encoded as os-ken's NXActionOutputTrunc (a 16-bit port).
    """
    port: int
    max_len: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 0xFEFF:
            raise ValueError(f"truncated output port {self.port} is outside 1..0xfeff")
        if not 14 <= self.max_len <= 0xFFFFFFFF:
            raise ValueError(f"truncated output max_len {self.max_len} is outside "
                             "14..0xffffffff (an Ethernet header at least)")


@dataclass(frozen=True)
class Clone:
    """Nicira `clone(actions)`: run `actions` on a copy of the packet.

    Whatever the nested actions do (rewrite fields, output, go through
    conntrack and resume in a table) happens to the copy only; the packet
    itself carries on with the following actions and instructions exactly as
    it was.  Nested actions may not be another Clone (nothing here needs it)
    or Opaque.  Encoded as NXAST_CLONE (`controller.pipeline.ofcodec`).
    """
    actions: tuple["Action", ...]

    def __post_init__(self) -> None:
        if not isinstance(self.actions, tuple) or not self.actions:
            raise ValueError("clone takes a non-empty tuple of actions")
        for a in self.actions:
            if isinstance(a, (Clone, Opaque)):
                raise ValueError(f"clone cannot nest {type(a).__name__}")


def flat(actions: "tuple[Action, ...]") -> "tuple[Action, ...]":
    """The actions with those nested in a Clone in their place (for checks and audits)."""
    out: list = []
    for a in actions:
        out.extend((a, *a.actions) if isinstance(a, Clone) else (a,))
    return tuple(out)


@dataclass(frozen=True)
class Opaque:
    """An action read back from a switch that the hub does not model."""
    text: str


Action = Union[Output, SetField, Move, DecTtl, Conntrack, Learn, Multipath, OutputTrunc, Clone,
               Opaque]
