"""The immutable picture of the hub the REST API reads (replaced whole, never mutated)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from controller.core.metrics import Metrics
from controller.core.topology import Topology, dpid_str

if TYPE_CHECKING:
    from controller.core.convergence import Convergence


@dataclass(frozen=True)
class Snapshot:
    started_at: float
    datapaths: tuple[dict, ...]
    topology: dict


def empty_snapshot(started_at: float) -> Snapshot:
    return Snapshot(started_at, (), {"switches": [], "links": [], "hosts": []})


def publish(started_at: float, topo: Topology, convergence: "Convergence",
            channels: Mapping, metrics: Metrics) -> Snapshot:
    link_ports: dict[int, set[int]] = {}
    for link in topo.links:
        for d, p in link.ends():
            link_ports.setdefault(d, set()).add(p)
    datapaths = []
    for dpid, sw in sorted(topo.switches.items()):
        state = convergence.switches.get(dpid)
        ports = [{"port_no": p.port_no, "name": p.name, "up": p.up,
                  "role": "link" if p.port_no in link_ports.get(dpid, ()) else "host"}
                 for p in sorted(sw.ports.values(), key=lambda p: p.port_no)
                 if p.port_no < 0xFFFFFF00]  # not LOCAL: it faces the switch itself
        datapaths.append({
            "id": dpid_str(dpid), "dpid": dpid, "connected": sw.connected,
            "of_version": sw.of_version, "ports": ports,
            "flows": {"desired": len(state.desired) if state and sw.connected else 0,
                      "installed": len(state.flows.realized) if state else 0,
                      "in_sync": convergence.in_sync(dpid)},
            "last_reconciled_at": state.reconciled_at if state else None})
    topology = {
        "switches": [{"id": dpid_str(d), "dpid": d, "connected": s.connected}
                     for d, s in sorted(topo.switches.items())],
        "links": [{"src": {"datapath": dpid_str(l.a_dpid), "port_no": l.a_port},
                   "dst": {"datapath": dpid_str(l.b_dpid), "port_no": l.b_port}}
                  for l in sorted(topo.links)],
        "hosts": [{"mac": h.mac, "ips": list(h.ips), "datapath": dpid_str(h.dpid),
                   "port_no": h.port, "last_seen": h.last_seen}
                  for h in sorted(topo.hosts.values(), key=lambda h: h.mac)],
    }
    metrics.datapaths_connected.set(len(channels))
    metrics.hosts.set(len(topo.hosts))
    return Snapshot(started_at, tuple(datapaths), topology)
