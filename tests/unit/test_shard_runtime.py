"""The shard runtime on a hub over fake switches: leases over RAP, translation flows,
a forced rotation carried through, drain and release, expiry, restart."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from controller.core.hub import ROUTER_MAC
from controller.core.interfaces import interface_id
from controller.rap import protocol as rap
from controller.rap.protocol import Message, Type
from controller.features.shard.records import LEASE, RESOURCE, ROTATION
from controller.pipeline import tables
from controller.pipeline.actions import Conntrack
from controller.features.shard.translate import PUNT_METER
from controller.probes import parse_udp, udp_frame
from tests.unit.hubtest import A, H1_IP, H1_MAC, SUBNETS, Fabric, run

POOL = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/26",
        "rap": {"port": 6699, "lease": 60}}
KEY = "k3y-of-web-1"
EXTERNAL = "198.51.100.70"
GATEWAY = "10.0.1.1"
CLIENT_PORT = 40000


class Client:
    """The resource's end, by hand: messages encoded as hub-rap would."""

    def __init__(self, fab: Fabric) -> None:
        self.fab = fab
        self.counter = 100
        self.epoch = 0
        self.ip = H1_IP
        self.seen = 0

    def send(self, type_: Type, address: str | None = None, *, counter: int | None = None,
             key: str = KEY, epoch: int | None = None) -> None:
        if counter is None:
            self.counter += 1
            counter = self.counter
        msg = Message(type_, "web-1", counter, rap.new_nonce(),
                      self.epoch if epoch is None else epoch,
                      address=IPv4Address(address) if address else None)
        data = rap.encode(msg, rap.key_bytes(key))
        frame = udp_frame(H1_MAC, ROUTER_MAC, self.ip, GATEWAY, CLIENT_PORT, 6699, data)
        self.fab.hub.packet_in(A, tables.SHARD_EDGE.id, 2, frame)
        run(self.fab.hub)

    def answers(self) -> list[Message]:
        out = []
        for data, actions, _ in self.fab.a.sent[self.seen:]:
            dgram = parse_udp(data)
            if dgram is None or dgram.sport != 6699:
                continue
            assert (dgram.ip_src, dgram.ip_dst, dgram.dport) == (GATEWAY, self.ip, CLIENT_PORT)
            out.append(rap.decode(dgram.payload, lambda rid: rap.key_bytes(KEY)))
        self.seen = len(self.fab.a.sent)
        if out:
            self.epoch = out[-1].epoch
        return out


@pytest.fixture
def fab() -> Fabric:
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    f.connect()
    f.settle()
    f.learn()                                   # H1 on A port 2: its interface record
    f.store.put("shard-pool", "web", POOL)
    f.store.put(RESOURCE, "web-1", {"pool_id": "web", "interface_id": interface_id(A, 2),
                                    "external_ip": EXTERNAL, "key": KEY, "index": 3,
                                    "created_at": 0})
    f.hub.documents_changed("shard-pool")
    f.settle()
    return f


def nat_targets(fab: Fabric) -> set[str]:
    return {a.nat.dst for f in fab.a.flows.values() if f.table == tables.SHARD_IN_CT.id
            for a in f.actions if isinstance(a, Conntrack) and a.nat and a.nat.dst}


def sources(fab: Fabric) -> set[str]:
    return {dict(f.match)["ipv4_src"] for f in fab.a.flows.values()
            if f.table == tables.SHARD_EDGE.id and "ipv4_src" in dict(f.match)}


def leased(fab: Fabric) -> tuple[Client, str]:
    c = Client(fab)
    c.send(Type.REGISTER)
    (offer,) = c.answers()
    assert offer.type == Type.OFFER and offer.lease.prefix == 28 and offer.lease.valid == 60
    address = str(offer.lease.address)
    assert IPv4Address(address) in IPv4Network("10.200.0.0/16")
    assert nat_targets(fab) == set()            # no translation before the ACK
    c.ip = address                              # the client moved to it, then ACKs from it
    c.send(Type.ACK, address)
    fab.settle()
    return c, address


