"""The read-only view of the fabric that features compile from and look at."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address
from typing import Iterable, Mapping

from controller.core.topology import Host, Link, Subnet, next_hops, subnet_of


@dataclass(frozen=True)
class FabricView:
    """What the core knows, frozen for one compile (or one tick).

    `switches` are the ready ones (connected, settled): the datapaths a
    contribution may name.  `tunnel_ports` maps a tunnel port's name to its
    OpenFlow port number once Open vSwitch has made it.
    """
    switches: frozenset[int]
    links: frozenset[Link]
    hosts: tuple[Host, ...]
    subnets: tuple[Subnet, ...]
    router_mac: str
    tunnel_ports: Mapping[str, int] = field(default_factory=dict)
    bridges: Mapping[int, str] = field(default_factory=dict)   # dpid -> bridge name

    @cached_property
    def macs(self) -> dict[str, str]:
        """Known host IPv4 address -> its MAC."""
        return {ip: h.mac for h in self.hosts for ip in h.ips}

    @cached_property
    def hops(self) -> dict[int, dict[int, int]]:
        """hops[src][dst]: the port of src toward dst, over every known switch."""
        return next_hops(self.switches | {d for l in self.links for d in (l.a_dpid, l.b_dpid)},
                         self.links)

    def gateway_of(self, ips: Iterable[str]) -> str | None:
        """The gateway of the first subnet holding one of `ips` (a host's own subnet)."""
        return next((str(s.gateway) for ip in ips if (s := self.subnet_of(ip)) is not None),
                    None)

    def mac_of(self, ip: str) -> str | None:
        return self.macs.get(ip)

    def subnet_of(self, ip: str) -> Subnet | None:
        return subnet_of(ip, self.subnets)

    def next_mac(self, src_ip: str, dst_ip: str) -> str:
        """The MAC a host at src_ip sends to for dst_ip: the host's own on its subnet,
        else the router's."""
        subnet = self.subnet_of(src_ip)
        if subnet is not None and IPv4Address(dst_ip) in subnet.cidr:
            mac = self.mac_of(dst_ip)
            if mac is not None:
                return mac
        return self.router_mac
