"""Personality changes (the coordinator), driven through the hub with fake switches and clocks."""
from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from controller.core import interfaces
from controller.core.channel import Aggregate
from controller.features.personality.compile import connection_cookie, interface_zone, transition_cookie
from controller.features.personality import binding as bindings
from controller.features.personality import operations as ops
from controller.core.hub import ROUTER_MAC, Hub
from controller.pipeline import cookies, tables
from controller.pipeline.actions import TABLE, Output
from controller.pipeline.cookies import Feature

from tests.unit.hubtest import A, H1_IP, H1_MAC, Fabric, FakeSwitch, SUBNETS, ports_a, ports_b, run

IID = interfaces.interface_id(A, 2)
OPEN = {"name": "open", "ip_addresses": [H1_IP], "default_action": "allow"}
LOCKDOWN = {"name": "lockdown", "ip_addresses": [H1_IP],
            "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                "action": "allow"}]}
TEMPORARY = {**OPEN, "name": "temporary", "expires_after": "60s"}


class CountingSwitch(FakeSwitch):
    """A FakeSwitch that also answers aggregate stats on the connections table."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.connections: dict[int, int] = {}   # connection cookie -> live connections
        self.aggregates = 0

    def aggregate(self, table_id: int, cookie: int, cookie_mask: int) -> Aggregate:
        assert table_id == tables.PERSONALITY_CONNECTIONS.id
        self.aggregates += 1
        return Aggregate(self.connections.get(cookie, 0), 0, 0)

    def flow_stats(self, table_id: int, cookie: int, cookie_mask: int):
        return []


class Lab(Fabric):
    def __init__(self, store=None) -> None:
        super().__init__(store)
        self.a = CountingSwitch(A, ports_a())
        self.b = CountingSwitch(2, ports_b())

    def step(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)
        run(self.hub)

    def switch(self, personality_id: str, **request) -> str:
        self.wall.advance(0.001)
        req = ops.parse_switch_request({"personality_id": personality_id, **request})
        doc = ops.create(self.store, IID, personality_id, kind="switch", now=self.wall(),
                         drain=req.drain, health_checks=req.health_checks)
        self.hub.documents_changed("operation")
        self.step()
        return doc.id

    def op(self, op_id: str) -> dict:
        return self.store.get(ops.KIND, op_id).body

    def iface(self) -> dict:
        return self.store.get(interfaces.KIND, IID).body

    def personality_cookies(self) -> set[int]:
        return {f.cookie for f in self.a.flows.values()
                if cookies.parse(f.cookie).feature == Feature.PERSONALITY}

    def cookie(self, pid: str) -> int:
        return cookies.make(Feature.PERSONALITY, pid, self.store.get("personality", pid).revision)


def make_lab(store=None) -> Lab:
    lab = Lab(store)
    for id, body in SUBNETS.items():
        lab.store.put("subnet", id, body)
    for id, body in (("open", OPEN), ("lockdown", LOCKDOWN), ("temporary", TEMPORARY)):
        lab.store.put("personality", id, body)
    lab.load_subnets()
    lab.connect()
    lab.settle()
    lab.lldp()
    lab.learn()
    return lab


@pytest.fixture
def lab() -> Lab:
    return make_lab()


def test_first_personality_applies_at_once(lab):
    op = lab.switch("open")
    body = lab.op(op)
    assert body["state"] == "succeeded" and body["result"] == "succeeded"
    assert any("nothing to drain" in e["message"] for e in body["log"])
    assert lab.iface()["personality_id"] == "open"
    assert lab.iface()["default_personality_id"] == "open"
    assert lab.iface()["operation_id"] is None
    assert lab.personality_cookies() == {lab.cookie("open")}
    assert lab.a.flushed == []                        # no zone was given up
    saved = lab.store.get(bindings.KIND, IID).body
    assert saved["zone"] == interface_zone(lab.bindings[IID].interface, 0)


def test_switch_drains_to_zero_then_applies_in_one_bundle(lab):
    lab.switch("open")
    old_zone = lab.bindings[IID].zone
    conn = connection_cookie(lab.bindings[IID].interface, old_zone)
    lab.a.connections[conn] = 2
    op = lab.switch("lockdown")
    assert lab.op(op)["state"] == "draining"
    assert lab.op(op)["connections"] == 2
    assert lab.iface()["personality_state"] == "transition"
    # Transition flows replaced the open personality in one apply.
    assert lab.personality_cookies() == {transition_cookie(lab.bindings[IID].interface)}
    lab.step(1.0)
    assert lab.op(op)["state"] == "draining"
    applies = len(lab.a.applies)
    lab.a.connections[conn] = 0
    lab.step(0.3)
    body = lab.op(op)
    assert body["state"] == "succeeded", body["log"]
    assert len(lab.a.applies) == applies + 1           # the new personality: one bundle
    assert lab.personality_cookies() == {lab.cookie("lockdown")}
    assert lab.bindings[IID].zone == old_zone ^ 1  # fresh conntrack zone
    assert lab.a.flushed == [old_zone]                # and the old one forgotten
    assert lab.iface()["personality_state"] == "active"
    assert lab.iface()["default_personality_id"] == "lockdown"
    assert "applied_ms" in body
    messages = " ".join(e["message"] for e in body["log"])
    assert "drained: no live connections" in messages


def test_drain_timeout_cuts_what_is_left(lab):
    lab.switch("open")
    b = lab.bindings[IID]
    lab.a.connections[connection_cookie(b.interface, b.zone)] = 3
    op = lab.switch("lockdown", drain={"max_seconds": 5})
    lab.step(4.0)
    assert lab.op(op)["state"] == "draining"
    lab.step(1.1)
    body = lab.op(op)
    assert body["state"] == "succeeded"
    assert any("3 connection(s) still open are cut" in e["message"] for e in body["log"])


def test_until_timeout_waits_the_whole_time(lab):
    lab.switch("open")
    op = lab.switch("lockdown", drain={"max_seconds": 2, "until": "timeout"})
    lab.step(1.0)
    assert lab.op(op)["state"] == "draining"
    lab.step(1.1)
    assert lab.op(op)["state"] == "succeeded"


def _gateway_reply(lab: Lab) -> bytes:
    """The echo reply the gateway would send back to the last injected probe."""
    data, actions, in_port = lab.a.sent[-1]
    assert actions == [Output(TABLE)] and in_port == 2
    req = Ether(data)
    assert req[IP].src == H1_IP and req[IP].dst == "10.0.1.1" and req[Ether].dst == ROUTER_MAC
    reply = (Ether(src=ROUTER_MAC, dst=H1_MAC) / IP(src="10.0.1.1", dst=H1_IP) /
             ICMP(type=0, id=req[ICMP].id, seq=req[ICMP].seq) / bytes(req[ICMP].payload))
    return bytes(reply)


def test_health_check_passes(lab):
    lab.switch("open")
    op = lab.switch("lockdown", drain={"max_seconds": 0}, health_checks=[{"type": "gateway"}])
    assert lab.op(op)["state"] == "verifying"
    punts = [f for f in lab.a.flows.values() if f.table == tables.L2.id
             and f.actions == (Output.controller(),)]
    assert len(punts) == 1 and dict(punts[0].match)["eth_dst"] == H1_MAC
    lab.hub.packet_in(A, tables.L2.id, 1, _gateway_reply(lab))
    lab.step()
    body = lab.op(op)
    assert body["state"] == "succeeded", body["log"]
    assert not [f for f in lab.a.flows.values() if f.table == tables.L2.id
                and f.actions == (Output.controller(),)]   # probe flows removed


def test_failed_health_check_rolls_back(lab):
    lab.switch("open")
    op = lab.switch("lockdown", drain={"max_seconds": 0},
                    health_checks=[{"type": "ping", "target": "10.0.2.99", "timeout_seconds": 2}])
    sent = len(lab.a.sent)
    lab.step(0.6)
    assert len(lab.a.sent) > sent          # probe sent again while unanswered
    lab.step(2.0)
    body = lab.op(op)
    assert body["state"] == "rolled_back" and body["result"] == "rolled_back"
    assert "ping 10.0.2.99 failed" in body["reason"]
    assert lab.iface()["personality_id"] == "open"
    assert lab.iface()["personality_state"] == "fallback"
    assert lab.personality_cookies() == {lab.cookie("open")}
    history = ops.history(lab.store, IID)
    assert [h["result"] for h in history] == ["succeeded", "rolled_back"]
    assert history[-1]["reason"] == body["reason"]


def test_failed_apply_keeps_previous(lab):
    lab.switch("open")
    lab.a.fail_next_apply = True
    op = lab.switch("lockdown", drain={"max_seconds": 0})
    # The transition bundle was refused: nothing changed.
    body = lab.op(op)
    assert body["state"] == "failed"
    assert lab.iface()["personality_id"] == "open"
    assert lab.personality_cookies() == {lab.cookie("open")}


def test_one_operation_per_interface(lab):
    lab.switch("open")
    b = lab.bindings[IID]
    lab.a.connections[connection_cookie(b.interface, b.zone)] = 1
    lab.switch("lockdown")
    with pytest.raises(ops.Busy):
        ops.create(lab.store, IID, "open", kind="switch", now=lab.wall())


def test_temporary_personality_reverts_by_itself(lab):
    lab.switch("open")
    op = lab.switch("temporary", drain={"max_seconds": 0})
    assert lab.op(op)["state"] == "succeeded"
    iface = lab.iface()
    assert iface["personality_id"] == "temporary"
    assert iface["default_personality_id"] == "open"     # temporary is never last-known-good
    assert iface["expires_at"] == pytest.approx(lab.wall() + 60)
    lab.step(59)
    assert lab.iface()["personality_id"] == "temporary"
    lab.step(1.1)
    lab.step()
    assert lab.iface()["personality_id"] == "open"
    history = ops.history(lab.store, IID)
    assert history[-1]["kind"] == "expiry" and history[-1]["result"] == "succeeded"
    assert "expired" in history[-1]["reason"]


def test_restart_while_draining_finishes_the_switch(lab):
    lab.switch("open")
    b = lab.bindings[IID]
    conn = connection_cookie(b.interface, b.zone)
    lab.a.connections[conn] = 1
    op = lab.switch("lockdown", drain={"max_seconds": 30})
    assert lab.op(op)["state"] == "draining"
    flows = dict(lab.a.flows)
    # The controller dies; a new one starts on the same store; the switch kept its flows.
    again = Lab(lab.store)
    again.a = CountingSwitch(A, ports_a(), flows)
    again.a.connections[conn] = 0
    again.hub = again.make_hub()
    again.wall.now = lab.wall.now + 2
    assert again.bindings[IID].personality_id == "open"
    again.connect(again.a, again.b)
    again.settle()
    again.step()
    again.step(0.3)
    body = again.op(op)
    assert body["state"] == "succeeded", body["log"]
    assert any("resumed in state draining" in e["message"] for e in body["log"])
    assert {f.cookie for f in again.a.flows.values()
            if cookies.parse(f.cookie).feature == Feature.PERSONALITY} == {again.cookie("lockdown")}


def test_restart_while_verifying_rolls_back_on_failure(lab):
    lab.switch("open")
    op = lab.switch("lockdown", drain={"max_seconds": 0},
                    health_checks=[{"type": "ping", "target": "10.0.2.99", "timeout_seconds": 1}])
    assert lab.op(op)["state"] == "verifying"
    again = Lab(lab.store)
    again.a = CountingSwitch(A, ports_a(), dict(lab.a.flows))
    again.hub = again.make_hub()
    assert again.bindings[IID].personality_id == "lockdown"
    again.connect(again.a, again.b)
    again.settle()
    again.step()
    again.step(1.5)
    body = again.op(op)
    assert body["state"] == "rolled_back", body["log"]
    assert again.iface()["personality_id"] == "open"


def test_dry_run_changes_nothing(lab):
    lab.switch("open")
    before = dict(lab.a.flows)
    result = lab.query("personality", "dry_run", interface_id=IID, personality_id="lockdown")
    assert result["from_personality_id"] == "open" and result["to_personality_id"] == "lockdown"
    assert result["flows"]["add"] and result["flows"]["delete"] == []  # same keys: replaced
    assert any("tcp_dst=443" in line for line in result["flows"]["add"]), result["flows"]["add"]
    assert result["would_cut"] == 0 and result["connections"] == []
    assert lab.a.flows == before
    with pytest.raises(LookupError):
        lab.query("personality", "dry_run", interface_id=IID, personality_id="nope")


def test_qos_rates_become_meters_used_by_the_interfaces_flows(lab):
    limited = {**OPEN, "name": "limited", "qos_settings": {
        "priority": 2, "egress_rate_kbps": 10000, "egress_burst_kb": 100,
        "ingress_rate_kbps": 20000}}
    lab.store.put("personality", "limited", limited)
    lab.switch("limited")
    meters = {m.meter_id: m for m in lab.a.meters()}
    assert sorted((m.rate_kbps, m.burst_kbits) for m in meters.values()) == [(10000, 800), (20000, 0)]
    metered = {f.meter for f in lab.a.flows.values() if f.meter is not None}
    assert metered == set(meters)
    assert all(f.table in (tables.PERSONALITY_EGRESS_COUNT.id, tables.PERSONALITY_INGRESS_COUNT.id)
               for f in lab.a.flows.values() if f.meter is not None)
    # Switching to a personality without rates removes the meters, after the flows using them.
    lab.a.log.clear()
    lab.switch("open", drain={"max_seconds": 0})
    assert lab.a.meters() == []
    kinds = [e[0] for e in lab.a.log if e[0] in ("apply", "meters")]
    assert kinds.index("meters") > kinds.index("apply")
    assert not [f for f in lab.a.flows.values() if f.meter is not None]


def test_expiry_with_nowhere_to_return_removes_the_personality(lab):
    op = lab.switch("temporary")                 # first personality: nothing to return to
    assert lab.op(op)["state"] == "succeeded"
    assert lab.iface()["expires_to"] is None
    lab.step(60.5)
    lab.step(0.3)
    lab.step(0.3)
    history = ops.history(lab.store, IID)
    assert history[-1]["kind"] == "expiry" and history[-1]["result"] == "succeeded", history
    assert lab.iface()["personality_id"] is None
    assert lab.personality_cookies() == set()    # the interface is open again
    assert IID not in lab.bindings
    log = lab.op(history[-1]["operation"])["log"]
    assert sum(e["state"] == "transition" for e in log) == 1