def test_a_lease_puts_the_translation_in_place_and_renewals_extend_it(fab):
    c, address = leased(fab)
    assert nat_targets(fab) == {address} and sources(fab) == {address}
    external = [f for f in fab.b.flows.values() if f.table == tables.ROUTE.id
                and dict(f.match).get("ipv4_dst") == EXTERNAL]
    assert len(external) == 1                   # every switch routes the external address
    assert PUNT_METER in fab.a.meter_table and PUNT_METER not in fab.b.meter_table
    lease = fab.store.get(LEASE, "web-1").body
    assert lease["state"] == "leased" and lease["address"] == address
    fab.wall.advance(30)
    c.send(Type.RENEW, address)
    (offer,) = c.answers()
    assert offer.type == Type.OFFER and str(offer.lease.address) == address
    assert fab.store.get(LEASE, "web-1").body["expires_at"] == pytest.approx(fab.wall() + 60)


def test_forged_replayed_and_stale_messages_get_no_answer_and_are_counted(fab):
    c, address = leased(fab)
    registry = fab.hub.metrics.registry
    c.send(Type.RENEW, address, key="not-the-key")
    c.send(Type.RENEW, address, counter=5)                 # lower than the last: a replay
    c.send(Type.RENEW, address, epoch=c.epoch + 7)         # another epoch: stale
    assert c.answers() == []
    for reason in ("bad_mac", "replay", "stale"):
        assert registry.get_sample_value("hub_rap_rejected_total", {"reason": reason}) == 1
    fab.hub.packet_in(A, tables.SHARD_EDGE.id, 2, b"\x00" * 60)
    run(fab.hub)
    assert registry.get_sample_value("hub_rap_rejected_total", {"reason": "malformed"}) == 1


def test_a_forced_rotation_announces_switches_drains_and_releases(fab):
    c, old = leased(fab)
    answer = fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
    assert answer["state"] == "running"
    (announce,) = c.answers()
    assert announce.type == Type.ANNOUNCE and str(announce.address) == old
    new = str(announce.lease.address)
    assert new != old and nat_targets(fab) == {old}
    c.send(Type.ACK, new)
    fab.settle()
    assert nat_targets(fab) == {new}
    # The old address is released at once: the fake switch counts no connections on it.
    fab.settle()
    fab.settle()
    (release,) = [m for m in c.answers() if m.type == Type.RELEASE]
    assert str(release.address) == old
    assert sources(fab) == {new}
    rotation = fab.store.get(ROTATION, answer["id"]).body
    assert rotation["state"] == "done"
    (step,) = rotation["steps"]
    assert (step["from_address"], step["to_address"], step["state"]) == (old, new, "done")
    state = fab.store.get("shard-state", "web").body
    assert old in {q["address"] for q in state["quarantine"]}


def test_a_move_without_ack_fails_and_the_resource_keeps_its_address(fab):
    c, old = leased(fab)
    answer = fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
    sent = 0
    for _ in range(20):
        fab.clock.advance(1)
        fab.wall.advance(1)
        run(fab.hub)
        sent += sum(m.type == Type.ANNOUNCE for m in c.answers())
    assert 4 <= sent <= 6                       # 1, 2, 4, 8 s apart, then the deadline
    rotation = fab.store.get(ROTATION, answer["id"]).body
    assert rotation["state"] == "failed" and "ACK" in rotation["steps"][0]["message"]
    assert nat_targets(fab) == {old}


def test_a_lease_not_renewed_expires_and_its_flows_go(fab):
    c, address = leased(fab)
    fab.wall.advance(61)
    fab.settle()
    assert nat_targets(fab) == set() and sources(fab) == set()
    assert fab.store.get(LEASE, "web-1").body["state"] == "unleased"
    registry = fab.hub.metrics.registry
    assert registry.get_sample_value("hub_rap_lease_expiries_total", {"pool": "web"}) == 1


