from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from controller.core import interfaces
from controller.api.app import create_app
from controller.api.context import ApiContext
from tests.unit.fakes import FakeHub
from controller.store import open_store
from controller.core.topology import Host


def client():
    store = open_store(":memory:")
    interfaces.record_host(store, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    return store, TestClient(create_app(ApiContext(store, FakeHub(), CollectorRegistry(), "t")))


def test_list_and_get():
    _, c = client()
    items = c.get("/v1/interfaces").json()
    assert [i["id"] for i in items] == ["0000000000000a01:2"]
    one = c.get("/v1/interfaces/0000000000000a01:2").json()
    assert one["mac"] == "02:00:00:00:00:01" and one["personality_state"] == "active"
    missing = c.get("/v1/interfaces/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_put_default_personality_checks_existence_and_revision():
    store, c = client()
    url = "/v1/interfaces/0000000000000a01:2"
    r = c.put(url, json={"revision": 1, "default_personality_id": "ghost"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.default_personality_id"
    store.create("personality", "open", {"name": "open"})
    r = c.put(url, json={"revision": 1, "default_personality_id": "open"})
    assert r.status_code == 200 and r.json()["revision"] == 2
    assert c.put(url, json={"revision": 1, "default_personality_id": None}).status_code == 409
    assert c.put(url, json={"revision": 2, "mac": "x"}).status_code == 422
    assert store.get("interface", "0000000000000a01:2").body["default_personality_id"] == "open"
