"""The OVSDB client's port operations against the real ovsdb-server, on a scratch bridge.

`OvsdbSwitches` finds bridges by name and datapath id and creates, reconfigures
and deletes tunnel ports exactly as the hub does for VPN personalities;
`ovs-vsctl` observes the result.  The message building and the JSON-RPC
exchange are unit-tested against a scripted server (tests/unit/test_ovsdb.py).
"""
from __future__ import annotations

import pytest

from controller.ovsdb import OvsdbClient, OvsdbError, OvsdbSwitches, PortSpec
from tests.trace.conftest import run

pytestmark = pytest.mark.trace

DB = "unix:/var/run/openvswitch/db.sock"


def _vsctl(*args: str) -> str:
    return run("ovs-vsctl", "--timeout=10", *args).strip()


@pytest.fixture(scope="module")
def scratch(make_bridge):
    """(bridge name, datapath id, OvsdbSwitches over the real database)."""
    bridge = make_bridge(ports=0)
    switches = OvsdbSwitches(OvsdbClient(DB))
    try:
        yield bridge.name, bridge.dpid, switches
    finally:
        switches.client.close()


def _spec(name: str, **options) -> PortSpec:
    return PortSpec(name, "vxlan", {"remote_ip": "198.18.250.2", **options},
                    {"hubshift-datapath": "test", "hubshift-interface": "x:1"})


def test_bridge_by_name_and_by_datapath_id(scratch):
    name, dpid, switches = scratch
    by_name = switches.bridge(dpid, name)
    assert by_name.name == name and by_name.datapath_id == dpid
    assert switches.bridge(dpid) == by_name
    with pytest.raises(OvsdbError, match="not 0000"):
        switches.bridge(dpid + 1, name)
    with pytest.raises(OvsdbError, match="no bridge named"):
        switches.bridge(dpid, name + "zz")
    with pytest.raises(OvsdbError, match="no bridge with datapath id"):
        switches.bridge(dpid + 1)


def test_ensure_creates_once_reads_ofport_and_deletes(scratch):
    name, dpid, switches = scratch
    bridge = switches.bridge(dpid, name)
    port = f"{name}t"
    spec = _spec(port, key="5001")
    ofport = switches.ensure_port(bridge, spec)
    assert ofport >= 1
    assert _vsctl("get", "interface", port, "ofport") == str(ofport)
    assert _vsctl("get", "interface", port, "type") == "vxlan"
    assert _vsctl("get", "interface", port, "options:key") == '"5001"'
    assert _vsctl("get", "port", port, "external_ids:hubshift-interface") == '"x:1"'
    assert port in _vsctl("list-ports", name).split()
    # Idempotent: nothing changes, same number.
    before = _vsctl("get", "port", port, "_uuid")
    assert switches.ensure_port(bridge, spec) == ofport
    assert _vsctl("get", "port", port, "_uuid") == before
    # The guard: a second insert of the same name is refused as a whole.
    with pytest.raises(OvsdbError, match="wait failed"):
        switches.client.transact(*switches.insert_port_operations(bridge, spec))
    assert _vsctl("list-ports", name).split().count(port) == 1
    # Reconfigured in place when its options differ.
    assert switches.ensure_port(bridge, _spec(port, key="5002")) == ofport
    assert _vsctl("get", "interface", port, "options:key") == '"5002"'
    assert switches.ports_with(bridge, "hubshift-datapath", "test") == [port]
    assert switches.ports_with(bridge, "hubshift-datapath", "other") == []
    assert switches.delete_port(bridge, port) is True
    assert port not in _vsctl("list-ports", name).split()
    assert switches.port(port) is None               # Interface and Port rows are gone too
    assert switches.delete_port(bridge, port) is False


def test_a_port_open_vswitch_refuses_reports_why(scratch):
    name, dpid, switches = scratch
    bridge = switches.bridge(dpid, name)
    bad = PortSpec(f"{name}b", "vxlan", {}, {"hubshift-datapath": "test"})   # no remote_ip
    try:
        with pytest.raises(OvsdbError, match="remote_ip"):
            switches.ensure_port(bridge, bad)
    finally:
        switches.delete_port(bridge, bad.name)


def test_a_port_of_that_name_on_another_bridge_is_not_taken_over(scratch, make_bridge):
    name, dpid, switches = scratch
    other = make_bridge(ports=0).name
    _vsctl("add-port", other, f"{name}x", "--", "set", "interface", f"{name}x", "type=internal")
    try:
        with pytest.raises(OvsdbError, match=f"already exists on bridge '{other}'"):
            switches.ensure_port(switches.bridge(dpid, name), _spec(f"{name}x"))
        assert _vsctl("get", "interface", f"{name}x", "type") == "internal"
    finally:
        _vsctl("--if-exists", "del-br", other)
