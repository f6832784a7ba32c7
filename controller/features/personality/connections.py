"""An interface's live connections, recorded by the switch itself and read back.

Each packet an interface's firewall lets through (the count tables of
`controller.features.personality.compile`) runs `learn_connection`, which
keeps one flow per connection in personality_connections, a table no packet
visits: its cookie names the interface and zone (`connection_cookie`), its
hard timeout ends a connection silent for `CONNECTION_IDLE_SECONDS`.  A
personality change counts them with aggregate stats while it drains;
`decode_connection` shows one to people.

The learned flow's match fields reg0..reg4 are a key, not packet state: no
packet ever meets them, so they take nothing of the register budget.
"""
from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, Mapping

from controller.features.personality.interface import Interface, connection_cookie
from controller.features.personality.policy import IP_PROTOS, PORT_FIELDS
from controller.pipeline import tables
from controller.pipeline.actions import Learn, LearnMatch

CONNECTION_IDLE_SECONDS = 3  # a connection silent this long no longer counts as live


def learn_connection(interface: Interface, zone: int, direction: str,
                     protocol: str | None) -> Learn:
    """Record the packet's connection as a flow in personality_connections.

    The learned flow is keyed the same way from both directions (local
    address and port in reg0/reg2[0..15], the peer's in reg1/reg2[16..31],
    the IP protocol in reg3, the interface's port in reg4), so a connection
    is one flow however many packets it carries either way.
    """
    local, peer = ("ipv4_src", "ipv4_dst") if direction == "egress" else ("ipv4_dst", "ipv4_src")
    specs = [LearnMatch("reg0", 32, src=local), LearnMatch("reg1", 32, src=peer),
             LearnMatch("reg3", 8, src="ip_proto"), LearnMatch("reg4", 32, value=interface.port)]
    if protocol is not None:
        ends = ("src", "dst") if direction == "egress" else ("dst", "src")
        specs += [LearnMatch("reg2", 16, 0, src=f"{protocol}_{ends[0]}"),
                  LearnMatch("reg2", 16, 16, src=f"{protocol}_{ends[1]}")]
    return Learn(table=tables.PERSONALITY_CONNECTIONS.id,
                 cookie=connection_cookie(interface, zone),
                 hard_timeout=CONNECTION_IDLE_SECONDS, priority=1, specs=tuple(specs))


def decode_connection(match: Mapping[str, Any]) -> dict[str, Any]:
    """A learned flow's match (reg0..reg4) as {"protocol", "local", "peer"} for people."""
    def ip(v: Any) -> str:
        return str(IPv4Address(v if isinstance(v, int) else v[0]))
    proto = int(match.get("reg3", 0) if not isinstance(match.get("reg3"), tuple) else match["reg3"][0])
    name = {v: k for k, v in IP_PROTOS.items()}.get(proto, str(proto))
    ports = match.get("reg2")
    ports = ports[0] if isinstance(ports, tuple) else ports
    local, peer = ip(match.get("reg0", 0)), ip(match.get("reg1", 0))
    if ports is not None and name in PORT_FIELDS:
        local, peer = f"{local}:{ports & 0xFFFF}", f"{peer}:{ports >> 16}"
    return {"protocol": name, "local": local, "peer": peer}
