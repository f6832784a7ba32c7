"""The base fabric compiler: exact flows for a small fabric, and its invariants."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core.discovery import bootstrap_flows
from controller.features.fabric.compile import (BASE, ETH_ARP, ETH_IPV4, FabricInput,
                                       arp_responder, compile_fabric, host_cookie,
                                       icmp_echo_responder, subnet_cookie)
from controller.pipeline import cookies, tables
from controller.pipeline.actions import IN_PORT, DecTtl, Move, Output, SetField
from controller.pipeline.cookies import Feature
from controller.pipeline.flowspec import flow, make_match
from controller.core.topology import Host, Link, Subnet, next_hops, subnet_of

ROUTER = "02:b5:00:00:00:01"
CORE, LEAF_A, LEAF_B = 1, 2, 3
# core port 1 -> leaf A port 1; core port 2 -> leaf B port 1
LINKS = frozenset({Link.of(CORE, 1, LEAF_A, 1), Link.of(CORE, 2, LEAF_B, 1)})
BLUE = Subnet.from_body("blue", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}, 2)
RED = Subnet.from_body("red", {"cidr": "10.0.2.0/24", "gateway": "10.0.2.1"})
H1 = Host("00:00:00:00:01:01", ("10.0.1.10",), LEAF_A, 3)
H2 = Host("00:00:00:00:02:02", ("10.0.2.20",), LEAF_B, 3)
H3 = Host("00:00:00:00:01:03", ("10.0.1.11", "10.0.1.12"), LEAF_B, 4)
HOSTS = (H1, H2, H3)
# where each host is reached from each switch
PORT_TOWARD = {
    H1: {CORE: 1, LEAF_A: 3, LEAF_B: 1},
    H2: {CORE: 2, LEAF_A: 1, LEAF_B: 3},
    H3: {CORE: 2, LEAF_A: 1, LEAF_B: 4},
}


def fabric(hosts=HOSTS, links=LINKS, switches=(CORE, LEAF_A, LEAF_B), subnets=(BLUE, RED)):
    return FabricInput(frozenset(switches), frozenset(links), tuple(hosts), tuple(subnets), ROUTER)


@pytest.fixture(scope="module")
def compiled():
    return compile_fabric(fabric())


def by_key(flows):
    return {f.key: f for f in flows}


def test_compiles_every_switch(compiled):
    assert sorted(compiled) == [CORE, LEAF_A, LEAF_B]
    for flows in compiled.values():
        assert len(by_key(flows)) == len(flows)  # one flow per identity


def test_table_miss_flows_on_every_switch(compiled):
    for flows in compiled.values():
        k = by_key(flows)
        # classify: unknown sources are dropped, except ARP/IPv4 (host discovery)
        assert k[(0, 0, ())] == flow(0, 0, cookie=BASE)
        for eth_type in (ETH_ARP, ETH_IPV4):
            assert k[(0, 10, make_match({"eth_type": eth_type}))] == \
                flow(0, 10, {"eth_type": eth_type}, [Output.controller()], cookie=BASE)
        assert k[(10, 0, ())] == flow(10, 0, goto=40, cookie=BASE)
        assert k[(40, 0, ())] == flow(40, 0, goto=50, cookie=BASE)
        assert k[(50, 0, ())] == flow(50, 0, cookie=BASE)
        assert not any(f in flows for f in bootstrap_flows())  # the core's, not the fabric's
        assert k[(10, 100, make_match({"eth_type": ETH_ARP, "arp_op": 1}))].actions == \
            (Output.controller(),)
        assert k[(10, 110, make_match({"eth_type": ETH_ARP, "arp_op": 2}))].goto == 40
        assert k[(40, 100, make_match({"eth_dst": ROUTER, "eth_type": ETH_IPV4}))].actions == \
            (Output.controller(),)


def test_arp_responders_for_every_gateway_and_host_ip(compiled):
    for flows in compiled.values():
        k = by_key(flows)
        for subnet in (BLUE, RED):
            gw = str(subnet.gateway)
            f = k[(10, 300, make_match({"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": gw}))]
            assert f.actions == arp_responder(ROUTER, gw)
            assert f.cookie == subnet_cookie(subnet)
            ping = k[(40, 300, make_match({"eth_dst": ROUTER, "eth_type": ETH_IPV4,
                                           "ip_proto": 1, "icmpv4_type": 8, "ipv4_dst": gw}))]
            assert ping.actions == icmp_echo_responder(ROUTER, gw)
            assert ping.goto == tables.L2.id and ping.cookie == subnet_cookie(subnet)
        for host in HOSTS:
            for ip in host.ips:
                f = k[(10, 200, make_match({"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip}))]
                assert f.actions == arp_responder(host.mac, ip)
                assert f.cookie == host_cookie(host)
        arp_replies = [f for f in flows if f.table == 10 and f.priority in (200, 300)]
        assert len(arp_replies) == 2 + 4


def test_icmp_echo_responder_rewrites_and_leaves_forwarding_to_l2():
    assert icmp_echo_responder(ROUTER, "10.0.1.1") == (
        Move("eth_src", "eth_dst", 48), SetField("eth_src", ROUTER),
        Move("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", "10.0.1.1"),
        SetField("icmpv4_type", 0), Move("reg7", "in_port", 16))
    # no output of its own (IN_PORT or other): l2 forwards the reply, through the ingress
    # firewall of an interface with a personality like any other packet to it
    assert not any(isinstance(a, Output) for a in icmp_echo_responder(ROUTER, "10.0.1.1"))


def _apply(actions, packet):
    """Apply Move/SetField actions to a packet dict (what the switch does to the headers)."""
    p = dict(packet)
    for a in actions:
        if isinstance(a, Move):
            p[a.dst] = p.get(a.src, 0)  # registers start at 0
        elif isinstance(a, SetField):
            p[a.field] = a.value
    return p


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.mac)
def test_echo_reply_can_leave_by_the_port_the_request_came_in(compiled, host):
    """OpenFlow drops output:N when N is the packet's in_port: the reply, sent back by l2
    toward the host that asked, must not still carry the request's in_port (or must use
    IN_PORT)."""
    flows = compiled[host.dpid]
    gw = str(subnet_of(host.ips[0], (BLUE, RED)).gateway)
    request = {"in_port": host.port, "eth_src": host.mac, "eth_dst": ROUTER,
               "eth_type": ETH_IPV4, "ip_proto": 1, "icmpv4_type": 8,
               "ipv4_src": host.ips[0], "ipv4_dst": gw}
    (ping,) = [f for f in flows if f.table == tables.ROUTE.id and f.priority == 300
               and dict(f.match)["ipv4_dst"] == gw]
    reply = _apply(ping.actions, request)
    assert (reply["eth_src"], reply["eth_dst"], reply["ipv4_src"], reply["ipv4_dst"],
            reply["icmpv4_type"]) == (ROUTER, host.mac, gw, host.ips[0], 0)
    (l2,) = [f for f in flows if f.table == ping.goto and dict(f.match).get("eth_dst") == host.mac]
    (out,) = l2.actions
    assert out.port == IN_PORT or out.port != reply.get("in_port"), (
        f"the echo reply would be output to port {out.port}, its own in_port: "
        f"OpenFlow skips that output and the reply is lost")


def test_subnet_cookie_carries_revision():
    info = cookies.parse(subnet_cookie(BLUE))
    assert info.feature is Feature.FABRIC and info.version == 2
    assert info.doc_key == cookies.doc_key("subnet:blue")


def test_l2_flow_for_every_host_on_every_switch(compiled):
    for dpid, flows in compiled.items():
        l2 = {f.match: f for f in flows if f.table == 50 and f.priority == 100}
        assert set(l2) == {make_match({"eth_dst": h.mac}) for h in HOSTS}
        for host in HOSTS:
            f = l2[make_match({"eth_dst": host.mac})]
            assert f.actions == (Output(PORT_TOWARD[host][dpid]),), (dpid, host)
            assert f.cookie == host_cookie(host)
            assert f.goto is None


def test_routed_flows_rewrite_macs_dec_ttl_and_goto_l2(compiled):
    for flows in compiled.values():
        k = by_key(flows)
        routed = [f for f in flows if f.table == 40 and f.priority == 200]
        assert len(routed) == 4
        for host in HOSTS:
            for ip in host.ips:
                f = k[(40, 200, make_match({"eth_dst": ROUTER, "eth_type": ETH_IPV4,
                                             "ipv4_dst": ip}))]
                assert f.actions == (SetField("eth_src", ROUTER), SetField("eth_dst", host.mac),
                                     DecTtl())
                assert f.goto == tables.L2.id
                assert f.cookie == host_cookie(host)


def test_classify_admits_local_hosts_and_link_ports(compiled):
    def admitted(dpid):
        return {f.match: f for f in compiled[dpid] if f.table == 0 and f.priority in (100, 200)}

    assert set(admitted(CORE)) == {make_match({"in_port": 1}), make_match({"in_port": 2})}
    assert set(admitted(LEAF_A)) == {make_match({"in_port": 1}),
                                     make_match({"in_port": 3, "eth_src": H1.mac})}
    assert set(admitted(LEAF_B)) == {make_match({"in_port": 1}),
                                     make_match({"in_port": 3, "eth_src": H2.mac}),
                                     make_match({"in_port": 4, "eth_src": H3.mac})}
    for dpid in compiled:
        for f in admitted(dpid).values():
            assert f.goto == tables.ARP.id and f.actions == ()
    assert admitted(LEAF_A)[make_match({"in_port": 3, "eth_src": H1.mac})].cookie == host_cookie(H1)
    assert admitted(LEAF_A)[make_match({"in_port": 1})].cookie == BASE


def test_exact_flow_count(compiled):
    # 10 base (the LLDP punt is the core's) + link ports + 2x2 subnet
    # + per host (l2 + 2 per ip) + local classify
    assert len(compiled[CORE]) == 10 + 2 + 4 + 3 + 8
    assert len(compiled[LEAF_A]) == 10 + 1 + 4 + 3 + 8 + 1
    assert len(compiled[LEAF_B]) == 10 + 1 + 4 + 3 + 8 + 2


def test_every_flow_passes_the_layout_check(compiled):
    for flows in compiled.values():
        tables.check(flows)
        for f in flows:
            assert cookies.parse(f.cookie).feature is Feature.FABRIC


def test_compiling_twice_is_identical():
    a, b = compile_fabric(fabric()), compile_fabric(fabric())
    assert a == b
    # and independent of input order
    c = compile_fabric(fabric(hosts=tuple(reversed(HOSTS))))
    assert {d: set(f) for d, f in a.items()} == {d: set(f) for d, f in c.items()}


@pytest.mark.parametrize("gone", HOSTS, ids=lambda h: h.mac)
def test_removing_a_host_removes_exactly_its_flows(gone):
    before = compile_fabric(fabric())
    after = compile_fabric(fabric(hosts=[h for h in HOSTS if h != gone]))
    value, mask = cookies.document_mask(Feature.FABRIC, f"host:{gone.mac}")
    for dpid in before:
        own = {f for f in before[dpid] if f.cookie & mask == value}
        assert own  # every switch had flows for it
        assert set(after[dpid]) == set(before[dpid]) - own
        assert not any(f.cookie & mask == value for f in after[dpid])


def test_a_new_link_makes_hosts_reachable():
    apart = compile_fabric(fabric(hosts=(H1, H2), links=(), switches=(LEAF_A, LEAF_B)))
    l2 = lambda flows: {f.match: f.actions for f in flows if f.table == 50 and f.priority == 100}
    assert l2(apart[LEAF_A]) == {make_match({"eth_dst": H1.mac}): (Output(3),)}
    assert l2(apart[LEAF_B]) == {make_match({"eth_dst": H2.mac}): (Output(3),)}
    # an unreachable host gets no ARP answer or route either
    assert not any(f.cookie == host_cookie(H2) for f in apart[LEAF_A])

    joined = compile_fabric(fabric(hosts=(H1, H2), links={Link.of(LEAF_A, 7, LEAF_B, 8)},
                                   switches=(LEAF_A, LEAF_B)))
    assert l2(joined[LEAF_A]) == {make_match({"eth_dst": H1.mac}): (Output(3),),
                                  make_match({"eth_dst": H2.mac}): (Output(7),)}
    assert l2(joined[LEAF_B]) == {make_match({"eth_dst": H1.mac}): (Output(8),),
                                  make_match({"eth_dst": H2.mac}): (Output(3),)}


def test_paths_run_through_switches_not_compiled():
    # only LEAF_A is compiled (others settling): it still routes toward LEAF_B via the core
    only_a = compile_fabric(fabric(switches=(LEAF_A,)))
    assert sorted(only_a) == [LEAF_A]
    assert only_a[LEAF_A] == compile_fabric(fabric())[LEAF_A]


def test_next_hops_simple_chain():
    hops = next_hops({1, 2, 3}, LINKS)
    assert hops == {1: {2: 1, 3: 2}, 2: {1: 1, 3: 1}, 3: {1: 1, 2: 1}}


def test_next_hops_two_cores_ties_toward_lowest_dpid():
    # cores 3 and 4, leaves 1 and 2; port numbers deliberately disagree with dpid order
    links = {Link.of(1, 1, 3, 1), Link.of(1, 2, 4, 1),
             Link.of(2, 2, 3, 2), Link.of(2, 1, 4, 2)}
    hops = next_hops({1, 2, 3, 4}, links)
    assert hops[1][2] == 1  # via core 3 (port 1), not core 4
    assert hops[2][1] == 2  # via core 3 (port 2), not core 4 on port 1
    assert hops[3][4] == 1  # core to core: via leaf 1
    assert hops[4][3] == 1  # via leaf 1 (its port 1)
    assert hops == next_hops([4, 3, 2, 1], list(reversed(sorted(links))))


def test_next_hops_ties_toward_lowest_dpid_on_longer_paths():
    # dst 1 reaches 6 over 1-3-5-6 or 1-2-4-6 (equal length): first hop from 6 is 4 (< 5)
    links = {Link.of(1, 1, 3, 1), Link.of(1, 2, 2, 1), Link.of(3, 2, 5, 1),
             Link.of(2, 2, 4, 1), Link.of(5, 2, 6, 1), Link.of(4, 2, 6, 2)}
    hops = next_hops(range(1, 7), links)
    assert hops[6][1] == 2  # toward 4
    assert hops[1][6] == 2  # toward 2


def test_next_hops_parallel_links_use_lowest_port():
    hops = next_hops({1, 2}, {Link.of(1, 5, 2, 9), Link.of(1, 3, 2, 4)})
    assert hops == {1: {2: 3}, 2: {1: 4}}


def test_next_hops_partitioned():
    hops = next_hops({1, 2, 3}, {Link.of(1, 1, 2, 1)})
    assert hops == {1: {2: 1}, 2: {1: 1}, 3: {}}


def test_subnet_of():
    assert subnet_of("10.0.1.77", (BLUE, RED)) is BLUE
    assert subnet_of("10.0.2.1", (BLUE, RED)) is RED
    assert subnet_of("192.168.0.1", (BLUE, RED)) is None


def test_changed_subnet_revision_changes_only_its_cookies():
    before = compile_fabric(fabric())
    after = compile_fabric(fabric(subnets=(replace(BLUE, revision=3), RED)))
    for dpid in before:
        changed = set(before[dpid]) ^ set(after[dpid])
        assert changed
        assert {cookies.parse(f.cookie).doc_key for f in changed} == {cookies.doc_key("subnet:blue")}