def test_a_restarted_hub_keeps_the_lease_and_its_flows(fab):
    c, address = leased(fab)
    before = {f for f in fab.a.flows.values() if f.table in (tables.SHARD_IN_CT.id,
                                                              tables.SHARD_EDGE.id)}
    fab.hub = fab.make_hub()
    fab.connect()
    fab.settle()
    after = {f for f in fab.a.flows.values() if f.table in (tables.SHARD_IN_CT.id,
                                                             tables.SHARD_EDGE.id)}
    assert after == before
    c.send(Type.RENEW, address)                 # the epoch it knows is still accepted
    (offer,) = c.answers()
    assert offer.type == Type.OFFER and offer.epoch != 0


def test_a_resource_released_in_the_middle_of_a_move_ends_its_round(fab):
    c, old = leased(fab)
    answer = fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
    assert [m.type for m in c.answers()] == [Type.ANNOUNCE]
    fab.store.delete(RESOURCE, "web-1")
    fab.hub.documents_changed(RESOURCE)
    fab.settle()
    rotation = fab.store.get(ROTATION, answer["id"]).body
    assert rotation["state"] == "failed" and "abandoned" in rotation["steps"][0]["message"]
    assert fab.store.find(LEASE, "web-1") is None and nat_targets(fab) == set()
    state = fab.store.get("shard-state", "web").body
    assert old in {q["address"] for q in state["quarantine"]}


def test_a_pools_stats_gather_its_metrics(fab):
    from controller.features.shard.cli_stats import stats_text
    from controller.features.shard.stats_api import stats
    c, old = leased(fab)
    c.send(Type.RENEW, old)
    fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
    (announce,) = [m for m in c.answers() if m.type == Type.ANNOUNCE]
    c.send(Type.ACK, str(announce.lease.address))
    fab.settle()
    fab.settle()
    s = stats(fab.hub.metrics.registry, "web")
    assert s["rounds"] == {"forced": 1} and s["moves"] == {"moved": 1}
    assert s["lease_renewals"] == 1 and s["announce_to_realized"]["count"] == 1
    assert s["rap_rtt"]["count"] >= 2                   # the OFFER and the ANNOUNCE, ACKed
    assert s["shards"]["active"] >= 1 and 0 < s["utilization"] <= 1
    text = stats_text(s)
    assert "moves                 moved 1" in text and "announce -> realized  1, mean" in text


def test_rounds_run_every_rotation_interval_whatever_else_started_rounds(fab):
    c, address = leased(fab)
    registry = fab.hub.metrics.registry
    for step in range(21):                      # 10.5 minutes; the interval is 10
        fab.wall.advance(30)
        fab.clock.advance(30)
        c.send(Type.RENEW, c.ip)
        for m in c.answers():                   # follow every move, as hub-rap does
            if m.type == Type.ANNOUNCE:
                c.ip = str(m.lease.address)
                c.send(Type.ACK, c.ip)
        if step % 3 == 0:                       # a forced round every 1.5 minutes
            fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
        fab.settle()
    interval = registry.get_sample_value("hub_shard_rotation_rounds_total",
                                         {"pool": "web", "reason": "interval"})
    assert interval == 1                        # 10 minutes after the first tick, not reset
    assert registry.get_sample_value("hub_shard_rotation_rounds_total",
                                     {"pool": "web", "reason": "forced"}) == 7


def test_a_move_in_flight_goes_on_after_a_restart(fab):
    c, old = leased(fab)
    answer = fab.query("shard", "rotate", pool_id="web", resources=["web-1"])
    (first,) = c.answers()
    fab.hub = fab.make_hub()                    # the controller restarts mid-move
    fab.connect()
    fab.settle()
    again = [m for m in c.answers() if m.type == Type.ANNOUNCE]
    assert again and again[0].lease.address == first.lease.address   # announced again
    assert again[0].epoch != first.epoch                             # by a new epoch
    c.send(Type.ACK, str(first.lease.address))
    fab.settle()
    assert nat_targets(fab) == {str(first.lease.address)}
    assert fab.store.get(ROTATION, answer["id"]).body["state"] == "done"
