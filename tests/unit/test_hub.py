"""The hub core, driven synchronously with fake switches, an in-memory store and fake clocks."""
from __future__ import annotations

import pytest

from controller.core.discovery import bootstrap_flows
from controller.core.hub import ROUTER_MAC, Hub
from controller.core.topology import Host, Link, Port, dpid_str
from controller.features.fabric.compile import host_cookie
from controller.packets import BROADCAST, ETH_ARP, arp_request, lldp_frame, mac_bytes
from controller.pipeline import cookies, tables
from controller.pipeline.actions import CONTROLLER, LOCAL, TABLE, Output
from controller.pipeline.flowspec import FlowSpec
from controller.reconcile.flows import FlowDiff
from tests.unit.hubtest import (A, B, H1_IP, H1_MAC, H2_IP, H2_MAC, LINK, SUBNETS, Fabric,
                                FakeSwitch, arp_frame, expected_flows, ipv4_frame, ports_a,
                                ports_b, run)


@pytest.fixture
def fab() -> Fabric:
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    return f


@pytest.fixture
def ready(fab) -> Fabric:
    """Both switches connected and settled, the link between them discovered."""
    fab.connect()
    fab.settle()
    fab.lldp()
    for sw in (fab.a, fab.b):
        sw.log.clear()
    return fab


# ----------------------------------------------------------------- tests
def test_connected_switch_gets_lldp_probes_on_each_up_port(fab):
    fab.connect(fab.a)
    assert fab.a.sent == [(lldp_frame(A, p, ROUTER_MAC), [Output(p)], CONTROLLER) for p in (1, 2, 3)]
    assert fab.a.dumps == 1  # realized flows read back on connect
    assert fab.events("datapath") == [("datapath", dpid_str(A), "connected")]
    ev = fab.store.events(kind="datapath")[0]
    assert ev.data == {"of_version": "1.4", "ports": 5, "installed": 0}


def test_port_coming_up_is_probed(fab):
    fab.connect(fab.a)
    fab.a.log.clear()
    fab.hub.port_status(A, Port(4, "a-eth4", True), False)
    run(fab.hub)
    assert fab.a.sent == [(lldp_frame(A, 4, ROUTER_MAC), [Output(4)], CONTROLLER)]


def test_only_the_lldp_punt_until_settled(fab):
    fab.connect()
    fab.clock.advance(0.999)
    run(fab.hub)
    bootstrap = [FlowDiff(add=bootstrap_flows())]
    assert fab.a.applies == bootstrap and fab.b.applies == bootstrap
    assert fab.hub.health()["status"] == "degraded"
    fab.clock.advance(0.001)
    run(fab.hub)
    assert len(fab.a.applies) == 2 and len(fab.b.applies) == 2
    want = expected_flows(fab)
    assert set(fab.a.flows.values()) == want[A]
    assert set(fab.b.flows.values()) == want[B]
    # nothing more to do afterwards
    fab.clock.advance(5)
    run(fab.hub)
    assert len(fab.a.applies) == 2 and len(fab.b.applies) == 2
    assert fab.hub.health()["status"] == "ok"


def test_lldp_creates_and_persists_the_link(fab):
    fab.connect()
    fab.lldp()  # LLDP is handled even while settling
    assert fab.hub.topo.links == {LINK}
    docs = fab.store.list("link")
    assert [(d.id, d.body) for d in docs] == [(LINK.id, {"a_dpid": A, "a_port": 1,
                                                         "b_dpid": B, "b_port": 2})]
    assert ("link", LINK.id, "discovered") in fab.events("link")
    # the same probe again changes nothing
    before = fab.store.last_event_seq()
    fab.lldp()
    assert fab.store.last_event_seq() == before
    fab.settle()
    # link ports are admitted by classify on both ends
    assert (0, 100, (("in_port", 1),)) in fab.a.flows
    assert (0, 100, (("in_port", 2),)) in fab.b.flows


def test_garbage_lldp_is_ignored(ready):
    # cut inside the port id: "12" must not be read as port 1 (that would re-cable A:1)
    truncated = lldp_frame(A, 12, ROUTER_MAC)[:42]
    assert truncated.endswith(b"\x07" + b"1")
    ready.hub.packet_in(B, 0, 3, truncated)
    ready.hub.packet_in(B, 0, 3, lldp_frame(A, 1, ROUTER_MAC)[:30])
    ready.hub.packet_in(B, 0, 3, b"\x00" * 5)
    run(ready.hub)
    assert ready.hub.topo.links == {LINK}


