"""The table layout, declared once.  Every compiled flow is checked against it.

Ids leave gaps so later features can slot their tables in between without
renumbering (OpenFlow only allows goto to a higher table).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from controller.pipeline.flowspec import FlowSpec


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    purpose: str
    miss: str  # what the table-miss flow does: "controller", "drop" or "goto:<name>"


CLASSIFY = Table(0, "classify",
                 "Admit packets from known hosts (port + MAC) and from fabric links; "
                 "punt LLDP, and ARP/IPv4 from unknown sources (host discovery).",
                 "drop")
ARP = Table(10, "arp",
            "Answer ARP requests for gateways and known hosts from flows; punt "
            "requests for unknown targets (the controller floods them to edge ports).",
            "goto:route")
ROUTE = Table(40, "route",
              "Packets sent to the router MAC: answer pings to gateways, rewrite "
              "MACs and decrement TTL for known hosts; punt unknown destinations "
              "(the controller ARP-probes for them).",
              "goto:l2")
L2 = Table(50, "l2", "Forward by destination MAC along the shortest path to the host.",
           "drop")

LAYOUT: tuple[Table, ...] = (CLASSIFY, ARP, ROUTE, L2)
BY_ID = {t.id: t for t in LAYOUT}
BY_NAME = {t.name: t for t in LAYOUT}


class LayoutError(ValueError):
    pass


def check(flows: Iterable[FlowSpec]) -> None:
    """Refuse flows in undeclared tables or that goto backwards/undeclared tables."""
    for f in flows:
        if f.table not in BY_ID:
            raise LayoutError(f"flow in undeclared table {f.table}: {f}")
        if f.goto is not None:
            if f.goto not in BY_ID:
                raise LayoutError(f"goto undeclared table {f.goto}: {f}")
            if f.goto <= f.table:
                raise LayoutError(f"goto must move forward ({f.table} -> {f.goto}): {f}")
