"""Discovery: links from LLDP, hosts from their first packets, addresses by ARP.

Part of the core, on the hub's worker thread.  It keeps the topology (and its
records in the store) and answers the fabric services features use: resolve
an address (an ARP probe from the subnet's gateway, holding the packet that
asked until the address answers) and flood a frame to every host-facing port.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from controller.core import interfaces
from controller.core.channel import SwitchChannel
from controller.core.metrics import Metrics
from controller.core.topology import Host, Link, Subnet, Topology, dpid_str, subnet_of
from controller.packets import ETH_ARP, ETH_IPV4, ETH_LLDP, Packet, arp_request, lldp_frame
from controller.pipeline import cookies, tables
from controller.pipeline.actions import TABLE, Output
from controller.pipeline.flowspec import FlowSpec, flow
from controller.reconcile.tunnels import is_tunnel_port_name
from controller.store import Store

LOG = logging.getLogger("hubshift.discovery")

PROBE_INTERVAL = 1.0  # seconds between ARP probes for one unknown address
AWAIT_SECONDS = 3.0   # how long a routed packet waits for its destination to answer
AWAIT_MAX = 256       # routed packets held at most, over all destinations
BOOTSTRAP_COOKIE = cookies.make(cookies.Feature.FABRIC, "base")


@dataclass(frozen=True)
class Punted:
    """A packet the hub sends back into a switch's pipeline once its flows are in."""
    dpid: int
    in_port: int
    data: bytes


@dataclass(frozen=True)
class Held:
    """A routed packet waiting for its destination's address to answer."""
    expires: float
    packet: Punted


def bootstrap_flows() -> tuple[FlowSpec, ...]:
    """Flows a switch needs before its topology is known: punt LLDP for link discovery."""
    return (flow(tables.CLASSIFY.id, 65000, {"eth_type": ETH_LLDP}, [Output.controller()],
                 cookie=BOOTSTRAP_COOKIE),)


