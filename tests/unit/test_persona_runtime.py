"""The persona runtime alone, on a fake context: teardown order, usage polls, DHCP, latency."""
from __future__ import annotations

from datetime import datetime, timezone
from ipaddress import IPv4Network
from typing import Any, Iterator

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from controller.core import interfaces
from controller.core.topology import Host
from controller.features.persona import compile as compiler
from controller.features.persona import store as ps
from controller.features.persona.net import ZONES
from controller.features.persona.runtime import Personas
from controller.features.persona.settings import PersonaSettings
from controller.pipeline import tables
from controller.store import Store, open_store
from tests.unit.fakecontext import FakeCore, fake_context

EDGE, GATEWAY = 0xA01, 0xB01
MEMBER = Host("02:00:00:00:00:01", ("10.0.1.1",), EDGE, 2)
IID = interfaces.interface_id(EDGE, 2)
NOW = 1_800_000_000.0
POOL = IPv4Network("100.64.0.0/10")


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gateway:
    """The gateway switch as a stats request sees it: counters for chosen cookies."""

    def __init__(self) -> None:
        self.counters: dict[int, tuple[int, int]] = {}   # cookie -> (packets, bytes)
        self.flows: tuple = ()

    def flow_counters(self, table_id: Any, cookie: int, mask: int) -> list:
        return [(f, *self.counters[f.cookie]) for f in self.flows if f.cookie in self.counters]


class Rig:
    def __init__(self, store: Store, **doc: Any) -> None:
        self.store = store
        self.wall = Clock(NOW)
        self.mono = Clock(100.0)
        self.core = FakeCore(switches={EDGE, GATEWAY}, hosts=(MEMBER,))
        self.ctx = fake_context(self.core, store, name="persona", clock=self.mono,
                                wallclock=self.wall)
        body = {"name": "dev", "ip_range": "10.100.0.0/24", "protocols": ["tcp", "udp"],
                "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"}],
                "expiration": rfc3339(NOW + 600), **doc}
        self.id = ps.create(store, body, NOW, (), POOL).document.id
        ps.attach(store, self.id, IID)
        self.runtime = Personas(self.ctx, PersonaSettings(gateway=GATEWAY, poll_seconds=1.0))
        self.runtime.load()

    def flows(self, dpid: int = GATEWAY) -> tuple:
        return self.runtime.contribute(self.core.view())[0].get(dpid, ())

    def mine(self, dpid: int = GATEWAY) -> list:
        cookie = compiler.persona_cookie(self.id)
        return [f for f in self.flows(dpid) if f.cookie == cookie]

    def stage(self) -> str | None:
        t = self.runtime.teardowns.get(self.id)
        return t.stage if t else None


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    interfaces.record_host(s, MEMBER)
    yield s
    s.close()


def test_expiry_walks_the_stages_only_as_fast_as_the_switches_realize_them(store):
    rig = Rig(store)
    index = rig.store.get(ps.KIND, rig.id).body["index"]
    assert rig.mine()
    routed = len(rig.flows(EDGE))
    rig.wall.now = NOW + 601
    rig.runtime.tick()
    assert rig.stage() == "closing"
    rig.runtime.tick()
    assert rig.stage() == "closing"                 # the switches do not hold it yet
    rig.core.realize()
    rig.runtime.tick()
    assert rig.stage() == "unrouted"
    assert len(rig.flows(EDGE)) < routed           # the member's edge hooks are withdrawn
    assert rig.mine()                              # the gateway still has the persona's flows
    rig.core.realize()
    rig.runtime.tick()
    assert rig.stage() == "done" and rig.mine() == []
    assert rig.store.get(ps.KIND, rig.id).body["state"] == "active"   # not before it is gone
    rig.core.realize()
    rig.runtime.tick()
    assert rig.stage() is None
    assert rig.store.get(ps.KIND, rig.id).body["state"] == "expired"
    assert ("persona", rig.id, "expired: torn down") in [e[:3] for e in rig.core.events]

    class Switch:
        flushed: list[int] = []

        def flush_zone(self, zone: int) -> None:
            self.flushed.append(zone)
    rig.core.answer(Switch())                      # its zone's connections are forgotten
    assert Switch.flushed == [ZONES.first + index - 1]


def test_a_switch_that_refuses_or_leaves_does_not_hold_a_teardown_forever(store):
    rig = Rig(store)
    rig.wall.now = NOW + 601
    rig.runtime.tick()
    rig.core.refuse(GATEWAY)
    rig.core.realize(EDGE)
    rig.runtime.tick()
    assert rig.stage() == "unrouted"
    rig.core.switches.discard(GATEWAY)      # gone: nothing to wait for there
    rig.core.realize(EDGE)
    rig.runtime.tick()
    rig.core.realize(EDGE)
    rig.runtime.tick()
    assert rig.stage() is None


