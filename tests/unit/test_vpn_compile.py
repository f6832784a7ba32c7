"""The VPN compiler: the tunnel port a personality needs, and the flows that use it."""
from __future__ import annotations

from ipaddress import IPv4Network

from controller.features.personality.compile import (ROUTE_BASE, Context, Interface, PersonalityPolicy,
                                            compile_personality, compile_transition,
                                            transition_cookie)
from controller.features.personality.document import VpnTunnelConfig
from controller.features.personality.vpn import (TUNNEL_DROP, TUNNEL_IN, TUNNEL_ROUTE_BASE, TunnelPort,
                                    VpnTunnel, compile_vpn, is_tunnel_port_name, tunnel_port,
                                    tunnel_port_name)
from controller.pipeline import cookies, tables
from controller.pipeline.actions import DecTtl, Output, SetField
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import flow

MAC, IP = "00:00:00:00:01:0a", "10.0.1.10"
ROUTER = "02:b5:00:00:00:01"
IFACE = Interface(0xA01, 3, MAC)
IPV4 = 0x0800
VPN = {"type": "vxlan", "remote_ip": "198.18.71.2", "key": 5001,
       "remote_prefixes": ["172.16.5.0/24", "172.16.0.0/12"]}
BODY = {"name": "vpn", "ip_addresses": [IP], "default_action": "allow", "vpn_tunnel_config": VPN,
        "routing_table": [{"destination": "172.16.0.0/16", "next_hop": "10.0.1.20"}]}
C = cookies.make(Feature.PERSONALITY, "vpn", 2)


def vpn(**kw) -> VpnTunnel:
    """The tunnel of `VPN` changed by `kw`, parsed by the document model (which checks it)."""
    tunnel = VpnTunnel.of(VpnTunnelConfig.model_validate({**VPN, **kw}))
    assert tunnel is not None
    return tunnel


def test_config_is_converted_prefixes_sorted_once_each():
    t = vpn()
    assert (t.type, t.remote_ip, t.key) == ("vxlan", "198.18.71.2", 5001)
    assert t.remote_prefixes == (IPv4Network("172.16.0.0/12"), IPv4Network("172.16.5.0/24"))
    assert vpn(remote_prefixes=["10.9.0.0/16", "10.8.0.0/16", "10.9.0.0/16"]).remote_prefixes == (
        IPv4Network("10.8.0.0/16"), IPv4Network("10.9.0.0/16"))
    assert VpnTunnel.of(None) is None
    assert vpn(key=None).key is None
    assert vpn(type="gre", key=2**32 - 1).key == 2**32 - 1


def test_port_names_fit_and_change_with_the_tunnel():
    port = tunnel_port(IFACE, vpn())
    assert port == TunnelPort(0xA01, port.name, "vxlan", "198.18.71.2", 5001, "0000000000000a01:3")
    assert len(port.name) <= 15 and port.name.startswith("hsv") and is_tunnel_port_name(port.name)
    assert port.options == {"remote_ip": "198.18.71.2", "key": "5001"}
    assert port.external_ids == {"hubshift-datapath": "0000000000000a01",
                                 "hubshift-interface": "0000000000000a01:3"}
    assert tunnel_port(IFACE, vpn(key=None)).options == {"remote_ip": "198.18.71.2"}
    # Stable for the same tunnel (prefixes do not matter), different for another one.
    assert tunnel_port_name(0xA01, 3, vpn(remote_prefixes=["10.9.0.0/16"])) == port.name
    others = {tunnel_port_name(0xA01, 4, vpn()), tunnel_port_name(0xA02, 3, vpn()),
              tunnel_port_name(0xA01, 3, vpn(key=5002)),
              tunnel_port_name(0xA01, 3, vpn(remote_ip="198.18.71.3"))}
    assert len(others) == 4 and port.name not in others
    assert tunnel_port(IFACE, vpn(type="gre")).name.startswith("hsg")
    assert tunnel_port(IFACE, vpn(type="geneve")).name.startswith("hsn")
    assert not is_tunnel_port_name("vpa1-eth3") and not is_tunnel_port_name("hsv1234")
    assert vpn(key=None).key is None and tunnel_port(IFACE, vpn(key=None)).endpoint[2] == 0


