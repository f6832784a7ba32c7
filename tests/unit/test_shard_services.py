"""Shard services (the HRT): the compiled flows, and the router on a hub over fake switches
(pattern -> route -> pinned by packet-out; unknown sessions learned, stored, expired)."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from controller.core import budgets
from controller.core.hub import ROUTER_MAC
from controller.core.interfaces import interface_id
from controller.features.shard.hrt import default_position, extract_session
from controller.features.shard.records import LEASE, RESOURCE
from controller.features.shard.services import (MARK_BITS, ROUTE, SERVICE, SESSION, Service,
                                                ServiceNet, ServicesInput, compile_services,
                                                mark_of, parse_service, route_id)
from controller.features.shard.translate import ResourceNet
from controller.core.documents import DocumentInvalid
from controller.pipeline import tables
from controller.pipeline.actions import CONTROLLER, Conntrack, DecTtl, Multipath, Nat, Output, SetField
from controller.probes import udp_frame
from tests.unit.hubtest import A, B, SUBNETS, Fabric, run

A_PORT_TO_B, B_PORT_TO_A = 1, 2            # hubtest.LINK
R1 = ResourceNet("web-1", "web", A, 2, "00:00:00:00:01:0a", 0xA000, "198.51.100.70",
                 "10.0.1.1", 6699, "10.200.0.5", ("10.200.0.5",))
R2 = ResourceNet("web-2", "web", A, 3, "00:00:00:00:01:0b", 0xA001, "198.51.100.71",
                 "10.0.1.1", 6699, "10.200.0.6", ("10.200.0.6",))
R3 = ResourceNet("web-3", "web", B, 4, "00:00:00:00:02:0c", 0xA002, "198.51.100.72",
                 "10.0.2.1", 6699, "10.200.0.7", ("10.200.0.7",))
HOPS = {A: {B: A_PORT_TO_B}, B: {A: B_PORT_TO_A}}
HASHED = Service("dns", "web", "198.51.100.81", "udp", 53, ("web-1", "web-2", "web-3"), None,
                 600, 1)
GAME = Service("game", "web", "198.51.100.80", "udp", 7777, ("web-1", "web-2"),
               r"session=(\w+)", 600, 0)


def compiled(*nets: ServiceNet) -> dict[int, list]:
    return compile_services(ServicesInput(frozenset({A, B}), ROUTER_MAC, HOPS, nets))


def table(flows, table_id):
    return sorted((f for f in flows if f.table == table_id), key=lambda f: (-f.priority, repr(f)))


def delivered_to(f) -> tuple[str, int | None]:
    """(the MAC a shard_service flow writes, its output port or None when it goes to shard_in)."""
    mac = next(a.value for a in f.actions if isinstance(a, SetField) and a.field == "eth_dst")
    out = [a.port for a in f.actions if isinstance(a, Output)]
    assert (f.goto == tables.SHARD_IN.id) == (not out), f
    return mac, out[0] if out else None


# -- compile ---------------------------------------------------------------------------

def test_a_hashed_service_spreads_by_multipath_into_one_bucket_per_resource():
    flows = compiled(ServiceNet(HASHED, (R1, R2, R3)))
    for dpid in (A, B):
        (route,) = [f for f in flows[dpid] if f.table == tables.ROUTE.id]
        assert dict(route.match) == {"eth_dst": ROUTER_MAC, "eth_type": 0x0800, "ip_proto": 17,
                                     "ipv4_dst": HASHED.external_ip, "udp_dst": 53}
        assert route.actions == (Multipath(3, "reg1"),) and route.goto == tables.SHARD_SERVICE.id
        assert route.priority in range(321, 340)
    buckets = {dict(f.match)["reg1"]: delivered_to(f)
               for f in table(flows[A], tables.SHARD_SERVICE.id)}
    assert buckets == {0: (R1.mac, None), 1: (R2.mac, None), 2: (R3.mac, A_PORT_TO_B)}
    on_b = {dict(f.match)["reg1"]: delivered_to(f) for f in table(flows[B], tables.SHARD_SERVICE.id)}
    assert on_b == {0: (R1.mac, B_PORT_TO_A), 1: (R2.mac, B_PORT_TO_A), 2: (R3.mac, None)}
    f = table(flows[A], tables.SHARD_SERVICE.id)[0]
    assert f.actions[:3] == (SetField("eth_src", ROUTER_MAC), SetField("eth_dst", R1.mac), DecTtl())


def test_a_resource_without_an_address_gives_its_bucket_to_the_next_and_the_others_stay():
    flows = compiled(ServiceNet(HASHED, (R1, None, R3)))
    buckets = {dict(f.match)["reg1"]: delivered_to(f)[0]
               for f in table(flows[A], tables.SHARD_SERVICE.id)}
    assert buckets == {0: R1.mac, 1: R3.mac, 2: R3.mac}
    (route,) = [f for f in flows[A] if f.table == tables.ROUTE.id]
    assert route.actions == (Multipath(3, "reg1"),)     # the hash itself does not change


def test_client_prefix_routes_come_before_the_hash_longest_first():
    tcp = Service("web", "web", "198.51.100.82", "tcp", 443, ("web-1", "web-2"), None, 600, 2)
    prefixes = ((IPv4Network("10.9.0.0/16"), 1), (IPv4Network("10.9.1.0/24"), 0))
    flows = table(compiled(ServiceNet(tcp, (R1, R2), prefixes))[A], tables.SHARD_SERVICE.id)
    top = [(dict(f.match).get("ipv4_src"), f.priority, delivered_to(f)[0]) for f in flows[:2]]
    assert top == [(("10.9.1.0", "255.255.255.0"), 224, R1.mac),
                   (("10.9.0.0", "255.255.0.0"), 216, R2.mac)]
    assert all("reg1" in dict(f.match) and f.priority < 216 for f in flows[2:])
    (route,) = [f for f in compiled(ServiceNet(tcp, (R1, R2)))[B] if f.table == tables.ROUTE.id]
    assert dict(route.match)["tcp_dst"] == 443 and dict(route.match)["ip_proto"] == 6


def test_a_patterned_service_tracks_in_its_zone_follows_the_mark_and_punts_the_unpinned():
    flows = compiled(ServiceNet(GAME, (R1, R2)))
    (route,) = [f for f in flows[B] if f.table == tables.ROUTE.id]
    assert route.actions == (Conntrack(zone=0xB000, table=tables.SHARD_SERVICE.id),)
    decisions = table(flows[B], tables.SHARD_SERVICE.id)
    pinned = {dict(f.match)["ct_mark"]: delivered_to(f) for f in decisions if f.priority == 100}
    assert pinned == {(0x10000, 0xF0000): (R1.mac, B_PORT_TO_A),
                      (0x20000, 0xF0000): (R2.mac, B_PORT_TO_A)}
    (punt,) = [f for f in decisions if f.actions == (Output.controller(),)]
    assert dict(punt.match)["ct_state"] == (0x21, 0x21) and punt.priority < 100
    assert mark_of(0) == 0x10000 and mark_of(14) == 0xF0000 and MARK_BITS.mask == 0xF0000
    with pytest.raises(ValueError):
        mark_of(15)


def test_each_resource_switch_translates_the_service_to_the_current_shard_address():
    flows = compiled(ServiceNet(GAME, (R1, R2)))[A]
    for r in (R1, R2):
        (inbound,) = [f for f in flows if f.table == tables.SHARD_IN.id
                      and dict(f.match)["eth_dst"] == r.mac]
        assert dict(inbound.match) == {"eth_dst": r.mac, "eth_type": 0x0800, "ip_proto": 17,
                                       "ipv4_dst": GAME.external_ip, "udp_dst": 7777}
        assert inbound.actions == (Conntrack(zone=r.zone, nat=Nat(),
                                             table=tables.SHARD_IN_CT.id),)
        (new,) = [f for f in flows if f.table == tables.SHARD_IN_CT.id
                  and dict(f.match)["eth_dst"] == r.mac]
        assert new.actions == (Conntrack(commit=True, zone=r.zone, nat=Nat(dst=r.address),
                                         table=tables.SHARD_DELIVER.id),)
    assert not [f for f in compiled(ServiceNet(GAME, (R1, R2)))[B] if f.table == tables.SHARD_IN.id]


def test_service_flows_keep_to_the_shard_budget_and_compile_the_same_twice():
    nets = (ServiceNet(GAME, (R1, R2)), ServiceNet(HASHED, (R1, None, R3),
                                                   ((IPv4Network("10.0.0.0/8"), 2),)))
    first, again = compiled(*nets), compiled(*nets)
    assert first == again
    assert budgets.audit(f for flows in first.values() for f in flows) == []
    without = compiled(nets[1])
    for dpid in (A, B):
        gone = set(first[dpid]) - set(without[dpid])
        assert gone and {f.cookie for f in gone} == {first[dpid][0].cookie}


# -- the document ----------------------------------------------------------------------

def refused(body) -> dict[str, str]:
    with pytest.raises(DocumentInvalid) as exc:
        parse_service(body)
    return {e["field"]: e["reason"] for e in exc.value.errors}


BODY = {"external_ip": "198.51.100.80", "protocol": "udp", "port": 7777,
        "resources": ["web-1", "web-2"], "metadata": {"pattern": r"session=(\w+)"}}


def test_a_service_document_names_each_bad_field():
    assert parse_service(BODY).idle_timeout == 600
    assert parse_service({**BODY, "idle_timeout": "2m"}).idle_timeout == 120
    assert "groups" in refused({**BODY, "metadata": {"pattern": r"(a)(b)"}})["body.metadata.pattern"]
    assert "regular expression" in refused({**BODY, "metadata": {"pattern": "("}})[
        "body.metadata.pattern"]
    assert "SYN" in refused({**BODY, "protocol": "tcp"})["body.metadata.pattern"]
    many = [f"r{i}" for i in range(16)]
    assert "15" in refused({**BODY, "resources": many})["body.resources"]
    assert parse_service({**BODY, "resources": many, "metadata": None}).metadata is None
    assert "twice" in refused({**BODY, "resources": ["a", "b", "a"]})["body.resources[2]"]
    assert set(refused({**BODY, "port": 0, "protocol": "sctp"})) == {"body.port", "body.protocol"}


def test_sessions_come_from_the_pattern_group_and_the_default_is_a_stable_hash():
    assert extract_session(r"session=(\w+)", b"\x00\xffhi session=alice;") == "alice"
    assert extract_session(r"session=(\w+)", b"nothing here") is None
    assert extract_session(r"user=(\S+)", "user=jos\u00e9".encode()) == "jos\u00e9"
    picks = {default_position([0, 1], "198.51.100.1", port) for port in range(40000, 40020)}
    assert picks == {0, 1}
    assert default_position([1], "198.51.100.1", 5) == 1
    assert default_position([0, 1], "10.0.0.1", 7) == default_position([0, 1], "10.0.0.1", 7)


# -- the router, on a hub over fake switches --------------------------------------------

CLIENT_IP, CLIENT_MAC, CLIENT_PORT_ON_B = "10.0.2.20", "00:00:00:00:02:0b", 3
ADDRESSES = {"web-1": "10.200.0.5", "web-2": "10.200.0.6"}


def service_body(**over) -> dict:
    return {"pool_id": "web", "external_ip": GAME.external_ip, "protocol": "udp", "port": 7777,
            "resources": ["web-1", "web-2"], "metadata": {"pattern": GAME.pattern},
            "idle_timeout": 600, "index": 0, **over}


@pytest.fixture
def fab() -> Fabric:
    """A and B linked; resources web-1 (A:2) and web-2 (A:3) leased; the patterned service."""
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    f.connect()
    f.settle()
    f.lldp()
    f.learn()
    f.learn(A, 3, R2.mac, "10.0.1.11")
    f.store.put("shard-pool", "web", {"name": "web", "pool": "10.200.0.0/16",
                                      "external_range": "198.51.100.64/26"})
    for index, (rid, port) in enumerate((("web-1", 2), ("web-2", 3))):
        f.store.put(RESOURCE, rid, {"pool_id": "web", "interface_id": interface_id(A, port),
                                    "external_ip": f"198.51.100.{70 + index}", "key": "k",
                                    "index": index, "created_at": 0})
        f.store.put(LEASE, rid, {"state": "leased", "address": ADDRESSES[rid], "shard_id": "s1",
                                 "expires_at": f.wall() + 1e6, "epoch": 1})
    f.store.put(SERVICE, "game", service_body())
    restart(f)                                  # the leases are read when the hub starts
    return f


def restart(f: Fabric) -> None:
    f.hub = f.make_hub()
    f.connect()
    f.settle()
    f.lldp()


def punt(f: Fabric, payload: bytes, sport: int = 40001) -> list[tuple]:
    """The first datagram of a client flow, punted by B's shard_service; what B was sent."""
    frame = udp_frame(CLIENT_MAC, ROUTER_MAC, CLIENT_IP, GAME.external_ip, sport, 7777, payload)
    seen = len(f.b.sent)
    f.hub.packet_in(B, tables.SHARD_SERVICE.id, CLIENT_PORT_ON_B, frame)
    run(f.hub)
    return f.b.sent[seen:]


