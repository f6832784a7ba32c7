"""The shadow instance manager on a hub over fake switches: agents by hand (the shadow
protocol's encoder), HELLO, launch, heartbeats and their loss, shrink, findings,
forged and replayed datagrams, restart."""
from __future__ import annotations

from ipaddress import IPv4Interface

import pytest

from controller.agents.channel import Counter, key_bytes, new_nonce
from controller.agents.shadow import protocol as p
from controller.agents.shadow.orders import Assembler
from controller.core.hub import ROUTER_MAC
from controller.core.interfaces import interface_id
from controller.features.shadow.api import runtime_view
from controller.features.shadow.document import AGENT_PORT, FINDING, KIND, SLOT, SLOT_STATE, STATE
from controller.features.shadow.manager import MISS_LIMIT
from controller.pipeline import tables
from controller.probes import parse_udp, udp_frame
from tests.unit.hubtest import A, B, H1_IP, H2_IP, H2_MAC, SUBNETS, Fabric, run

S1_MAC, S1_IP = "00:00:00:00:01:0c", "10.0.1.30"       # slot-1 on A port 3
AGENT_SPORT = 40000
WEB = {"name": "web", "interfaces": [interface_id(A, 2)], "appliance_image": "web --port 80",
       "shadowing": {"shadow_traffic_percentage": 12.5, "shadow_instance_count": 1,
                     "shadow_analysis_profiles": ["IDS_Signature_Scan"]},
       "profiles": {"IDS_Signature_Scan": {"signatures": [{"id": "evil", "content": "EVIL",
                                                           "severity": "high"}]}}}


class Agent:
    """A slot's agent, by hand: messages encoded as hub-shadow-agent would."""

    def __init__(self, fab: Fabric, sid: str, key: str, switch, port: int, mac: str, ip: str,
                 gateway: str) -> None:
        self.fab, self.sid, self.key, self.switch = fab, sid, key, switch
        self.port, self.mac, self.ip, self.gateway = port, mac, ip, gateway
        self.counter = Counter(fab.wall)
        self.epoch, self.seen = 0, 0

    def send(self, body: p.Body, *, counter: int | None = None, key: str | None = None,
             epoch: int | None = None, in_port: int | None = None) -> int:
        counter = self.counter.next() if counter is None else counter
        if epoch is None:
            epoch = 0 if isinstance(body, p.Hello) else self.epoch
        data = p.encode(p.Message(self.sid, counter, new_nonce(), epoch, body),
                        key_bytes(key or self.key))
        frame = udp_frame(self.mac, ROUTER_MAC, self.ip, self.gateway, AGENT_SPORT, AGENT_PORT,
                          data)
        self.fab.hub.packet_in(self.switch.dpid, tables.SHADOW_AGENT.id,
                               self.port if in_port is None else in_port, frame)
        run(self.fab.hub)
        return counter

    def answers(self) -> list[p.Message]:
        out = []
        for data, actions, _ in self.switch.sent[self.seen:]:
            dgram = parse_udp(data)
            if dgram is None or dgram.sport != AGENT_PORT or dgram.ip_dst != self.ip:
                continue
            assert (dgram.ip_src, dgram.dport, dgram.eth_src) == (self.gateway, AGENT_SPORT,
                                                                  ROUTER_MAC)
            assert actions[0].port == self.port
            out.append(p.decode(dgram.payload, lambda sid: key_bytes(self.key)))
        self.seen = len(self.switch.sent)
        if out:
            self.epoch = out[-1].epoch
        return out

    def hello(self) -> int:
        counter = self.send(p.Hello("1", "eth0", ()))
        assert [(m.type, m.body.counter) for m in self.answers()] == [(p.Type.ACK, counter)]
        return counter

    def beat(self, instance_id: str | None, pps: float = 10.0) -> None:
        self.send(p.Heartbeat(instance_id, pps, 0, 0.0, 1.5))


@pytest.fixture
def fab() -> Fabric:
    f = Fabric()
    for id, body in SUBNETS.items():
        f.store.put("subnet", id, body)
    f.load_subnets()
    f.connect()
    f.settle()
    f.learn()                                           # production: H1 on A port 2
    f.learn(A, 3, S1_MAC, S1_IP)
    f.learn(B, 3, H2_MAC, H2_IP)
    f.store.put(SLOT, "slot-1", {"interface_id": interface_id(A, 3), "key": "key-one"})
    f.store.put(SLOT, "slot-2", {"interface_id": interface_id(B, 3), "key": "key-two"})
    f.hub.documents_changed(SLOT)
    f.settle()
    return f


def agents(fab: Fabric) -> tuple[Agent, Agent]:
    return (Agent(fab, "slot-1", "key-one", fab.a, 3, S1_MAC, S1_IP, "10.0.1.1"),
            Agent(fab, "slot-2", "key-two", fab.b, 3, H2_MAC, H2_IP, "10.0.2.1"))


