"""VPN personalities through the hub and the switch coordinator, with fake switches and a
fake OVSDB: the tunnel port exists before any flow names it and goes once none does."""
from __future__ import annotations

from controller.core import interfaces
from controller.features.personality.policy import PersonalityPolicy
from controller.features.personality.vpn import TUNNEL_DROP, TUNNEL_IN, tunnel_port_name
from controller.features.personality import operations as ops
from controller.core.hub import ROUTER_MAC, Hub
from controller.ovsdb import Bridge, OvsdbError, PortSpec, PortState
from controller.pipeline import tables
from controller.pipeline.actions import Output
from controller.core.topology import Port
from controller.reconcile.tunnels import RETRY_SECONDS, TunnelPorts

from tests.unit.hubtest import A, H1_IP, arp_frame, ports_a, run
from tests.unit.test_changes import IID, OPEN, CountingSwitch, Lab, make_lab

VPN = {"type": "vxlan", "remote_ip": "198.18.71.2", "key": 5001,
       "remote_prefixes": ["172.16.5.0/24"]}
VPN_BODY = {**OPEN, "name": "vpn", "vpn_tunnel_config": VPN}
VPN2_BODY = {**OPEN, "name": "vpn2", "vpn_tunnel_config": {**VPN, "key": 5002}}
PORT = tunnel_port_name(A, 2, PersonalityPolicy.from_body("vpn", VPN_BODY).vpn)
PORT2 = tunnel_port_name(A, 2, PersonalityPolicy.from_body("vpn2", VPN2_BODY).vpn)