def pinned_to(f: Fabric, payload: bytes, sport: int = 40001) -> str:
    """The resource the packet-out pins the flow to (checked: one packet-out, the datagram
    itself, in at the client's port, committed in the service's zone with a mark)."""
    (out,) = punt(f, payload, sport)
    data, actions, in_port = out
    assert in_port == CLIENT_PORT_ON_B and data.endswith(payload)
    (ct,) = actions
    assert (ct.commit, ct.zone, ct.table, ct.mark_mask) == (True, 0xB000,
                                                            tables.SHARD_SERVICE.id, 0xF0000)
    return GAME.resources[(ct.mark >> 16) - 1]


def add_route(f: Fabric, session: str, resource: str) -> None:
    f.store.put(ROUTE, route_id("game", session), {"pool_id": "web", "service_id": "game",
                                                   "session": session, "resource_id": resource})
    f.hub.documents_changed(ROUTE)
    run(f.hub)


def test_the_service_flows_are_on_every_switch_and_its_first_datagrams_punted_from_90(fab):
    for sw in (fab.a, fab.b):
        assert [f for f in sw.flows.values() if f.table == tables.SHARD_SERVICE.id
                and f.actions == (Output(CONTROLLER, 0xFFFF),)]
    assert tables.SHARD_SERVICE.id in type(fab.feature("shard")).punt_tables