def test_arp_at_classify_learns_host_and_reinjects_after_flows(ready):
    data = ready.learn()
    host = ready.hub.topo.hosts[H1_MAC]
    assert (host.ips, host.dpid, host.port, host.last_seen) == ((H1_IP,), A, 2, ready.wall.now)
    assert ready.store.get("host", H1_MAC).body == {"mac": H1_MAC, "ips": [H1_IP], "dpid": A,
                                                    "port": 2, "last_seen": ready.wall.now}
    ev = ready.store.events(kind="host")
    assert [(e.subject, e.message, e.data) for e in ev] == \
        [(H1_MAC, "learned", {"ips": [H1_IP], "datapath": dpid_str(A), "port": 2})]
    # flows for the host went to both switches, then the packet was re-injected on A
    value, mask = cookies.document_mask(cookies.Feature.FABRIC, f"host:{H1_MAC}")
    kinds = [e[0] for e in ready.a.log]
    assert kinds == ["apply", "out"]
    added = ready.a.log[0][1].add
    assert {f.cookie for f in added} == {host_cookie(host)}
    assert all(f.cookie & mask == value for f in added)
    assert ready.a.log[1] == ("out", data, [Output(TABLE)], 2)
    assert [e[0] for e in ready.b.log] == ["apply"]
    assert (50, 100, (("eth_dst", H1_MAC),)) in ready.b.flows
    assert ready.b.flows[(50, 100, (("eth_dst", H1_MAC),))].actions == (Output(2),)


def test_known_host_is_reinjected_without_a_change(ready):
    ready.learn()
    ready.a.log.clear()
    data = ready.learn()
    assert ready.a.log == [("out", data, [Output(TABLE)], 2)]
    assert len(ready.store.events(kind="host")) == 1


def test_host_moving_is_journaled(ready):
    ready.learn()
    ready.learn(dpid=B, port=3)
    assert (ready.hub.topo.hosts[H1_MAC].dpid, ready.hub.topo.hosts[H1_MAC].port) == (B, 3)
    assert [e.message for e in ready.store.events(kind="host")] == ["learned", "moved"]
    assert ready.a.flows[(50, 100, (("eth_dst", H1_MAC),))].actions == (Output(1),)
    assert (0, 200, (("eth_src", H1_MAC), ("in_port", 2))) not in ready.a.flows


def test_not_learned_on_link_ports_multicast_or_other_ethertypes(ready):
    ready.hub.packet_in(A, 0, 1, arp_frame(1, H1_MAC, H1_IP, "10.0.1.1"))      # link port
    ready.hub.packet_in(A, 0, 2, arp_frame(1, "01:00:00:00:00:01", H1_IP, "10.0.1.1"))
    ready.hub.packet_in(A, 0, 2, mac_bytes(BROADCAST) + mac_bytes(H1_MAC) + b"\x86\xdd" + b"\x00" * 40)
    run(ready.hub)
    assert ready.hub.topo.hosts == {}
    assert ready.store.list("host") == []
    assert ready.a.log == [] and ready.b.log == []


def test_packet_in_while_settling_does_not_learn(fab):
    fab.connect()
    fab.learn()
    assert fab.hub.topo.hosts == {}
    assert fab.store.list("host") == []
    assert fab.a.applies == [FlowDiff(add=bootstrap_flows())]  # LLDP punt only
    assert all(actions != [Output(TABLE)] for _, actions, _ in fab.a.sent)
    # and nothing is re-injected later either
    fab.settle()
    assert all(actions != [Output(TABLE)] for _, actions, _ in fab.a.sent)


def test_host_on_a_port_that_turns_out_to_be_a_link_is_forgotten(fab):
    fab.connect()
    fab.settle()
    fab.learn(dpid=B, port=2)  # before the link is known, B:2 looks like a host port
    assert H1_MAC in fab.hub.topo.hosts
    fab.lldp()
    assert fab.hub.topo.hosts == {}
    assert fab.store.list("host") == []
    assert not any(f.cookie == host_cookie(Host(H1_MAC, (), B, 2)) for f in fab.b.flows.values())


def test_arp_request_at_arp_table_is_flooded_to_edge_ports(ready):
    data = arp_frame(1, H1_MAC, H1_IP, "10.0.1.99")
    ready.hub.packet_in(A, tables.ARP.id, 2, data)
    run(ready.hub)
    # A: edge ports 2 and 3 minus the origin (not the link, not the down port, not LOCAL)
    assert ready.a.sent == [(data, [Output(3)], CONTROLLER)]
    assert ready.b.sent == [(data, [Output(1), Output(3)], CONTROLLER)]
    # an ARP reply punted at the arp table is not flooded
    for sw in (ready.a, ready.b):
        sw.log.clear()
    ready.hub.packet_in(A, tables.ARP.id, 2, arp_frame(2, H1_MAC, H1_IP, "10.0.1.99", dst=H2_MAC))
    run(ready.hub)
    assert ready.a.log == [] and ready.b.log == []