def test_flows_exactly():
    got = compile_vpn(IFACE, vpn(), (IP,), 9, ROUTER, C)
    egress = {"in_port": 3, "eth_src": MAC, "eth_type": IPV4, "eth_dst": ROUTER}
    send = [SetField("eth_src", ROUTER), SetField("eth_dst", ROUTER), DecTtl(), Output(9)]
    receive = [SetField("eth_src", ROUTER), SetField("eth_dst", MAC), DecTtl()]
    want = [
        flow(5, TUNNEL_ROUTE_BASE + 12, {**egress, "ipv4_dst": "172.16.0.0/12"}, send, cookie=C),
        flow(5, TUNNEL_ROUTE_BASE + 24, {**egress, "ipv4_dst": "172.16.5.0/24"}, send, cookie=C),
        flow(0, TUNNEL_IN, {"in_port": 9, "eth_type": IPV4, "ipv4_src": "172.16.0.0/12",
                            "ipv4_dst": IP}, receive, goto=60, cookie=C),
        flow(0, TUNNEL_IN, {"in_port": 9, "eth_type": IPV4, "ipv4_src": "172.16.5.0/24",
                            "ipv4_dst": IP}, receive, goto=60, cookie=C),
        flow(0, TUNNEL_DROP, {"in_port": 9}, cookie=C),
    ]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    tables.check(got)
    # Above the personality's plain routes and the fabric's LLDP punt.
    assert TUNNEL_ROUTE_BASE > ROUTE_BASE + 32 and TUNNEL_DROP > 65000 and TUNNEL_IN > TUNNEL_DROP


def test_without_the_port_the_prefixes_are_dropped_not_routed():
    got = compile_vpn(IFACE, vpn(), (IP,), None, ROUTER, C)
    assert {f.table for f in got} == {tables.PERSONALITY_ROUTES.id}
    assert all(f.actions == () and f.goto is None for f in got) and len(got) == 2


def test_no_addresses_and_a_full_tunnel():
    got = compile_vpn(IFACE, vpn(remote_prefixes=["0.0.0.0/0"]), (), 9, ROUTER, C)
    route = [f for f in got if f.table == 5]
    assert len(route) == 1 and "ipv4_dst" not in dict(route[0].match)
    assert route[0].priority == TUNNEL_ROUTE_BASE
    admit = [f for f in got if f.priority == TUNNEL_IN]
    assert len(admit) == 1 and dict(admit[0].match) == {"in_port": 9, "eth_type": IPV4}
    two = compile_vpn(IFACE, vpn(), ("10.0.1.11", IP), 9, ROUTER, C)
    assert len([f for f in two if f.priority == TUNNEL_IN]) == 4


def _ctx(ofport=9) -> Context:
    name = tunnel_port_name(IFACE.dpid, IFACE.port, vpn())
    return Context(router_mac=ROUTER, tunnel_ports={name: ofport} if ofport else {})


def test_personality_adds_its_vpn_with_its_cookie_and_transition_keeps_it():
    policy = PersonalityPolicy.from_body("vpn", BODY, 2)
    assert policy.vpn == vpn()
    flows = compile_personality(IFACE, policy, zone=7, ctx=_ctx())
    expected = compile_vpn(IFACE, vpn(), (IP,), 9, ROUTER, C)
    assert set(expected) <= set(flows)
    # The VPN prefix 172.16.0.0/12 wins over the plain route to 172.16.0.0/16 (longer, but plain).
    routes = sorted((f for f in flows if f.table == 5), key=lambda f: -f.priority)
    assert Output(9) in routes[0].actions and routes[-1].priority == ROUTE_BASE + 16
    # Without the port, the prefixes are dropped; nothing else changes.
    without = set(compile_personality(IFACE, policy, zone=7, ctx=_ctx(None)))
    assert without - set(flows) == {f for f in compile_vpn(IFACE, vpn(), (IP,), None, ROUTER, C)}
    # The transition keeps the tunnel (established VPN connections keep flowing).
    transition = compile_transition(IFACE, policy, 7, _ctx())
    tcookie = transition_cookie(IFACE)
    assert {f.key for f in compile_vpn(IFACE, vpn(), (IP,), 9, ROUTER, tcookie)} <= \
        {f.key for f in transition}
    # A personality without a VPN has none of these flows.
    plain = compile_personality(IFACE, PersonalityPolicy.from_body("p", {"name": "p", "ip_addresses": [IP]}),
                                zone=7, ctx=_ctx())
    assert not [f for f in plain if f.priority in (TUNNEL_IN, TUNNEL_DROP)]
