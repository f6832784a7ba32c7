import pytest

from controller.core import budgets, interfaces
from controller.store import open_store
from controller.core.topology import Host


def test_record_is_created_for_a_discovered_host_port():
    store = open_store(":memory:")
    assert interfaces.record_host(store, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    doc = store.get("interface", "0000000000000a01:2")
    assert doc.body == {"datapath": "0000000000000a01", "port": 2, "mac": "02:00:00:00:00:01",
                        "ips": ["10.0.1.1"], "zone": 2, "personality_id": None,
                        "default_personality_id": None, "personality_state": "active"}


def test_refresh_keeps_personality_fields_and_is_idempotent():
    store = open_store(":memory:")
    host = Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2)
    interfaces.record_host(store, host)
    doc = store.get("interface", "0000000000000a01:2")
    store.update("interface", doc.id, {**doc.body, "personality_id": "web",
                                       "default_personality_id": "open"}, doc.revision)
    assert not interfaces.record_host(store, host)  # nothing changed
    interfaces.record_host(store, Host(host.mac, ("10.0.1.1", "10.0.1.9"), 0xA01, 2))
    body = store.get("interface", "0000000000000a01:2").body
    assert body["ips"] == ["10.0.1.1", "10.0.1.9"]
    assert (body["personality_id"], body["default_personality_id"]) == ("web", "open")


def test_zones_are_pairs_unique_across_bridges_and_kept_by_refreshes():
    """The same port number on two bridges (one Open vSwitch) gets two different pairs."""
    store = open_store(":memory:")
    a = Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2)
    b = Host("02:00:00:00:00:02", ("10.0.1.2",), 0xA02, 2)
    for host in (a, b, Host(a.mac, ("10.0.1.7",), 0xA01, 2)):
        interfaces.record_host(store, host)
    za = store.get("interface", "0000000000000a01:2").body["zone"]
    zb = store.get("interface", "0000000000000a02:2").body["zone"]
    assert (za, zb) == (2, 4) and za % 2 == 0
    assert {za, za + 1} <= set(range(2, budgets.INTERFACE_ZONES.last + 1))


def test_a_record_from_before_zones_gets_one_on_its_next_refresh():
    store = open_store(":memory:")
    store.put("interface", "0000000000000a01:2", {"datapath": "0000000000000a01", "port": 2,
                                                   "mac": "02:00:00:00:00:01", "ips": [],
                                                   "personality_id": "web"})
    assert interfaces.record_host(store, Host("02:00:00:00:00:01", (), 0xA01, 2))
    body = store.get("interface", "0000000000000a01:2").body
    assert body["zone"] == 2 and body["personality_id"] == "web"


def test_a_pair_is_not_reused_soon_and_only_once_the_range_is_used_up(monkeypatch):
    store = open_store(":memory:")
    monkeypatch.setattr(interfaces, "ZONES", budgets.Span(2, 7))   # three pairs: 2, 4, 6
    for port in (1, 2):
        interfaces.record_host(store, Host(f"02:00:00:00:00:0{port}", (), 1, port))
    store.delete("interface", "0000000000000001:1")                 # pair 2 is free again
    interfaces.record_host(store, Host("02:00:00:00:00:03", (), 1, 3))
    assert store.get("interface", "0000000000000001:3").body["zone"] == 6   # not 2: too soon
    interfaces.record_host(store, Host("02:00:00:00:00:04", (), 1, 4))
    assert store.get("interface", "0000000000000001:4").body["zone"] == 2   # used up: reuse
    with pytest.raises(interfaces.ZonesExhausted):
        interfaces.record_host(store, Host("02:00:00:00:00:05", (), 1, 5))
    assert store.find("interface", "0000000000000001:5") is None    # nothing half-written