def test_routed_packet_for_unknown_ip_is_probed_at_most_once_per_second(ready):
    data = ipv4_frame(H1_MAC, ROUTER_MAC, H1_IP, "10.0.2.99")
    probe = arp_request(ROUTER_MAC, "10.0.2.1", "10.0.2.99")

    def punt():
        ready.hub.packet_in(A, tables.ROUTE.id, 2, data)
        run(ready.hub)

    punt()
    assert ready.a.sent == [(probe, [Output(2), Output(3)], CONTROLLER)]
    assert ready.b.sent == [(probe, [Output(1), Output(3)], CONTROLLER)]
    punt()
    ready.clock.advance(0.999)
    punt()
    assert len(ready.a.sent) == 1 and len(ready.b.sent) == 1
    ready.clock.advance(0.001)
    punt()
    assert len(ready.a.sent) == 2 and len(ready.b.sent) == 2
    # another address is probed on its own schedule; one outside every subnet never
    ready.hub.packet_in(A, tables.ROUTE.id, 2, ipv4_frame(H1_MAC, ROUTER_MAC, H1_IP, "10.0.1.77"))
    ready.hub.packet_in(A, tables.ROUTE.id, 2, ipv4_frame(H1_MAC, ROUTER_MAC, H1_IP, "8.8.8.8"))
    run(ready.hub)
    assert ready.a.sent[-1] == (arp_request(ROUTER_MAC, "10.0.1.1", "10.0.1.77"),
                                [Output(2), Output(3)], CONTROLLER)
    assert len(ready.a.sent) == 3


def test_port_down_removes_the_link(ready):
    ready.hub.port_status(A, Port(1, "a-eth1", False), False)
    run(ready.hub)
    assert ready.hub.topo.links == set()
    assert ready.store.list("link") == []
    assert ("link", LINK.id, "removed") in ready.events("link")
    assert (0, 100, (("in_port", 1),)) not in ready.a.flows
    assert (0, 100, (("in_port", 2),)) not in ready.b.flows


def test_port_deleted_removes_the_link(ready):
    ready.hub.port_status(B, Port(2, "b-eth2", True), True)
    run(ready.hub)
    assert ready.hub.topo.links == set()
    assert 2 not in ready.hub.topo.switches[B].ports


def test_reconnect_with_the_link_port_down_drops_the_link(ready):
    ports = ports_a()
    ports[0] = Port(1, "a-eth1", False)
    ready.connect(FakeSwitch(A, ports, flows=ready.a.flows))
    assert ready.hub.topo.links == set()
    assert ready.store.list("link") == []


def test_failed_apply_is_journaled_and_retried_with_readback(fab):
    fab.connect()
    fab.a.fail_next_apply = True
    fab.settle()
    assert set(fab.a.flows.values()) == set(bootstrap_flows())
    assert ("reconcile", dpid_str(A), "failed: bundle refused") in fab.events("reconcile")
    assert fab.hub.health()["status"] == "degraded"
    dumps = fab.a.dumps
    run(fab.hub)  # the next batch retries, reading the switch back first
    assert fab.a.dumps == dumps + 1
    assert set(fab.a.flows.values()) == expected_flows(fab)[A]
    assert fab.hub.health()["status"] == "ok"


def test_disconnect_of_an_older_connection_is_ignored(ready):
    stale = ready.a
    fresh = FakeSwitch(A, ports_a(), flows=stale.flows)
    ready.connect(fresh)
    ready.hub.switch_disconnected(A, stale)
    run(ready.hub)
    assert ready.hub.channels[A] is fresh
    ready.hub.switch_disconnected(A, fresh)
    run(ready.hub)
    assert A not in ready.hub.channels
    assert ready.hub.datapath(dpid_str(A))["connected"] is False