def test_personas_deleted_together_leave_together(store):
    rig = Rig(store)
    other = ps.create(store, {"name": "two", "ip_range": "10.101.0.0/24", "protocols": ["tcp"],
                              "expiration": rfc3339(NOW + 600)}, NOW, (), POOL).document.id
    rig.runtime.reload()
    assert other in rig.runtime.active
    ps.delete(store, rig.id)
    ps.delete(store, other)
    rig.runtime.reload()
    for _ in range(4):
        rig.runtime.tick()
        rig.core.realize()
    gone = [e for e in rig.core.events if e[2] == "deleted: torn down"]
    assert {e[1] for e in gone} == {rig.id, other}
    assert all(e[3]["together"] == 2 for e in gone)


def test_the_usage_poll_asks_and_goes_on_when_the_gateway_answers(store):
    rig = Rig(store)
    gateway = Gateway()
    gateway.flows = rig.flows()
    out = compiler.usage_cookie(rig.id, compiler.OUT)
    gateway.counters = {out: (10, 1500)}
    rig.runtime.tick()
    assert len(rig.core.requests) == 1 and rig.core.requests[0].dpid == GATEWAY
    assert rig.runtime.usage(rig.id) is None        # asked, not answered: nothing known yet
    rig.runtime.tick()
    assert len(rig.core.requests) == 1              # one poll at a time
    rig.core.answer(gateway)
    usage = rig.runtime.usage(rig.id)
    assert usage["bytes"]["out"] == 1500 * sum(1 for f in gateway.flows if f.cookie == out)
    rig.mono.now += 1.0
    gateway.counters = {out: (20, 3000)}
    rig.runtime.tick()
    rig.core.answer(gateway)
    assert rig.runtime.usage(rig.id)["bytes"]["out"] == 2 * usage["bytes"]["out"]


def test_a_failed_poll_is_logged_and_the_next_one_runs(store):
    rig = Rig(store)

    class Broken:
        def flow_counters(self, *a: Any) -> list:
            raise ConnectionError("switch gone")
    rig.runtime.tick()
    rig.core.answer(Broken())
    assert rig.runtime.usage(rig.id) is None
    rig.mono.now += 1.0
    rig.runtime.tick()
    assert len(rig.core.requests) == 1


def test_dhcp_from_a_member_is_answered_with_its_persona_address(store):
    rig = Rig(store)
    address = store.get(ps.KIND, rig.id).body["attachments"][0]["ip"]
    discover = bytes(Ether(src=MEMBER.mac, dst="ff:ff:ff:ff:ff:ff")
                     / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                     / BOOTP(op=1, chaddr=bytes.fromhex(MEMBER.mac.replace(":", "")), xid=7)
                     / DHCP(options=[("message-type", "discover"), "end"]))
    rig.runtime.on_packet_in(EDGE, tables.PERSONA_EDGE.id, 2, None, discover)
    (dpid, frame, _, _), = rig.core.sent
    offer = Ether(frame)
    assert dpid == EDGE and offer[BOOTP].yiaddr == address and offer[BOOTP].xid == 7
    stranger = discover.replace(bytes.fromhex("020000000001"), bytes.fromhex("020000000099"))
    rig.runtime.on_packet_in(EDGE, tables.PERSONA_EDGE.id, 2, None, stranger)
    assert len(rig.core.sent) == 1                  # not a member: no answer


def test_latency_is_measured_by_an_echo_from_the_persona_gateway(store):
    rig = Rig(store, qos={"latency": "50ms"})
    gateway = Gateway()
    rig.runtime.tick()
    rig.core.answer(gateway)
    (dpid, frame, _, _), = rig.core.sent
    probe = Ether(frame)
    assert dpid == EDGE and probe[ICMP].type == 8 and probe[Ether].dst == MEMBER.mac
    reply = (Ether(src=probe.dst, dst=probe.src) / IP(src=probe[IP].dst, dst=probe[IP].src)
             / ICMP(type=0, id=probe[ICMP].id, seq=probe[ICMP].seq) / bytes(probe[ICMP].payload))
    rig.mono.now += 0.004
    rig.runtime.on_packet_in(GATEWAY, tables.PERSONA_GATEWAY.id, 1, None, bytes(reply))
    assert rig.runtime.latency[rig.id] == pytest.approx(0.004)
