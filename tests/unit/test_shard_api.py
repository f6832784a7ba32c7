"""REST for shard resources, shards and rotations (TestClient, in-memory store, fake hub)."""
from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import claims, interfaces
from controller.core.topology import Host
from controller.features.shard.claims import EXTERNAL_IP
from controller.features.shard.records import (LEASE, RESOURCE, ROTATION, STATE, Deprecated, Lease,
                                               Move, PoolState, Rotation, Step)
from controller.features.shard.rotation import DRAINING, Shard
from controller.store import Store, open_store
from tests.unit.fakes import FakeHub

PROBLEM = "application/problem+json"
IF1, IF2, IF3, IF4 = ("0000000000000a01:2", "0000000000000a01:3", "0000000000000a01:4",
                      "0000000000000a01:5")
UNKNOWN_IF = "0000000000000a09:9"
POOL = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/29"}
RESOURCES = "/v1/shard-pools/web/resources"


class ShardHub(FakeHub):
    """The fake hub, answering the shard feature's rotate query as the runtime would."""

    def __init__(self) -> None:
        super().__init__()
        self.rotate_error: Exception | None = None

    def query(self, feature: str, name: str, **args: Any) -> Any:
        if (feature, name) != ("shard", "rotate"):
            return super().query(feature, name, **args)
        self.queries.append((feature, name, args))
        if self.rotate_error is not None:
            raise self.rotate_error
        return {"id": "r100-abc", "state": "running"}


@pytest.fixture
def hub() -> ShardHub:
    return ShardHub()


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    for port, iid in ((2, IF1), (3, IF2), (4, IF3), (5, IF4)):
        interfaces.record_host(s, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01, port))
    # IF3 runs a personality, IF4 is a persona's: both are held.
    s.put("interface", IF3, {**s.get("interface", IF3).body, "personality_id": "open"})
    s.create("persona", "dev", {"state": "active", "index": 1,
                                "document": {"name": "dev", "ip_range": "10.100.0.0/24"},
                                "attachments": [{"interface_id": IF4, "ip": "10.100.0.2"}]})
    yield s
    s.close()


