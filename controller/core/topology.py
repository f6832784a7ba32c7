"""What the hub knows about its fabric: switches, ports, links, hosts, subnets.

Plain data.  `Topology` is owned by the hub's single worker thread; the frozen
records are what compilers and the REST API see.
"""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address
from dataclasses import dataclass, field
from typing import Iterable

import networkx as nx


def dpid_str(dpid: int) -> str:
    return f"{dpid:016x}"


@dataclass(frozen=True)
class Subnet:
    id: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    revision: int = 0

    @classmethod
    def from_body(cls, id: str, body: dict, revision: int = 0) -> "Subnet":
        cidr = ipaddress.IPv4Network(body["cidr"], strict=True)
        gateway = ipaddress.IPv4Address(body["gateway"])
        if gateway not in cidr:
            raise ValueError(f"gateway {gateway} is outside {cidr}")
        return cls(id, cidr, gateway, revision)


@dataclass(frozen=True, order=True)
class Link:
    """A bidirectional link between two switch ports, stored with a < b."""
    a_dpid: int
    a_port: int
    b_dpid: int
    b_port: int

    @classmethod
    def of(cls, dpid1: int, port1: int, dpid2: int, port2: int) -> "Link":
        if (dpid1, port1) <= (dpid2, port2):
            return cls(dpid1, port1, dpid2, port2)
        return cls(dpid2, port2, dpid1, port1)

    @property
    def id(self) -> str:
        return f"{dpid_str(self.a_dpid)}:{self.a_port}-{dpid_str(self.b_dpid)}:{self.b_port}"

    def ends(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.a_dpid, self.a_port), (self.b_dpid, self.b_port)

    def to_body(self) -> dict:
        return {"a_dpid": self.a_dpid, "a_port": self.a_port,
                "b_dpid": self.b_dpid, "b_port": self.b_port}

    @classmethod
    def from_body(cls, body: dict) -> "Link":
        return cls.of(body["a_dpid"], body["a_port"], body["b_dpid"], body["b_port"])


@dataclass(frozen=True)
class Host:
    mac: str
    ips: tuple[str, ...]
    dpid: int
    port: int
    last_seen: float = field(default=0.0, compare=False)

    def to_body(self) -> dict:
        return {"mac": self.mac, "ips": list(self.ips), "dpid": self.dpid,
                "port": self.port, "last_seen": self.last_seen}

    @classmethod
    def from_body(cls, body: dict) -> "Host":
        return cls(body["mac"], tuple(body["ips"]), body["dpid"], body["port"],
                   body.get("last_seen", 0.0))


@dataclass
class Port:
    port_no: int
    name: str
    up: bool


@dataclass
class Switch:
    dpid: int
    connected: bool = False
    of_version: str | None = None
    ports: dict[int, Port] = field(default_factory=dict)


class Topology:
    """Mutable fabric model.  Every mutator returns True when something changed."""

    def __init__(self) -> None:
        self.switches: dict[int, Switch] = {}
        self.links: set[Link] = set()
        self.hosts: dict[str, Host] = {}

    # switches and ports
    def switch(self, dpid: int) -> Switch:
        return self.switches.setdefault(dpid, Switch(dpid))

    def set_ports(self, dpid: int, ports: Iterable[Port]) -> None:
        self.switch(dpid).ports = {p.port_no: p for p in ports}

    def link_ports(self, dpid: int) -> set[int]:
        return {port for link in self.links for (d, port) in link.ends() if d == dpid}

    def edge_ports(self, dpid: int) -> list[int]:
        """Up ports of a switch that face hosts (not links, not LOCAL)."""
        sw = self.switches.get(dpid)
        if sw is None:
            return []
        links = self.link_ports(dpid)
        return sorted(p.port_no for p in sw.ports.values()
                      if p.up and p.port_no not in links and p.port_no < 0xFFFFFF00)

    # links
    def add_link(self, link: Link) -> bool:
        if link in self.links:
            return False
        # A port takes part in one link at most: a re-cabled port replaces its old link.
        ends = set(link.ends())
        self.links = {l for l in self.links if not ends & set(l.ends())}
        self.links.add(link)
        return True

    def remove_links_at(self, dpid: int, port: int) -> list[Link]:
        gone = [l for l in self.links if (dpid, port) in l.ends()]
        self.links.difference_update(gone)
        return gone

    # hosts
    def learn_host(self, mac: str, ip: str | None, dpid: int, port: int, now: float) -> bool:
        """Record a host seen at (dpid, port).  True if its location or addresses changed."""
        old = self.hosts.get(mac)
        ips = set(old.ips) if old and (old.dpid, old.port) == (dpid, port) else set()
        if ip:
            ips.add(ip)
            # An address belongs to one host: a host taking over an IP evicts it elsewhere.
            for other in list(self.hosts.values()):
                if other.mac != mac and ip in other.ips:
                    self.hosts[other.mac] = Host(other.mac, tuple(sorted(set(other.ips) - {ip})),
                                                 other.dpid, other.port, other.last_seen)
        new = Host(mac, tuple(sorted(ips)), dpid, port, now)
        self.hosts[mac] = new
        return old is None or (old.ips, old.dpid, old.port) != (new.ips, new.dpid, new.port)

    def hosts_at(self, dpid: int, port: int) -> list[Host]:
        return [h for h in self.hosts.values() if (h.dpid, h.port) == (dpid, port)]


def subnet_of(ip: str, subnets: Iterable[Subnet]) -> Subnet | None:
    addr = IPv4Address(ip)
    return next((s for s in subnets if addr in s.cidr), None)


def next_hops(switches: Iterable[int], links: Iterable[Link]) -> dict[int, dict[int, int]]:
    """next_hops[src][dst] = port on src toward dst, over shortest paths.

    Deterministic: ties break toward the lowest dpid, parallel links toward the
    lowest port.
    """
    graph = nx.Graph()
    graph.add_nodes_from(sorted(switches))
    port_to: dict[tuple[int, int], int] = {}
    for link in sorted(links):
        graph.add_edge(link.a_dpid, link.b_dpid)
        for (u, up), (v, _) in (link.ends(), link.ends()[::-1]):
            port_to[(u, v)] = min(up, port_to.get((u, v), up))
    hops: dict[int, dict[int, int]] = {n: {} for n in graph.nodes}
    for dst in sorted(graph.nodes):
        dist = nx.single_source_shortest_path_length(graph, dst)
        for src, d in dist.items():
            if src != dst:
                via = min(n for n in graph.neighbors(src) if dist.get(n) == d - 1)
                hops[src][dst] = port_to[(src, via)]
    return hops
