"""TCP/UDP port ranges, and the masked matches that cover one exactly.

Shared by every compiler whose rules name a port or a range "A-B" (a
personality's firewall rules, a persona's security policies): OpenFlow
matches a 16-bit port field by value and mask, so a range becomes the fewest
aligned blocks that cover it.
"""
from __future__ import annotations

from typing import NamedTuple


class PortRange(NamedTuple):
    """An inclusive range of ports, lo <= hi (one port: lo == hi)."""
    lo: int
    hi: int


def port_range(port: int | str | None) -> PortRange | None:
    """A document's port field as a range: a number, "A-B", or None for any port.

    The field is already validated (`controller.core.documents.parse_port`
    keeps a range as "A-B" with A < B); this only converts it.
    """
    if port is None:
        return None
    if isinstance(port, int):
        return PortRange(port, port)
    lo, _, hi = port.partition("-")
    return PortRange(int(lo), int(hi or lo))


class MaskedPort(NamedTuple):
    """One match on a 16-bit port: (value, 0xFFFF) is one port, (0, 0) every port."""
    value: int
    mask: int


def port_range_masks(lo: int, hi: int) -> list[MaskedPort]:
    """The fewest (value, mask) matches on a 16-bit port covering exactly lo..hi.

    Greedy: from `lo`, take the largest aligned power-of-two block that still
    fits.  (0, 0xFFFF) is one exact port; (0, 0) is every port.
    """
    if not (isinstance(lo, int) and isinstance(hi, int)) or not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo!r}-{hi!r} (need 0 <= lo <= hi <= 65535)")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 0x10000          # alignment of lo
        while size > hi - lo + 1:
            size >>= 1
        out.append(MaskedPort(lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out
