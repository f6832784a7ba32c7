"""OpenFlow meters as plain data: a rate limit the hub wants on one switch.

A `MeterSpec` is one meter with a single drop band: traffic above `rate_kbps`
(kilobits per second) is dropped, after a burst of `burst_kbits` kilobits.
`burst_kbits=0` leaves the burst to the switch: the meter is sent with the
flags KBPS only; with a burst it carries KBPS|BURST and the band's burst_size.
`controller.pipeline.ofcodec` turns it into an OFPMeterMod (and a meter read
back from a switch into a MeterSpec); a flow applies a meter with
`FlowSpec.meter` (the OpenFlow 1.3/1.4 meter instruction).

Meter ids are per switch.  Each feature computes its own inside the meter
ranges of its budget (`controller.core.budgets`); `controller.reconcile.meters`
treats a meter found on a switch as the hub's own exactly when its id lies in
one of those ranges (and deletes it when it is no longer desired).  A
per-port limit uses `meter_id_for`, unique on a switch and stable across
restarts: egress of port p is meter 2p, ingress 2p+1 (ids 2..65535).
"""
from __future__ import annotations

from dataclasses import dataclass

EGRESS = "egress"    # traffic leaving the switch through the port (towards the interface)
INGRESS = "ingress"  # traffic entering the switch through the port
DIRECTIONS = {EGRESS: 0, INGRESS: 1}
MAX_PORT = 32767           # meter_id_for: ports 1..MAX_PORT, ids 2..2 * MAX_PORT + 1
OFPM_MAX = 0xFFFF0000  # the last meter id a switch may use (OpenFlow 1.3+)
_U32 = 1 << 32


@dataclass(frozen=True)
class MeterSpec:
    """One meter: drop what exceeds `rate_kbps`; `burst_kbits` 0 = the switch's default.

    A meter read back from a switch in a shape the hub does not write (packets
    per second, several bands, a band other than drop...) decodes to a
    MeterSpec with rate_kbps 0, which no desired meter has, so the reconciler
    rewrites it.
    """
    meter_id: int
    rate_kbps: int
    burst_kbits: int = 0

    def __post_init__(self) -> None:
        for name in ("meter_id", "rate_kbps", "burst_kbits"):
            value = getattr(self, name)
            if type(value) is not int:
                raise TypeError(f"meter {name} must be an int, not {value!r}")
        if not 1 <= self.meter_id <= OFPM_MAX:
            raise ValueError(f"meter id {self.meter_id} is outside 1..{OFPM_MAX:#x}")
        if not 0 <= self.rate_kbps < _U32:
            raise ValueError(f"meter rate {self.rate_kbps} kbps is outside 0..{_U32 - 1}")
        if not 0 <= self.burst_kbits < _U32:
            raise ValueError(f"meter burst {self.burst_kbits} kbits is outside 0..{_U32 - 1}")


def meter_id_for(port: int, direction: str) -> int:
    """The hub's meter id for rate-limiting `direction` ("egress"/"ingress") of `port`.

    2*port for egress, 2*port + 1 for ingress; port 1..32767, so ids 2..65535.
    """
    if type(port) is not int or not 1 <= port <= MAX_PORT:
        raise ValueError(f"port {port!r} is outside 1..{MAX_PORT}: no meter id for it")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {sorted(DIRECTIONS)}")
    return 2 * port + DIRECTIONS[direction]

