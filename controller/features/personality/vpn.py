"""A personality's VPN: the interface's traffic for remote prefixes goes through a tunnel.

Pure.  `vpn_tunnel_config` (`{type, remote_ip, key, remote_prefixes}`) gives
the interface one OVS tunnel port on its own switch (`tunnel_port`: created
over OVSDB by `controller.reconcile.tunnels`, never by this module), and
`compile_vpn` returns the flows that use it, with the personality's cookie:

    personality_routes (5), priority 200 + prefix length (above the
    personality's own routes, 100 + length):
        from the interface, to the router MAC, IPv4 to a remote prefix
        -> eth_src = eth_dst = router MAC, dec_ttl, out the tunnel port
    classify (0), from the tunnel port:
        IPv4 from a remote prefix to one of the interface's addresses
        -> eth_src = router MAC, eth_dst = the interface's MAC, dec_ttl,
           goto personality_ingress (60)        priority 65010
        anything else                -> drop    priority 65005

So what leaves through the tunnel has passed the interface's anti-spoofing,
egress firewall, count and meter first (table 5 comes after them), and what
arrives through it passes the interface's ingress firewall, count and meter
before it is output to the interface: the personality's rules apply to VPN
traffic as to any other.  Nothing from the tunnel reaches the rest of the hub,
and nothing arriving there is ever punted (no host is learned behind a
tunnel): the drop sits above the fabric's LLDP punt (65000).

The tunnel is a routed point-to-point link.  vxlan, geneve and OVS's gre all
carry Ethernet frames, so the inner frame needs MACs: both are the router MAC
on the way out (the far end is a router that rewrites them for its own
hosts, as this end does for what comes in: the arriving frame's MACs are
ignored and replaced by the router's and the interface's).  Each end routes,
so each decrements the TTL.

Tunnel ports: one per interface and tunnel (`tunnel_port`), with the remote
endpoint and key fixed in the port's options rather than set per packet by
flows.  Packets arriving through it are then the interface's by `in_port`
alone, and OVSDB shows exactly which interface owns which tunnel.  The name
(at most 15 characters, unique in one Open vSwitch) is `hs` + a letter for
the type + the CRC-32 of datapath, port, type, remote and key: a changed
tunnel gets a new port while the old one still carries the transition.

When the port is not there (yet, or OVSDB failed), `ofport` is None and the
remote prefixes are dropped rather than routed in the clear: a VPN route
never falls back to the underlay.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from controller.features.personality.document import VpnTunnelConfig
from controller.pipeline import tables
from controller.pipeline.actions import DecTtl, Output, SetField
from controller.pipeline.flowspec import FlowSpec, flow
from controller.reconcile.tunnels import (EXT_DATAPATH, EXT_INTERFACE, TunnelPort,  # noqa: F401
                                          is_tunnel_port_name)

ETH_IPV4 = 0x0800
TYPE_LETTER = {"vxlan": "v", "gre": "g", "geneve": "n"}
IFNAMSIZ = 15

# Priorities.
TUNNEL_ROUTE_BASE = 200   # personality_routes: + prefix length (plain routes: 100 + length)
TUNNEL_IN = 65010         # classify: from the tunnel, to the interface
TUNNEL_DROP = 65005       # classify: anything else from the tunnel (above the LLDP punt, 65000)

# external_ids on the Port row: who owns it, so a restarted hub finds its ports.


class InterfaceLike(Protocol):
    dpid: int
    port: int
    mac: str

    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class VpnTunnel:
    """The part of `vpn_tunnel_config` the flows and the port need."""
    type: str
    remote_ip: str
    key: int | None
    remote_prefixes: tuple[IPv4Network, ...]

    @classmethod
    def of(cls, config: VpnTunnelConfig | None) -> "VpnTunnel | None":
        """The tunnel of a parsed `vpn_tunnel_config`; its prefixes sorted, each once."""
        if config is None:
            return None
        prefixes = sorted(set(config.remote_prefixes),
                          key=lambda n: (int(n.network_address), n.prefixlen))
        return cls(config.type, str(config.remote_ip), config.key, tuple(prefixes))


def tunnel_port_name(dpid: int, port: int, vpn: VpnTunnel) -> str:
    digest = zlib.crc32(f"{dpid:016x}:{port}:{vpn.type}:{vpn.remote_ip}:{vpn.key}".encode())
    name = f"hs{TYPE_LETTER[vpn.type]}{digest:08x}"
    assert len(name) <= IFNAMSIZ
    return name


def tunnel_port(interface: InterfaceLike, vpn: VpnTunnel) -> TunnelPort:
    return TunnelPort(interface.dpid, tunnel_port_name(interface.dpid, interface.port, vpn),
                      vpn.type, vpn.remote_ip, vpn.key, interface.id)


def _net(field: str, prefix: IPv4Network) -> dict[str, str]:
    """A match on `prefix`; nothing for 0.0.0.0/0 (a full tunnel), which matches every address."""
    return {field: str(prefix)} if prefix.prefixlen else {}


def compile_vpn(interface: InterfaceLike, vpn: VpnTunnel, addresses: tuple[str, ...],
                ofport: int | None, router_mac: str, cookie: int) -> list[FlowSpec]:
    """The VPN flows of one interface (see the module doc); `ofport` None drops the prefixes."""
    out: list[FlowSpec] = []
    egress = {"in_port": interface.port, "eth_src": interface.mac, "eth_type": ETH_IPV4,
              "eth_dst": router_mac}
    send = ([SetField("eth_src", router_mac), SetField("eth_dst", router_mac), DecTtl(),
             Output(ofport)] if ofport is not None else [])
    for prefix in vpn.remote_prefixes:
        out.append(flow(tables.PERSONALITY_ROUTES.id, TUNNEL_ROUTE_BASE + prefix.prefixlen,
                        {**egress, **_net("ipv4_dst", prefix)}, send, cookie=cookie))
    if ofport is None:
        return out
    receive = [SetField("eth_src", router_mac), SetField("eth_dst", interface.mac), DecTtl()]
    targets: tuple[str | None, ...] = tuple(sorted(set(addresses), key=IPv4Address)) or (None,)
    for prefix in vpn.remote_prefixes:
        for address in targets:
            match = {"in_port": ofport, "eth_type": ETH_IPV4, **_net("ipv4_src", prefix)}
            if address is not None:
                match["ipv4_dst"] = address
            out.append(flow(tables.CLASSIFY.id, TUNNEL_IN, match, receive,
                            goto=tables.PERSONALITY_INGRESS.id, cookie=cookie))
    out.append(flow(tables.CLASSIFY.id, TUNNEL_DROP, {"in_port": ofport}, cookie=cookie))
    return out