def test_a_session_with_a_route_goes_to_its_resource_from_any_client_port(fab):
    add_route(fab, "alice", "web-1")
    add_route(fab, "bob", "web-2")
    for sport in (40001, 40002, 40003):
        assert pinned_to(fab, b"hello session=alice", sport) == "web-1"
        assert pinned_to(fab, b"hello session=bob", sport + 100) == "web-2"
    assert fab.store.list(SESSION) == []        # routed sessions are not learned


def elsewhere(resource: str) -> list[int]:
    """Client ports the default hash puts on another resource than `resource`."""
    return [p for p in range(40002, 40200)
            if GAME.resources[default_position([0, 1], CLIENT_IP, p)] != resource]


def test_an_unknown_session_takes_the_default_pick_is_learned_and_kept(fab):
    first = pinned_to(fab, b"session=carol", 40001)
    assert first == GAME.resources[default_position([0, 1], CLIENT_IP, 40001)]
    (doc,) = fab.store.list(SESSION)
    assert (doc.body["session"], doc.body["resource_id"]) == ("carol", first)
    assert doc.body["expires_at"] == fab.wall() + 600
    # Another flow of carol's, from a port the hash puts elsewhere, stays with her resource.
    other, another = elsewhere(first)[:2]
    assert pinned_to(fab, b"session=carol", other) == first
    # A datagram without a session goes where the hash puts it, and nothing is learned.
    assert pinned_to(fab, b"no id", another) != first
    assert len(fab.store.list(SESSION)) == 1
    registry = fab.hub.metrics.registry
    assert [registry.get_sample_value("hub_shard_service_decisions_total",
                                      {"service": "game", "by": by})
            for by in ("default", "learned")] == [2, 1]