def test_restart_reloads_and_pushes_nothing(ready):
    ready.learn()
    ready.learn(dpid=B, port=3, mac=H2_MAC, ip=H2_IP)
    flows_a, flows_b = dict(ready.a.flows), dict(ready.b.flows)
    assert len(flows_a) > 20

    again = Fabric(store=ready.store)
    assert again.hub.topo.links == {LINK}
    assert set(again.hub.topo.hosts) == {H1_MAC, H2_MAC}
    assert again.hub.topo.hosts[H2_MAC] == Host(H2_MAC, (H2_IP,), B, 3)
    again.a = FakeSwitch(A, ports_a(), flows=flows_a)
    again.b = FakeSwitch(B, ports_b(), flows=flows_b)
    again.connect()
    again.settle()
    again.lldp()
    run(again.hub)
    assert again.a.applies == [] and again.b.applies == []
    assert again.a.flows == flows_a and again.b.flows == flows_b
    assert again.hub.health()["status"] == "ok"
    assert again.hub.datapath(dpid_str(A))["flows"] == {"desired": len(flows_a),
                                                         "installed": len(flows_a),
                                                         "in_sync": True}


def test_snapshot_shapes(ready):
    ready.learn()
    ready.wall.advance(12.5)
    assert ready.hub.health() == {"status": "ok", "datapaths_connected": 2, "uptime_s": 12.5}
    n_a, n_b = len(ready.a.flows), len(ready.b.flows)
    dps = ready.hub.datapaths()
    assert [d["id"] for d in dps] == [dpid_str(A), dpid_str(B)]
    assert dps[0] == {
        "id": "0000000000000001", "dpid": A, "connected": True, "of_version": "1.4",
        "ports": [{"port_no": 1, "name": "a-eth1", "up": True, "role": "link"},
                  {"port_no": 2, "name": "a-eth2", "up": True, "role": "host"},
                  {"port_no": 3, "name": "a-eth3", "up": True, "role": "host"},
                  {"port_no": 4, "name": "a-eth4", "up": False, "role": "host"},
                  ],  # LOCAL is not listed: it faces the switch itself
        "flows": {"desired": n_a, "installed": n_a, "in_sync": True},
        "last_reconciled_at": 1_700_000_000.0,
    }
    assert dps[1]["flows"] == {"desired": n_b, "installed": n_b, "in_sync": True}
    assert ready.hub.datapath("0000000000000002") == dps[1]
    assert ready.hub.datapath("00000000000000FF") is None
    assert ready.hub.topology() == {
        "switches": [{"id": "0000000000000001", "dpid": 1, "connected": True},
                     {"id": "0000000000000002", "dpid": 2, "connected": True}],
        "links": [{"src": {"datapath": "0000000000000001", "port_no": 1},
                   "dst": {"datapath": "0000000000000002", "port_no": 2}}],
        "hosts": [{"mac": H1_MAC, "ips": [H1_IP], "datapath": "0000000000000001",
                   "port_no": 2, "last_seen": 1_700_000_000.0}],
    }


def test_snapshot_before_any_work_and_while_settling(fab):
    assert fab.hub.health() == {"status": "ok", "datapaths_connected": 0, "uptime_s": 0.0}
    assert fab.hub.datapaths() == [] and fab.hub.topology() == {"switches": [], "links": [],
                                                                 "hosts": []}
    fab.connect(fab.a)
    d = fab.hub.datapath(dpid_str(A))
    assert d["flows"] == {"desired": 0, "installed": 1, "in_sync": False}
    assert d["last_reconciled_at"] is None
    assert fab.hub.health()["status"] == "degraded"


def test_subnet_reload_recompiles(ready):
    ready.store.put("subnet", "green", {"cidr": "10.0.3.0/24", "gateway": "10.0.3.1"})
    ready.hub.documents_changed("subnet")
    run(ready.hub)
    key = (10, 300, (("arp_op", 1), ("arp_tpa", "10.0.3.1"), ("eth_type", ETH_ARP)))
    assert key in ready.a.flows and key in ready.b.flows
    assert len(ready.a.applies) == 1 and ready.a.applies[0].delete == ()


def test_two_features_cannot_own_one_punt_table_or_document_kind():
    from controller.core.feature import Feature, FeatureFactory
    from controller.store import open_store

    def feature(name: str, tables_=frozenset(), kinds=()):
        cls = type(name, (Feature,), {"name": name, "punt_tables": frozenset(tables_),
                                      "document_kinds": tuple(kinds)})
        return FeatureFactory(name, cls)
    with pytest.raises(ValueError, match="punts from table 50"):
        Hub(open_store(":memory:"), features=[feature("a", {50}), feature("b", {50})])
    with pytest.raises(ValueError, match="owns documents of kind 'x'"):
        Hub(open_store(":memory:"), features=[feature("a", kinds=["x"]),
                                              feature("b", kinds=["x"])])
    hub = Hub(open_store(":memory:"), features=[feature("a", {50}, ["x"]), feature("b", {60})])
    assert [f.name for f in hub.features] == ["a", "b"]