@pytest.fixture
def pool(client: TestClient) -> dict[str, Any]:
    resp = client.post("/v1/shard-pools", json=POOL)
    assert resp.status_code == 201, resp.text
    return resp.json()


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    return resp.json()


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def enrolled(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = client.post(RESOURCES, json={"interface_id": IF1, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


# -- enrolling -------------------------------------------------------------------------

def test_enrolling_stores_the_resource_and_shows_its_key_once(
        client: TestClient, store: Store, hub: ShardHub, pool: dict[str, Any]) -> None:
    resp = client.post(RESOURCES, json={"interface_id": IF1})
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert resp.headers["location"] == f"{RESOURCES}/web-1"
    assert {k: answer[k] for k in ("id", "interface_id", "external_ip", "rap")} == {
        "id": "web-1", "interface_id": IF1, "external_ip": "198.51.100.65",
        "rap": {"server": "10.0.1.254", "port": 6699}}
    assert len(answer["key"]) >= 32
    stored = store.get(RESOURCE, "web-1").body
    assert (stored["pool_id"], stored["key"], stored["index"]) == ("web", answer["key"], 0)
    assert hub.changed_kinds[-1] == RESOURCE
    for got in (client.get(f"{RESOURCES}/web-1"), client.get(RESOURCES)):
        assert got.status_code == 200 and answer["key"] not in got.text and "key" not in got.text

    second = enrolled(client, interface_id=IF2)
    assert (second["id"], second["external_ip"]) == ("web-2", "198.51.100.66")
    assert store.get(RESOURCE, "web-2").body["index"] == 1
    assert second["key"] != answer["key"]


def test_an_external_ip_and_id_may_be_given(client: TestClient, pool: dict[str, Any]) -> None:
    answer = enrolled(client, external_ip="198.51.100.70", id="db")
    assert (answer["id"], answer["external_ip"]) == ("db", "198.51.100.70")
    assert enrolled(client, interface_id=IF2)["external_ip"] == "198.51.100.65"
    assert problem(client.post(RESOURCES, json={"interface_id": IF2, "id": "db"}), 409)["id"] == "db"


def test_an_interface_outside_every_subnet_has_no_rap_server(
        client: TestClient, store: Store, pool: dict[str, Any]) -> None:
    interfaces.record_host(store, Host("02:00:00:00:00:09", ("192.0.2.9",), 0xA02, 1))
    assert enrolled(client, interface_id="0000000000000a02:1")["rap"] == {"server": None,
                                                                          "port": 6699}


@pytest.mark.parametrize("body, bad", [
    ({"interface_id": UNKNOWN_IF, "external_ip": "198.51.100.1"},
     ["body.interface_id", "body.external_ip"]),
    ({"interface_id": IF1, "external_ip": "198.51.100.64"}, ["body.external_ip"]),   # network
    ({"interface_id": IF1, "external_ip": "198.51.100.71"}, ["body.external_ip"]),   # broadcast
    ({"interface_id": IF1, "external_ip": "300.1.1.1"}, ["body.external_ip"]),
    ({"interface_id": "eth0"}, ["body.interface_id"]),
    ({"interface_id": IF1, "surprise": 1}, ["body.surprise"]),
    ({}, ["body.interface_id"]),
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
        client: TestClient, store: Store, hub: ShardHub, pool: dict[str, Any],
        body: dict[str, Any], bad: list[str]) -> None:
    notices = len(hub.changed_kinds)
    refused = problem(client.post(RESOURCES, json=body), 422)
    assert fields(refused) == bad
    assert store.list(RESOURCE) == [] and len(hub.changed_kinds) == notices


@pytest.mark.parametrize("interface, owner", [(IF3, "personality open"), (IF4, "persona dev")])
def test_an_interface_held_by_another_feature_is_refused(
        client: TestClient, store: Store, hub: ShardHub, pool: dict[str, Any],
        interface: str, owner: str) -> None:
    notices = len(hub.changed_kinds)
    refused = problem(client.post(RESOURCES, json={"interface_id": interface}), 409)
    assert fields(refused) == ["body.interface_id"] and refused["owner"] == owner
    assert refused["interface_id"] == interface
    assert store.list(RESOURCE) == [] and len(hub.changed_kinds) == notices
    assert not claims.holders(store, EXTERNAL_IP, "198.51.100.65")


def test_an_interface_or_address_a_resource_holds_is_refused(
        client: TestClient, store: Store, pool: dict[str, Any]) -> None:
    enrolled(client)
    refused = problem(client.post(RESOURCES, json={"interface_id": IF1}), 409)
    assert fields(refused) == ["body.interface_id"] and refused["owner"] == "shard-resource web-1"
    refused = problem(client.post(RESOURCES, json={"interface_id": IF2,
                                                   "external_ip": "198.51.100.65"}), 409)
    assert fields(refused) == ["body.external_ip"]
    assert [d.id for d in store.list(RESOURCE)] == ["web-1"]


def test_a_full_external_range_is_409(client: TestClient, store: Store) -> None:
    assert client.post("/v1/shard-pools", json={**POOL, "external_range": "198.51.100.64/30"}
                       ).status_code == 201
    assert [enrolled(client, interface_id=i)["external_ip"] for i in (IF1, IF2)] == \
        ["198.51.100.65", "198.51.100.66"]
    interfaces.record_host(store, Host("02:00:00:00:00:09", ("10.0.1.9",), 0xA02, 1))
    refused = problem(client.post(RESOURCES, json={"interface_id": "0000000000000a02:1"}), 409)
    assert fields(refused) == ["body.external_ip"]


def test_an_unknown_pool_is_404(client: TestClient, store: Store) -> None:
    assert problem(client.post(RESOURCES, json={"interface_id": IF1}), 404)["kind"] == "shard-pool"
    for path in (RESOURCES, f"{RESOURCES}/x", "/v1/shard-pools/web/shards",
                 "/v1/shard-pools/web/rotations", "/v1/shard-pools/web/rotations/r1"):
        problem(client.get(path), 404)
    problem(client.post("/v1/shard-pools/web/rotate"), 404)
    assert store.list(RESOURCE) == []


# -- keys and release ------------------------------------------------------------------

def test_a_new_key_replaces_the_old(client: TestClient, store: Store, hub: ShardHub,
                                    pool: dict[str, Any]) -> None:
    old = enrolled(client)["key"]
    resp = client.post(f"{RESOURCES}/web-1/key")
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["id"] == "web-1" and new["key"] != old
    assert store.get(RESOURCE, "web-1").body["key"] == new["key"]
    assert hub.changed_kinds[-1] == RESOURCE
    assert new["key"] not in client.get(f"{RESOURCES}/web-1").text
    problem(client.post(f"{RESOURCES}/nope/key"), 404)


def test_a_resource_of_another_pool_is_not_found_here(client: TestClient,
                                                       pool: dict[str, Any]) -> None:
    enrolled(client)
    assert client.post("/v1/shard-pools", json={"name": "db", "pool": "10.201.0.0/16",
                                                "external_range": "198.51.100.128/29"}
                       ).status_code == 201
    for method, path in (("GET", "/v1/shard-pools/db/resources/web-1"),
                         ("POST", "/v1/shard-pools/db/resources/web-1/key"),
                         ("DELETE", "/v1/shard-pools/db/resources/web-1")):
        problem(client.request(method, path), 404)
    assert client.get("/v1/shard-pools/db/resources").json() == []


def test_release_frees_the_interface_and_address_and_lets_the_pool_go(
        client: TestClient, store: Store, hub: ShardHub, pool: dict[str, Any]) -> None:
    enrolled(client)
    refused = problem(client.delete("/v1/shard-pools/web"), 409)
    assert refused["resources"] == ["web-1"] and store.find("shard-pool", "web") is not None
    resp = client.delete(f"{RESOURCES}/web-1")
    assert resp.status_code == 204 and resp.content == b""
    assert store.find(RESOURCE, "web-1") is None and hub.changed_kinds[-1] == RESOURCE
    problem(client.get(f"{RESOURCES}/web-1"), 404)
    problem(client.delete(f"{RESOURCES}/web-1"), 404)
    again = enrolled(client)               # the same interface, address and index again
    assert (again["external_ip"], store.get(RESOURCE, again["id"]).body["index"]) == \
        ("198.51.100.65", 0)
    client.delete(f"{RESOURCES}/{again['id']}")
    assert client.delete("/v1/shard-pools/web").status_code == 200


# -- the merged view -------------------------------------------------------------------

def test_an_unleased_resource_has_no_address(client: TestClient, pool: dict[str, Any]) -> None:
    enrolled(client)
    view = client.get(f"{RESOURCES}/web-1").json()
    assert {k: view[k] for k in ("shard_id", "address", "deprecated", "lease", "history", "move")} \
        == {"shard_id": None, "address": None, "deprecated": [], "history": [], "move": None,
            "lease": {"state": "unleased", "expires_at": None}}
    assert (view["pool_id"], view["interface_id"], view["external_ip"]) == \
        ("web", IF1, "198.51.100.65")


def test_the_view_merges_the_lease(client: TestClient, store: Store, pool: dict[str, Any]) -> None:
    enrolled(client)
    enrolled(client, interface_id=IF2)
    lease = Lease("web-1", state="leased", address="10.200.0.20", shard_id="web-s2",
                  expires_at=2000.0,
                  deprecated=(Deprecated("10.200.0.5", "web-s1", 900.0, 4500.0, 3),),
                  move=Move("r1", "web-s3", "10.200.0.40", "announcing", 1000.0, 1005.0),
                  history=({"at": 1.0, "event": "leased", "address": "10.200.0.5"},))
    store.put(LEASE, "web-1", lease.to_body())
    view = client.get(f"{RESOURCES}/web-1").json()
    assert (view["shard_id"], view["address"], view["lease"]) == \
        ("web-s2", "10.200.0.20", {"state": "leased", "expires_at": 2000.0})
    assert view["deprecated"] == [{"address": "10.200.0.5", "shard_id": "web-s1",
                                   "connections": 3, "since": 900.0, "expires_at": 4500.0}]
    assert view["move"]["to_address"] == "10.200.0.40"
    assert view["history"] == [{"at": 1.0, "event": "leased", "address": "10.200.0.5"}]
    listed = {r["id"]: r for r in client.get(RESOURCES).json()}
    assert listed["web-1"] == view and listed["web-2"]["lease"]["state"] == "unleased"


# -- shards ----------------------------------------------------------------------------

def test_shards_count_members_from_the_leases(client: TestClient, store: Store,
                                              pool: dict[str, Any]) -> None:
    assert client.get("/v1/shard-pools/web/shards").json() == []
    for iid in (IF1, IF2):
        enrolled(client, interface_id=iid)
    interfaces.record_host(store, Host("02:00:00:00:00:09", ("10.0.1.9",), 0xA02, 1))
    enrolled(client, interface_id="0000000000000a02:1")
    state = PoolState("web", (Shard("web-s1", IPv4Network("10.200.0.0/28"), 10.0, 310.0),
                              Shard("web-s2", IPv4Network("10.200.0.16/28"), 20.0, 320.0),
                              Shard("web-s3", IPv4Network("10.200.0.32/28"), 5.0, 30.0,
                                    state=DRAINING)))
    store.put(STATE, "web", state.to_body())
    store.put(LEASE, "web-1", Lease("web-1", "leased", "10.200.0.2", "web-s1").to_body())
    moving = Lease("web-2", "leased", "10.200.0.34", "web-s3",
                   move=Move("r1", "web-s2", "10.200.0.18", "switching", 1.0, 6.0))
    store.put(LEASE, "web-2", moving.to_body())                       # counts where it goes
    store.put(LEASE, "web-3", Lease("web-3", "offered").to_body())   # no address: no member
    store.put(LEASE, "gone", Lease("gone", "leased", "10.200.0.3", "web-s1").to_body())
    shards = {s["id"]: s for s in client.get("/v1/shard-pools/web/shards").json()}
    assert {k: (s["members"], s["utilization"], s["state"]) for k, s in shards.items()} == {
        "web-s1": (["web-1"], 1 / 14, "active"), "web-s2": (["web-2"], 1 / 14, "active"),
        "web-s3": ([], 0.0, "draining")}
    assert (shards["web-s2"]["cidr"], shards["web-s2"]["created_at"],
            shards["web-s2"]["expires_at"], shards["web-s2"]["usable"]) == \
        ("10.200.0.16/28", 20.0, 320.0, 14)


# -- rotation --------------------------------------------------------------------------

def test_rotate_asks_the_hub_and_answers_202(client: TestClient, hub: ShardHub,
                                             pool: dict[str, Any]) -> None:
    enrolled(client)
    enrolled(client, interface_id=IF2)
    resp = client.post("/v1/shard-pools/web/rotate")
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"id": "r100-abc", "state": "running"}
    assert resp.headers["location"] == "/v1/shard-pools/web/rotations/r100-abc"
    assert hub.queries[-1] == ("shard", "rotate", {"pool_id": "web", "resources": None})
    for body in ({}, {"resources": []}, {"resources": None}):
        assert client.post("/v1/shard-pools/web/rotate", json=body).status_code == 202
        assert hub.queries[-1][2]["resources"] is None
    client.post("/v1/shard-pools/web/rotate", json={"resources": ["web-2", "web-1", "web-2"]})
    assert hub.queries[-1][2] == {"pool_id": "web", "resources": ["web-2", "web-1"]}


def test_rotate_refuses_resources_of_no_or_another_pool(client: TestClient, hub: ShardHub,
                                                        pool: dict[str, Any]) -> None:
    enrolled(client)
    asked = len(hub.queries)
    refused = problem(client.post("/v1/shard-pools/web/rotate",
                                  json={"resources": ["web-1", "nope", "web-1", "other"]}), 422)
    assert fields(refused) == ["body.resources[1]", "body.resources[3]"]
    assert len(hub.queries) == asked
    hub.rotate_error = TimeoutError()
    assert problem(client.post("/v1/shard-pools/web/rotate"), 503)


def test_rotations_are_listed_newest_first_and_shown_with_their_steps(
        client: TestClient, store: Store, pool: dict[str, Any]) -> None:
    assert client.get("/v1/shard-pools/web/rotations").json() == []
    old = Rotation("r1", "web", 100.0, state="done", finished_at=103.0,
                   steps=[Step("web-1", "web-s1", "web-s2", "10.200.0.2", "10.200.0.18", "done")])
    new = Rotation("r2", "web", 200.0, forced=("web-1",), reason="forced")
    other = Rotation("r3", "db", 300.0)
    for r in (old, new, other):
        store.put(ROTATION, r.id, r.to_body())
    assert [r["id"] for r in client.get("/v1/shard-pools/web/rotations").json()] == ["r2", "r1"]
    shown = client.get("/v1/shard-pools/web/rotations/r1").json()
    assert shown == {"id": "r1", **old.to_body()}
    assert shown["steps"][0]["state"] == "done" and shown["finished_at"] == 103.0
    assert client.get("/v1/shard-pools/web/rotations/r2").json()["forced"] == ["web-1"]
    problem(client.get("/v1/shard-pools/web/rotations/r3"), 404)
    problem(client.get("/v1/shard-pools/web/rotations/nope"), 404)
