"""REST and hubctl for shard services and routes (TestClient, in-memory store, fake hub)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import claims, interfaces
from controller.core.topology import Host
from controller.features.shard.claims import EXTERNAL_IP
from controller.features.shard.services import ROUTE, SERVICE, SESSION, route_id
from controller.store import Store, open_store
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

PROBLEM = "application/problem+json"
IFACES = ("0000000000000a01:2", "0000000000000a01:3", "0000000000000a01:4", "0000000000000a01:5")
POOL = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/27"}
OTHER_POOL = {"name": "db", "pool": "10.201.0.0/16", "external_range": "198.51.100.128/27"}
SERVICES, ROUTES = "/v1/shard-pools/web/services", "/v1/shard-pools/web/routes"
GAME = {"external_ip": "198.51.100.80", "protocol": "udp", "port": 7777,
        "resources": ["web-1", "web-2"], "metadata": {"pattern": r"session=(\w+)"}}
DNS = {"id": "dns", "external_ip": "198.51.100.81", "protocol": "udp", "port": 53,
       "resources": ["web-1", "web-2"]}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    for port, iid in zip((2, 3, 4, 5), IFACES):
        interfaces.record_host(s, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01,
                                       port))
    yield s
    s.close()


@pytest.fixture
def pools(client: TestClient) -> None:
    """Pools web (resources web-1, web-2 at .65 and .66) and db (resource db-1)."""
    for body in (POOL, OTHER_POOL):
        assert client.post("/v1/shard-pools", json=body).status_code == 201
    for pool, iface in (("web", IFACES[0]), ("web", IFACES[1]), ("db", IFACES[2])):
        resp = client.post(f"/v1/shard-pools/{pool}/resources", json={"interface_id": iface})
        assert resp.status_code == 201, resp.text


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    return resp.json()


def reasons(resp: Any, status: int = 422) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in problem(resp, status)["errors"]}


def created(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(SERVICES, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


# -- services --------------------------------------------------------------------------

def test_a_service_is_stored_with_its_claims_and_shown(client, store, hub: FakeHub, pools):
    game = created(client, GAME)
    assert game["id"] == "web-udp-7777" and game["zone"] == 0xB000 and game["idle_timeout"] == 600
    assert (game["resources"], game["metadata"]) == (GAME["resources"], GAME["metadata"])
    assert hub.changed_kinds[-1] == SERVICE
    assert created(client, DNS)["zone"] == 0xB001
    assert [h.holder_id for h in claims.holders(store, EXTERNAL_IP, "198.51.100.80")] == [game["id"]]
    assert client.get(f"{SERVICES}/{game['id']}").json() == game
    assert [s["id"] for s in client.get(SERVICES).json()] == ["dns", "web-udp-7777"]
    assert client.get("/v1/shard-pools/db/services").json() == []
    assert problem(client.get(f"{SERVICES}/nope"), 404)


def test_an_address_held_by_a_resource_or_another_service_is_refused(client, store, pools):
    created(client, DNS)
    for taken in ("198.51.100.65", DNS["external_ip"]):     # web-1's own, the dns service's
        body = problem(client.post(SERVICES, json={**GAME, "external_ip": taken}), 409)
        assert [e["field"] for e in body["errors"]] == ["body.external_ip"]
    assert [d.id for d in store.list(SERVICE)] == ["dns"]
    # ... and a resource enrolled later does not get a service's address.
    resp = client.post("/v1/shard-pools/web/resources",
                       json={"interface_id": IFACES[3], "external_ip": DNS["external_ip"]})
    assert problem(resp, 409)["errors"][0]["field"] == "body.external_ip"


def test_bad_services_are_refused_naming_the_field_and_nothing_is_stored(client, store, pools):
    cases = [({**GAME, "external_ip": "198.51.100.200"}, "body.external_ip", "external range"),
             ({**GAME, "resources": ["web-1", "db-1"]}, "body.resources[1]", "not a resource"),
             ({**GAME, "resources": ["nope"]}, "body.resources[0]", "enrolled in shard pool"),
             ({**GAME, "metadata": {"pattern": "(a)(b)"}}, "body.metadata.pattern", "2 groups"),
             ({**GAME, "metadata": {"pattern": "[x"}}, "body.metadata.pattern", "regular"),
             ({**GAME, "protocol": "tcp"}, "body.metadata.pattern", "SYN"),
             ({**GAME, "resources": [f"web-{i}" for i in range(16)]}, "body.resources", "15")]
    for body, field, words in cases:
        got = reasons(client.post(SERVICES, json=body))
        assert field in got and words in got[field], (body, got)
    assert store.list(SERVICE) == []
    assert claims.holders(store, EXTERNAL_IP, GAME["external_ip"]) == []
    assert problem(client.post("/v1/shard-pools/nope/services", json=GAME), 404)


def test_deleting_a_service_frees_its_address_and_takes_its_routes(client, store, hub, pools):
    game = created(client, GAME)
    assert client.post(ROUTES, json={"service_id": game["id"], "session": "alice",
                                     "resource_id": "web-1"}).status_code == 201
    assert client.delete(f"{SERVICES}/{game['id']}").status_code == 204
    assert store.list(SERVICE) == [] and store.list(ROUTE) == []
    assert hub.changed_kinds[-1] == SERVICE
    again = created(client, {**GAME, "id": "again"})
    assert again["zone"] == 0xB000                          # the index is free again too
    assert problem(client.delete(f"{SERVICES}/{game['id']}"), 404)


# -- routes ----------------------------------------------------------------------------

def test_routes_are_added_listed_with_learned_ones_and_removed(client, store, hub, pools):
    game = created(client, GAME)
    resp = client.post(ROUTES, json={"service_id": game["id"], "session": "alice",
                                     "resource_id": "web-2"})
    assert resp.status_code == 201, resp.text
    route = resp.json()
    assert route["id"] == route_id(game["id"], "alice") and route["learned"] is False
    assert (route["session"], route["resource_id"]) == ("alice", "web-2")
    assert hub.changed_kinds[-1] == ROUTE
    learned_id = route_id(game["id"], "bob")
    store.put(SESSION, learned_id, {"pool_id": "web", "service_id": game["id"],
                                    "session": "bob", "resource_id": "web-1",
                                    "learned_at": 100.0, "last_seen": 200.0,
                                    "idle_timeout": 600, "expires_at": 800.0})
    listed = {r["session"]: r for r in client.get(ROUTES).json()}
    assert listed["alice"]["learned"] is False and listed["alice"]["expires_at"] is None
    assert listed["bob"]["learned"] is True
    assert (listed["bob"]["last_seen"], listed["bob"]["expires_at"]) == (200.0, 800.0)
    assert client.get(ROUTES, params={"service_id": "other"}).json() == []
    assert problem(client.post(ROUTES, json={"service_id": game["id"], "session": "alice",
                                             "resource_id": "web-1"}), 409)
    body = problem(client.delete(f"{ROUTES}/{learned_id}"), 409)
    assert "expires" in body["detail"]
    assert client.delete(f"{ROUTES}/{route['id']}").status_code == 204
    assert [r["session"] for r in client.get(ROUTES).json()] == ["bob"]
    assert problem(client.delete(f"{ROUTES}/{route['id']}"), 404)


def test_bad_routes_are_refused_naming_the_field(client, store, pools):
    game, dns = created(client, GAME), created(client, DNS)
    ok = {"service_id": game["id"], "session": "alice", "resource_id": "web-1"}
    assert "no service" in reasons(client.post(ROUTES, json={**ok, "service_id": "nope"}))[
        "body.service_id"]
    assert "not one of" in reasons(client.post(ROUTES, json={**ok, "resource_id": "db-1"}))[
        "body.resource_id"]
    prefix = {"service_id": dns["id"], "session": "alice", "resource_id": "web-2"}
    assert "client prefix" in reasons(client.post(ROUTES, json=prefix))["body.session"]
    assert "body.session" in reasons(client.post(ROUTES, json={**prefix,
                                                               "session": "10.9.1.1/16"}))
    assert set(reasons(client.post(ROUTES, json={"session": ""}))) == {
        "body.service_id", "body.session", "body.resource_id"}
    assert store.list(ROUTE) == []
    resp = client.post(ROUTES, json={**prefix, "session": "10.9.1.7"})
    assert resp.status_code == 201 and resp.json()["session"] == "10.9.1.7/32"


# -- hubctl ----------------------------------------------------------------------------

def test_hubctl_adds_lists_and_routes_services(capsys, http, tmp_path, store, pools):
    path = tmp_path / "game.yaml"
    path.write_text("external_ip: 198.51.100.80\nprotocol: udp\nport: 7777\n"
                    "resources: [web-1, web-2]\nmetadata: {pattern: 'session=(\\w+)'}\n")
    code, out, _ = run_cli(capsys, http, "shard", "service-add", "web", "-f", str(path))
    assert code == 0 and "web-udp-7777" in out and "session=(\\w+)" in out
    code, out, _ = run_cli(capsys, http, "shard", "services", "web")
    assert code == 0 and "198.51.100.80" in out and "web-1,web-2" in out
    code, out, _ = run_cli(capsys, http, "shard", "routes", "web", "add", "web-udp-7777",
                           "alice", "web-2")
    assert code == 0 and "goes to web-2" in out
    for argv in (("shard", "routes", "web"), ("shard", "routes", "web", "list", "--service",
                                               "web-udp-7777")):
        code, out, _ = run_cli(capsys, http, *argv)
        assert code == 0 and "alice" in out and "web-2" in out
    rid = route_id("web-udp-7777", "alice")
    code, out, _ = run_cli(capsys, http, "shard", "routes", "web", "delete", rid)
    assert code == 0 and store.list(ROUTE) == []
    code, _, err = run_cli(capsys, http, "shard", "routes", "web", "add", "web-udp-7777",
                           "bob", "db-1")
    assert code == 1 and "body.resource_id" in err
    code, out, _ = run_cli(capsys, http, "shard", "service-delete", "web", "web-udp-7777")
    assert code == 0 and store.list(SERVICE) == []
