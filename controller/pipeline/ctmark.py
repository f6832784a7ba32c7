"""The bits of `ct_mark` the hub sets on connections: the layout, in one place.

A mark is stored with a connection when it is committed
(`Conntrack(commit=True, mark=..., mark_mask=...)`) and read back by every
later packet of the connection after `ct(table=...)`, even a packet
conntrack still calls `+new` (a one-way UDP stream is never `+est`).

Two fields of three bits, one per personality firewall table, i.e. per role
an interface plays in the connection (the personality's ct_mark bits in
`controller.core.budgets`; other features' bits lie beyond them):

    bits 0..2   OUT  set by personality_egress_fw: a connection the interface
                     opened
    bits 3..5   IN   set by personality_ingress_fw: a connection opened toward
                     the interface

and in each field:

    bit  0      COMMITTED  the interface's personality firewall admitted and
                           committed the connection
    bits 1..2   application verdict (`APP_MASK`, controller.features.personality.applications):
                  0 APP_NONE     no application rule governs its port
                  1 APP_INSPECT  first payload awaited: the opener's packets go
                                 to the controller
                  2 APP_ALLOWED  inspected and allowed
                  3 APP_DENIED   inspected and denied, or its port denied
                                 outright: dropped

Why two fields: all bridges of one Open vSwitch datapath share one
connection table.  When zones were numbered from the port (2 * port +
epoch), two interfaces with the same port number on two bridges shared a
zone, and so saw the same connection when one talked to the other: the
opener's interface commits it from its egress table, the other end's from
its ingress table, and with one field each, written with a mask, neither
overwrites nor trusts the other's verdict.  Interface records now hold zone
pairs unique across all bridges (`controller.core.interfaces`), so a zone
belongs to one interface and a connection in it is committed by one of its
tables only: the second field is no longer needed for that.  It stays while
an interface without an allocated zone can still fall back to the port's
numbering (`controller.features.personality.interface`), and because one
field would change the flows of every firewall table for three bits the
budget does not need.

Which field a firewall table reads: its own for the opener's packets
(`-rpl`: egress table OUT, ingress table IN), the other for replies (`+rpl`:
the egress table sees replies of connections opened toward the interface,
IN; the ingress table replies of connections it opened, OUT).
"""
from __future__ import annotations

from typing import NamedTuple

EGRESS, INGRESS = "egress", "ingress"
SHIFT = {EGRESS: 0, INGRESS: 3}
FIELD = 0x7

COMMITTED = 0x1
APP_MASK = 0x6
APP_NONE = 0x0
APP_INSPECT = 0x2
APP_ALLOWED = 0x4
APP_DENIED = 0x6


class MarkMask(NamedTuple):
    """What a masked commit writes: `Conntrack(mark=value, mark_mask=mask)`.  (Matches stay
    plain (value, mask) pairs, the form `controller.pipeline.flowspec` normalizes to.)"""
    value: int
    mask: int


def _shift(direction: str) -> int:
    if direction not in SHIFT:
        raise ValueError(f"direction {direction!r} is not {EGRESS} or {INGRESS}")
    return SHIFT[direction]


def replied(direction: str) -> str:
    """The field a reply seen by `direction`'s firewall table belongs to: the other one."""
    return INGRESS if _shift(direction) == SHIFT[EGRESS] else EGRESS


def committed(direction: str = EGRESS) -> tuple[int, int]:
    """Match (a flowspec MatchValue): the `direction` firewall committed this connection
    (whatever its verdict)."""
    s = _shift(direction)
    return COMMITTED << s, COMMITTED << s


def app(direction: str, verdict: int) -> tuple[int, int]:
    """Match: the connection has this application verdict (APP_INSPECT, ...) in a field."""
    if verdict & ~APP_MASK:
        raise ValueError(f"{verdict:#x} is not an application verdict")
    s = _shift(direction)
    return verdict << s, APP_MASK << s


def commit(direction: str, verdict: int = APP_NONE) -> MarkMask:
    """(mark, mask) for a commit by the `direction` firewall: COMMITTED and this verdict,
    written into its own field only."""
    if verdict & ~APP_MASK:
        raise ValueError(f"{verdict:#x} is not an application verdict")
    s = _shift(direction)
    return MarkMask((COMMITTED | verdict) << s, FIELD << s)


def describe(mark: int) -> str:
    """`0x0d` -> "out:committed,allowed in:committed", for logs and people."""
    parts = []
    for direction, name in ((EGRESS, "out"), (INGRESS, "in")):
        field = (mark >> SHIFT[direction]) & FIELD
        if field:
            words = ["committed"] if field & COMMITTED else []
            words += [{APP_INSPECT: "inspect", APP_ALLOWED: "allowed",
                       APP_DENIED: "denied"}.get(field & APP_MASK, "")]
            parts.append(f"{name}:" + ",".join(w for w in words if w))
    rest = mark & ~(FIELD << SHIFT[EGRESS] | FIELD << SHIFT[INGRESS])
    if rest:
        parts.append(f"{rest:#x}")
    return " ".join(parts) or "none"