def slot_state(fab: Fabric, sid: str) -> dict:
    return fab.store.get(SLOT_STATE, sid).body


def instances(fab: Fabric) -> list[dict]:
    return fab.store.get(STATE, "web").body["instances"]


def manifest(fab: Fabric, **shadowing) -> None:
    fab.store.put(KIND, "web", {**WEB, "shadowing": {**WEB["shadowing"], **shadowing}})
    fab.hub.documents_changed(KIND)
    run(fab.hub)


def launched(agent: Agent) -> tuple[str, object]:
    """The launch order in what the hub sent the agent (every part)."""
    assembler, order = Assembler(), None
    for m in agent.answers():
        assert m.type == p.Type.LAUNCH
        order = assembler.add(m.body) or order
    assert order is not None
    return order.instance_id, order


def rejected(fab: Fabric, reason: str) -> float:
    return fab.hub.metrics.registry.get_sample_value("hub_shadow_agent_rejected_total",
                                                     {"reason": reason})


def running(fab: Fabric) -> tuple[Agent, Agent, str]:
    one, two = agents(fab)
    one.hello()
    two.hello()
    manifest(fab)
    iid, _ = launched(one)
    one.send(p.Ready(iid, ("IDS_Signature_Scan",), ()))
    return one, two, iid


# -- tests -----------------------------------------------------------------------------------

def test_hello_is_acked_from_the_gateway_and_the_slot_is_alive(fab):
    one, _ = agents(fab)
    assert fab.store.find(SLOT_STATE, "slot-1") is None
    one.hello()
    state = slot_state(fab, "slot-1")
    assert (state["state"], state["alive"]) == ("free", True)
    assert state["agent"]["ip"] == S1_IP and state["agent"]["port"] == AGENT_SPORT
    assert one.epoch == int(fab.store.get_meta("shadow.epoch"))


def test_a_manifest_launches_on_a_free_slot_and_ready_shows_it(fab):
    one, two = agents(fab)
    one.hello()
    two.hello()
    manifest(fab)
    iid, order = launched(one)
    assert two.answers() == []                          # one instance, the first slot
    assert order.image == "web --port 80"
    assert order.addresses == (IPv4Interface(f"{H1_IP}/24"),) and str(order.gateway) == "10.0.1.1"
    assert order.profiles == {"IDS_Signature_Scan": {"signatures": [
        {"id": "evil", "content": "EVIL", "pattern": None, "severity": "high"}]}}
    assert [i["state"] for i in instances(fab)] == ["launching"]
    fab.clock.advance(1.0)
    run(fab.hub)
    assert launched(one)[0] == iid                      # retransmitted after 1 s
    fab.clock.advance(1.0)
    run(fab.hub)
    assert one.answers() == []                          # then after 2 s
    one.send(p.Ready(iid, ("IDS_Signature_Scan",), ()))
    one.beat(iid, pps=42.0)
    fab.clock.advance(5.0)
    one.beat(iid)
    assert one.answers() == []                          # READY ends the retransmissions
    view = runtime_view(fab.store, fab.store.get(KIND, "web"))
    (shown,) = view["instances"]
    assert (shown["id"], shown["slot_id"], shown["state"], shown["appliance_id"]) == (
        iid, "slot-1", "ready", "web")
    assert shown["load"]["cpu_percent"] == 1.5 and shown["heartbeat_at"] == fab.wall()
    assert view["percentage"] == {"current": 12.5, "reason": "as configured"}
    assert view["counters"]["connections"] == 0
    assert slot_state(fab, "slot-1")["state"] == "ready"
    registry = fab.hub.metrics.registry
    assert registry.get_sample_value("hub_shadow_instances", {"state": "ready"}) == 1


def test_a_heartbeat_naming_the_instance_also_makes_it_ready(fab):
    one, two = agents(fab)
    one.hello()
    manifest(fab)
    iid, _ = launched(one)
    one.beat(iid)
    assert [i["state"] for i in instances(fab)] == ["ready"]


def test_heartbeat_loss_fails_the_instance_and_it_is_replaced_on_the_second_slot(fab):
    one, two, iid = running(fab)
    for _ in range(4):
        fab.clock.advance(1.0)
        two.beat(None)                                  # slot-2 stays alive, slot-1 is silent
    (failed, replacement) = instances(fab)
    assert (failed["id"], failed["state"], failed["reason"]) == (iid, "failed", "heartbeats missed")
    assert (replacement["slot_id"], replacement["state"]) == ("slot-2", "launching")
    assert replacement["id"] != iid and replacement["ordinal"] == failed["ordinal"] == 0
    assert launched(two)[0] == replacement["id"]
    assert (slot_state(fab, "slot-1")["state"], slot_state(fab, "slot-1")["alive"]) == ("failed",
                                                                                       False)
    assert any("heartbeats missed" in m for _, _, m in fab.events("shadow"))


