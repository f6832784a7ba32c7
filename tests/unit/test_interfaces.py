from controller.core import interfaces
from controller.store import open_store
from controller.core.topology import Host


def test_record_is_created_for_a_discovered_host_port():
    store = open_store(":memory:")
    assert interfaces.record_host(store, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    doc = store.get("interface", "0000000000000a01:2")
    assert doc.body == {"datapath": "0000000000000a01", "port": 2, "mac": "02:00:00:00:00:01",
                        "ips": ["10.0.1.1"], "personality_id": None,
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