class FakeOvsdb:
    """OvsdbSwitches over a dict; writes go to a shared log (beside a switch's applies)."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.bridges = {"a": Bridge("uuid-a", "a", A)}
        self.ports: dict[str, tuple[str, PortSpec, int]] = {}   # name -> (bridge, spec, ofport)
        self.next_ofport = 100
        self.fail: str | None = None
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.fail:
            raise OvsdbError(self.fail)

    def bridge(self, dpid: int, name: str | None = None) -> Bridge:
        self._call()
        found = [b for b in self.bridges.values() if b.datapath_id == dpid
                 and (name is None or b.name == name)]
        if not found:
            raise OvsdbError(f"no bridge {name} for {dpid:x}")
        return found[0]

    def port(self, name: str) -> PortState | None:
        self._call()
        if name not in self.ports:
            return None
        bridge, spec, ofport = self.ports[name]
        return PortState(name, "uuid-" + name, bridge, spec.type, dict(spec.options),
                         dict(spec.external_ids), ofport, None)

    def ensure_port(self, bridge: Bridge, spec: PortSpec) -> int:
        self._call()
        if name_taken := self.ports.get(spec.name):
            if name_taken[1] == spec:
                return name_taken[2]
            self.ports[spec.name] = (bridge.name, spec, name_taken[2])
            return name_taken[2]
        self.next_ofport += 1
        self.ports[spec.name] = (bridge.name, spec, self.next_ofport)
        self.log.append(("ovsdb-add", spec.name, self.next_ofport))
        return self.next_ofport

    def ports_with(self, bridge: Bridge, key: str, value: str) -> list[str]:
        self._call()
        return sorted(n for n, (b, spec, _) in self.ports.items()
                      if b == bridge.name and spec.external_ids.get(key) == value)

    def delete_port(self, bridge: Bridge, name: str) -> bool:
        self._call()
        if name not in self.ports:
            return False
        del self.ports[name]
        self.log.append(("ovsdb-delete", name))
        return True


def vpn_lab(ovsdb: bool = True) -> tuple[Lab, FakeOvsdb]:
    lab = make_lab()
    fake = FakeOvsdb(lab.a.log)
    if ovsdb:
        lab.hub.tunnels = TunnelPorts(fake, lab.clock)
    lab.store.put("personality", "vpn", VPN_BODY)
    lab.store.put("personality", "vpn2", VPN2_BODY)
    lab.switch("open")
    return lab, fake


def tunnel_flows(lab: Lab, ofport: int) -> list:
    return [f for f in lab.a.flows.values()
            if Output(ofport) in f.actions or dict(f.match).get("in_port") == ofport]


def test_switch_creates_the_port_before_the_flows_that_use_it():
    lab, fake = vpn_lab()
    op = lab.switch("vpn", drain={"max_seconds": 0})
    assert lab.op(op)["state"] == "succeeded", lab.op(op)["log"]
    bridge, spec, ofport = fake.ports[PORT]
    assert bridge == "a" and spec.type == "vxlan"
    assert spec.options == {"remote_ip": "198.18.71.2", "key": "5001"}
    assert spec.external_ids == {"hubshift-datapath": "0000000000000001",
                                 "hubshift-interface": IID}
    kinds = [e[0] for e in lab.a.log]
    first_use = next(i for i, e in enumerate(lab.a.log) if e[0] == "apply" and any(
        Output(ofport) in f.actions for f in e[1].add))
    assert kinds.index("ovsdb-add") < first_use
    flows = tunnel_flows(lab, ofport)
    route = [f for f in flows if f.table == tables.PERSONALITY_ROUTES.id]
    assert len(route) == 1 and dict(route[0].match)["ipv4_dst"] == ("172.16.5.0", "255.255.255.0")
    assert dict(route[0].match)["eth_dst"] == ROUTER_MAC
    assert {f.priority for f in flows if f.table == tables.CLASSIFY.id} == {TUNNEL_IN, TUNNEL_DROP}
    assert all(f.cookie == lab.cookie("vpn") for f in flows)


def test_switching_away_removes_the_port_after_its_flows():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    ofport = fake.ports[PORT][2]
    lab.a.log.clear()
    op = lab.switch("open", drain={"max_seconds": 0})
    lab.step()
    assert lab.op(op)["state"] == "succeeded"
    assert PORT not in fake.ports and tunnel_flows(lab, ofport) == []
    kinds = [e[0] for e in lab.a.log]
    last_use_gone = max(i for i, e in enumerate(lab.a.log) if e[0] == "apply" and any(
        Output(ofport) in f.actions for f in e[1].delete))
    assert kinds.index("ovsdb-delete") > last_use_gone


def test_a_changed_tunnel_keeps_the_old_port_for_the_transition():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    new_port = PORT2
    op = lab.switch("vpn2", drain={"max_seconds": 2, "until": "timeout"})
    assert lab.op(op)["state"] == "draining"
    assert set(fake.ports) == {PORT, new_port}          # old for the transition, new prepared
    old_ofport = fake.ports[PORT][2]
    assert tunnel_flows(lab, old_ofport)                 # established VPN traffic keeps flowing
    lab.step(1.0)
    lab.step(1.1)
    lab.step()
    assert lab.op(op)["state"] == "succeeded"
    assert set(fake.ports) == {new_port}
    assert tunnel_flows(lab, fake.ports[new_port][2]) and not tunnel_flows(lab, old_ofport)


def test_without_ovsdb_the_switch_fails_and_nothing_changes():
    lab, fake = vpn_lab(ovsdb=False)
    before = dict(lab.a.flows)
    op = lab.switch("vpn", drain={"max_seconds": 0})
    body = lab.op(op)
    assert body["state"] == "failed" and "no OVSDB endpoint" in body["reason"], body
    assert "nothing was changed" in body["reason"]
    assert lab.iface()["personality_id"] == "open" and lab.a.flows == before


def test_an_ovsdb_failure_fails_the_switch_and_nothing_changes():
    lab, fake = vpn_lab()
    fake.fail = "connection refused"
    before = dict(lab.a.flows)
    op = lab.switch("vpn", drain={"max_seconds": 0})
    body = lab.op(op)
    assert body["state"] == "failed" and "connection refused" in body["reason"]
    assert lab.a.flows == before and fake.ports == {}


def test_two_interfaces_may_not_share_one_tunnel_endpoint():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    lab.learn(port=3, mac="00:00:00:00:01:0b", ip="10.0.1.11")
    other = interfaces.interface_id(A, 3)
    lab.store.put("personality", "vpn-b", {**VPN_BODY, "name": "vpn-b", "ip_addresses": []})
    doc = ops.create(lab.store, other, "vpn-b", kind="switch", now=lab.wall(),
                     drain=ops.Drain(max_seconds=0, until="timeout"))
    lab.hub.documents_changed("operation")
    lab.step()
    body = lab.op(doc.id)
    assert body["state"] == "failed" and f"interface {IID} already has a vxlan tunnel" in body["reason"]
    assert list(fake.ports) == [PORT]


def test_tunnel_ports_are_never_probed_flooded_or_learned_from():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    ofport = fake.ports[PORT][2]
    lab.a.log.clear()
    lab.hub.port_status(A, Port(ofport, PORT, True), deleted=False)
    run(lab.hub)
    assert not [s for s in lab.a.sent if Output(ofport) in s[1]]          # no LLDP into it
    hosts = dict(lab.hub.topo.hosts)
    lab.hub.packet_in(A, tables.CLASSIFY.id, ofport, arp_frame(1, "02:00:ac:10:05:0a",
                                                                "172.16.5.10", "10.0.1.1"))
    run(lab.hub)
    assert lab.hub.topo.hosts == hosts                                   # nobody learned there
    lab.hub.packet_in(A, tables.ARP.id, 2, arp_frame(1, "00:00:00:00:01:0a", H1_IP, "10.0.1.77"))
    run(lab.hub)
    floods = [s for s in lab.a.sent if s[0][12:14] == b"\x08\x06"]
    assert floods and all(Output(ofport) not in s[1] for s in floods)


def test_restart_reuses_the_port_and_removes_strays():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    ofport = fake.ports[PORT][2]
    stray = PortSpec("hsv0badf00d", "gre", {"remote_ip": "198.18.71.9"},
                     {"hubshift-datapath": "0000000000000001", "hubshift-interface": "x"})
    fake.ports[stray.name] = ("a", stray, 150)        # left by a controller killed mid-switch
    again = Lab(lab.store)
    again.a = CountingSwitch(A, ports_a(), dict(lab.a.flows))
    fake.log = again.a.log
    again.hub = again.make_hub(ovsdb=fake)
    again.connect(again.a, again.b)
    again.settle()
    again.step()
    assert set(fake.ports) == {PORT} and fake.ports[PORT][2] == ofport
    assert not [e for e in again.a.log if e[0] == "ovsdb-add"]
    assert [d for d in again.a.applies if d.add or d.delete] == []     # not one flow changed
    assert tunnel_flows(again, ofport)


def test_ovsdb_errors_are_retried_after_a_while_not_in_a_loop():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    fake.fail = "down"
    lab.hub.tunnels._realized.clear()         # as after a reconnect: read back again
    calls = fake.calls
    for _ in range(5):
        lab.step(0.1)
    assert fake.calls == calls + 1
    fake.fail = None
    lab.step(RETRY_SECONDS)
    assert fake.calls > calls + 1 and PORT in lab.hub.tunnels.ofports()


def test_dry_run_of_a_vpn_personality_shows_its_tunnel_flows_and_changes_nothing():
    lab, fake = vpn_lab()
    lab.switch("vpn", drain={"max_seconds": 0})
    before = dict(lab.a.flows)
    result = lab.query("personality", "dry_run", interface_id=IID, personality_id="open")
    assert any("output:%d" % fake.ports[PORT][2] in line for line in result["flows"]["delete"])
    assert lab.a.flows == before and PORT in fake.ports


def test_a_switch_without_tunnels_is_read_back_once_per_connection():
    lab, fake = vpn_lab()
    fake.fail = "no OVSDB access"               # both switches were read back when first ready
    lab.hub.tunnels._realized.clear()
    calls = fake.calls
    lab.step(RETRY_SECONDS + 1)
    lab.step(RETRY_SECONDS + 1)
    assert fake.calls == calls                  # no tunnel wanted: not tried again
    lab.hub.switch_disconnected(A, lab.a)
    lab.connect(lab.a)
    lab.settle()
    lab.step(RETRY_SECONDS + 1)
    assert fake.calls == calls + 1              # A reconnected: one try, then quiet