def test_failed_and_a_hello_fail_the_instance_and_it_is_replaced(fab):
    one, two, iid = running(fab)
    one.send(p.Failed(iid, "image exited with status 3"))
    (failed, replacement) = instances(fab)
    assert (failed["state"], failed["reason"]) == ("failed", "image exited with status 3")
    assert slot_state(fab, "slot-1")["state"] == "free"
    other, _ = launched(two)
    two.send(p.Ready(other, (), ()))
    two.hello()                                        # the agent restarted: nothing runs
    assert [i["state"] for i in instances(fab)] == ["failed", "failed", "launching"]
    assert instances(fab)[-1]["slot_id"] == "slot-1"


def test_shrinking_stops_the_instance_until_a_heartbeat_without_it(fab):
    one, two, iid = running(fab)
    manifest(fab, shadow_instance_count=0)
    assert [m.type for m in one.answers()] == [p.Type.STOP]
    assert instances(fab)[0]["state"] == "stopped"
    assert slot_state(fab, "slot-1")["state"] == "stopping"
    one.beat(iid)                                       # still running it: STOP again later
    fab.clock.advance(1.0)
    run(fab.hub)
    assert [m.body for m in one.answers()] == [p.Stop(iid)]
    one.beat(None)
    assert slot_state(fab, "slot-1")["state"] == "free"
    fab.clock.advance(10.0)
    one.beat(None)
    assert one.answers() == []
    fab.store.delete(KIND, "web")                      # deleted: nothing to keep
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    assert fab.store.find(STATE, "web") is None


def test_findings_are_acked_and_stored_once(fab):
    one, _, iid = running(fab)
    finding = p.Finding("IDS_Signature_Scan", "high",
                        p.FiveTuple("tcp", "10.0.1.20", 40000, H1_IP, 80), "signature evil", 5.0)
    batch = p.Findings(iid, 77, (finding,))
    counter = one.send(batch)
    again = one.send(batch)                             # a retransmission under a new counter
    assert [m.body for m in one.answers()] == [p.Ack(counter), p.Ack(again)]
    (stored,) = fab.store.list(FINDING)
    assert {k: stored.body[k] for k in ("appliance_id", "instance_id", "profile", "severity",
                                         "action", "at")} == {
        "appliance_id": "web", "instance_id": iid, "profile": "IDS_Signature_Scan",
        "severity": "high", "action": "alert", "at": 5.0}
    assert stored.body["five_tuple"]["src"] == "10.0.1.20"
    assert stored.body["evidence"] == {"text": "signature evil"}
    assert fab.hub.metrics.registry.get_sample_value(
        "hub_shadow_findings_total", {"appliance": "web", "profile": "IDS_Signature_Scan",
                                      "severity": "high"}) == 1
    assert sum("finding of IDS_Signature_Scan" in m for _, _, m in fab.events("shadow")) == 1


def test_forged_replayed_stale_and_misplaced_datagrams_are_dropped_and_counted(fab):
    one, two = agents(fab)
    last = one.hello()
    one.send(p.Hello("1", "eth0", ()), key="not-the-key")
    one.send(p.Heartbeat(None, 0, 0, 0, 0), counter=last)           # a replay
    one.send(p.Heartbeat(None, 0, 0, 0, 0), epoch=one.epoch + 5)    # stale
    one.send(p.Hello("1", "eth0", ()), in_port=2)                   # not the slot's port
    assert one.answers() == []
    for reason in ("bad_mac", "replay", "stale", "unknown_slot"):
        assert rejected(fab, reason) == 1
    fab.hub.packet_in(A, tables.SHADOW_AGENT.id, 3, b"\x00" * 60)
    run(fab.hub)
    assert rejected(fab, "malformed") == 1
    assert slot_state(fab, "slot-1")["agent"]["counter"] == last


def test_a_restarted_hub_keeps_ready_instances_until_heartbeats_stop(fab):
    one, two, iid = running(fab)
    one.beat(iid)
    counter = slot_state(fab, "slot-1")["agent"]["counter"]
    fab.hub = fab.make_hub()
    fab.connect()
    fab.settle()
    assert [i["state"] for i in instances(fab)] == ["ready"]
    one.send(p.Heartbeat(iid, 0, 0, 0, 0), counter=counter)         # replays still refused
    assert rejected(fab, "replay") == 1
    for _ in range(5):
        fab.clock.advance(1.0)
        one.beat(iid)                                   # under the epoch it knows
        two.beat(None)
    assert [i["state"] for i in instances(fab)] == ["ready"] and one.answers() == []
    fab.clock.advance(MISS_LIMIT + 1)
    two.beat(None)
    assert [i["state"] for i in instances(fab)] == ["failed", "launching"]
    (_, order) = launched(two)
    assert two.epoch == int(fab.store.get_meta("shadow.epoch")) != one.epoch