class Discovery:
    def __init__(self, store: Store, metrics: Metrics, channels: Mapping[int, SwitchChannel], *,
                 clock: Callable[[], float], wallclock: Callable[[], float], router_mac: str,
                 changed: Callable[[], int], journal: Callable[..., None]) -> None:
        self.store = store
        self.metrics = metrics
        self.channels = channels
        self.clock = clock
        self.wallclock = wallclock
        self.router_mac = router_mac
        self._changed = changed
        self._journal = journal
        self.topo = Topology()
        self.subnets: tuple[Subnet, ...] = ()
        self.reinject: list[Punted] = []
        self._probed: dict[str, float] = {}
        self._awaiting: dict[str, list[Held]] = {}

    def load(self) -> None:
        for doc in self.store.list("link"):
            self.topo.links.add(Link.from_body(doc.body))
        with self.store.transaction():
            for doc in self.store.list("host"):
                host = Host.from_body(doc.body)
                self.topo.hosts[host.mac] = host
                interfaces.record_host(self.store, host)  # a store from before interface records

    # ------------------------------------------------------------ links
    def probe_links(self, dpid: int, ports: Sequence[int] | None = None) -> None:
        channel = self.channels.get(dpid)
        if channel is None:
            return
        sw = self.topo.switch(dpid)
        for port_no in ports if ports is not None else sorted(sw.ports):
            port = sw.ports.get(port_no)
            if port and port.up and port_no < 0xFFFFFF00 and not is_tunnel_port_name(port.name):
                self._send(dpid, lldp_frame(dpid, port_no, self.router_mac), [Output(port_no)])

    def drop_links(self, dpid: int, port: int) -> None:
        for link in self.topo.remove_links_at(dpid, port):
            if self.store.find("link", link.id):
                self.store.delete("link", link.id)
            self._journal("link", link.id, "removed")
            self._changed()

    def on_lldp(self, dpid: int, in_port: int, pkt: Packet) -> None:
        if pkt.lldp_dpid is None or pkt.lldp_port is None:
            return
        link = Link.of(pkt.lldp_dpid, pkt.lldp_port, dpid, in_port)
        if link in self.topo.links:
            return
        self.topo.add_link(link)
        with self.store.transaction():
            for doc in self.store.list("link"):
                if Link.from_body(doc.body) not in self.topo.links:
                    self.store.delete("link", doc.id)
            self.store.put("link", link.id, link.to_body())
            # Hosts "learned" on what turns out to be a link port were not hosts.
            for d, p in link.ends():
                for host in self.topo.hosts_at(d, p):
                    del self.topo.hosts[host.mac]
                    self.store.delete("host", host.mac)
        self._journal("link", link.id, "discovered")
        self._changed()

    # ------------------------------------------------------------ hosts
    def on_unknown_source(self, punt: Punted, pkt: Packet) -> None:
        dpid, in_port = punt.dpid, punt.in_port
        if in_port in self.topo.link_ports(dpid) or not pkt.unicast_src \
                or self.is_tunnel_port(dpid, in_port):   # never a host behind a VPN tunnel
            return
        if pkt.eth_src == self.router_mac:
            return  # the hub's own probe, looped back through an undiscovered link
        if pkt.eth_type not in (ETH_ARP, ETH_IPV4):
            return  # learn hosts from ARP and IPv4 only
        ip = pkt.sender_ip
        before = dict(self.topo.hosts)
        old = before.get(pkt.eth_src)
        if self.topo.learn_host(pkt.eth_src, ip, dpid, in_port, self.wallclock()):
            host = self.topo.hosts[pkt.eth_src]
            with self.store.transaction():
                # The learned host, and any host an IP was taken from.
                for changed in self.topo.hosts.values():
                    if before.get(changed.mac) != changed:
                        self.store.put("host", changed.mac, changed.to_body())
                        interfaces.record_host(self.store, changed)
            verb = ("learned" if old is None else
                    "moved" if (old.dpid, old.port) != (dpid, in_port) else "updated")
            self._journal("host", host.mac, verb, ips=list(host.ips),
                          datapath=dpid_str(dpid), port=in_port)
            self._changed()
        self.reinject.append(punt)
        now = self.clock()
        for held in self._awaiting.pop(ip, []) if ip else []:
            if held.expires >= now:
                self.reinject.append(held.packet)

    # ------------------------------------------------------------ services
    def flood(self, data: bytes, exclude: tuple[int, int]) -> None:
        for dpid in sorted(self.channels):
            ports = [p for p in self.topo.edge_ports(dpid)
                     if (dpid, p) != exclude and not self.is_tunnel_port(dpid, p)]
            if ports:
                self._send(dpid, data, [Output(p) for p in ports])

    def resolve(self, ip: str | None, held: Punted | None) -> None:
        """An address nobody has answered for yet: hold the packet, ask for the address.

        Like a router's ARP queue: the packet is re-injected once the address
        answers and its flows are installed, or dropped after AWAIT_SECONDS.
        """
        subnet = subnet_of(ip, self.subnets) if ip else None
        if subnet is None:
            return
        now = self.clock()
        for key in [k for k, queue in self._awaiting.items() if queue[0].expires < now]:
            del self._awaiting[key]
        if held is not None and sum(len(v) for v in self._awaiting.values()) < AWAIT_MAX:
            packet = Punted(held.dpid, held.in_port, held.data)
            self._awaiting.setdefault(ip, []).append(Held(now + AWAIT_SECONDS, packet))
        if now - self._probed.get(ip, -PROBE_INTERVAL) < PROBE_INTERVAL:
            return
        self._probed = {k: t for k, t in self._probed.items() if now - t < PROBE_INTERVAL}
        self._probed[ip] = now
        self.flood(arp_request(self.router_mac, str(subnet.gateway), ip), exclude=(0, 0))

    def flush_reinject(self, in_sync: Callable[[int], bool]) -> None:
        """Send held packets back through their switch's pipeline, once it is in sync."""
        pending, self.reinject = self.reinject, []
        for punt in pending:
            if self.channels.get(punt.dpid) is not None and in_sync(punt.dpid):
                self._send(punt.dpid, punt.data, [Output(TABLE)], in_port=punt.in_port)

    def is_tunnel_port(self, dpid: int, port_no: int) -> bool:
        sw = self.topo.switches.get(dpid)
        port = sw.ports.get(port_no) if sw else None
        return port is not None and is_tunnel_port_name(port.name)

    def _send(self, dpid: int, data: bytes, actions: list, **kw) -> None:
        channel = self.channels.get(dpid)
        if channel is not None:
            channel.packet_out(data, actions, **kw)
            self.metrics.packet_out.labels(dpid_str(dpid)).inc()


def is_lldp(pkt: Packet) -> bool:
    return pkt.eth_type == ETH_LLDP


def table_name(table_id: int) -> str:
    return tables.BY_ID.get(table_id, tables.CLASSIFY).name