def test_learned_sessions_survive_a_restart_and_expire_when_idle(fab):
    first = pinned_to(fab, b"session=dave", 40001)
    restart(fab)
    other = elsewhere(first)[0]
    fab.wall.advance(500)
    assert pinned_to(fab, b"session=dave", other) == first      # seen again: idle from now
    fab.wall.advance(550)
    fab.settle()
    assert len(fab.store.list(SESSION)) == 1                    # 550 s idle < 600
    fab.wall.advance(60)
    fab.settle()
    assert fab.store.list(SESSION) == []
    assert pinned_to(fab, b"session=dave", other + 1000) == GAME.resources[
        default_position([0, 1], CLIENT_IP, other + 1000)]


def test_a_flow_punted_again_before_its_pin_took_effect_gets_the_same_answer(fab):
    first = pinned_to(fab, b"session=erin", 40001)
    # A later datagram of the same flow (its pin not in place yet) carries another session:
    # the flow keeps its resource, and that session is not learned from it.
    assert pinned_to(fab, b"session=zed", 40001) == first
    assert [d.body["session"] for d in fab.store.list(SESSION)] == ["erin"]
    add_route(fab, "erin", "web-2" if first == "web-1" else "web-1")   # routes clear the memory
    assert pinned_to(fab, b"session=erin", 40001) != first


def test_a_route_added_takes_over_a_learned_session_for_new_flows(fab):
    first = pinned_to(fab, b"session=frank", 40001)
    target = "web-2" if first == "web-1" else "web-1"
    add_route(fab, "frank", target)
    assert fab.store.list(SESSION) == []                        # the route decides now
    assert pinned_to(fab, b"session=frank", 40002) == target


def test_without_a_resource_with_an_address_nothing_is_sent(fab):
    fab.store.put(SERVICE, "game", service_body(resources=["web-1", "web-2", "gone"]))
    fab.hub.documents_changed(SERVICE)
    run(fab.hub)
    assert pinned_to(fab, b"session=gina", 40001) in ("web-1", "web-2")
    fab.store.put(SERVICE, "game", service_body(resources=["gone"]))
    fab.hub.documents_changed(SERVICE)
    run(fab.hub)
    assert punt(fab, b"session=gina", 40002) == []
    assert 0xB000 in fab.b.flushed              # pinned flows named positions that moved
    registry = fab.hub.metrics.registry
    assert registry.get_sample_value("hub_shard_service_decisions_total",
                                     {"service": "game", "by": "unrouted"}) == 1
