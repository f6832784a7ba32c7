"""The CRUD layer itself (controller/api/crud.py), through the subnet and persona routes:
dry runs, revisions on every write, the one answer shape, 405 with the path's methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.bodies import as_patch, integral
from controller.api.crud import merge_patch, view
from controller.core import interfaces
from controller.core.topology import Host
from controller.store import Store, open_store
from tests.unit.fakes import FakeHub

SEG1 = {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}
PERSONA = {"name": "dev", "ip_range": "10.100.0.0/24", "protocols": ["tcp"],
           "expiration": "2099-12-31T23:59:59Z"}
META = {"id", "revision", "created_at", "updated_at"}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    interfaces.record_host(s, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    yield s
    s.close()


def status(resp: Any, code: int) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_every_stored_document_has_one_shape(client: TestClient, store: Store) -> None:
    subnet = status(client.post("/v1/subnets", json={"id": "seg1", **SEG1}), 201)
    personality = status(client.post("/v1/personalities", json={"name": "open"}), 201)
    persona = status(client.post("/v1/personas", json=PERSONA), 201)
    iface = client.get("/v1/interfaces").json()[0]
    for answer, kind in ((subnet, "subnet"), (personality, "personality"), (persona, "persona"),
                         (iface, "interface")):
        doc = store.get(kind, answer["id"])
        assert {k: answer[k] for k in (*META, *doc.body)} == view(doc)
        assert META <= set(answer) and "body" not in answer


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/subnets", {"id": "seg2", "cidr": "10.0.2.0/24", "gateway": "10.0.2.1"}),
    ("PUT", "/v1/subnets/seg1", {**SEG1, "gateway": "10.0.1.1", "revision": 1}),
    ("DELETE", "/v1/subnets/seg1", None),
])
def test_a_dry_run_checks_everything_and_stores_nothing(client: TestClient, store: Store, hub: FakeHub,
                                                         method: str, path: str, body: Any) -> None:
    store.create("subnet", "seg1", SEG1)
    before, journal = store.list("subnet"), store.events()
    answer = status(client.request(method, path, params={"dry_run": "true"}, json=body), 200)
    assert answer["id"] == path.rsplit("/", 1)[-1] if method != "POST" else answer["id"] == "seg2"
    assert store.list("subnet") == before and store.events() == journal
    assert hub.changed_kinds == []
    # The same refusals as the real write.
    status(client.request(method, path, params={"dry_run": "true"},
                          json={**(body or {}), "cidr": "10.0.300.0/24"} if body else None,
                          headers={"If-Match": '"7"'} if method == "DELETE" else {}),
           409 if method == "DELETE" else 422)


def test_if_match_on_put_patch_and_delete(client: TestClient, store: Store) -> None:
    status(client.post("/v1/personas", json=PERSONA), 201)
    url = "/v1/personas/dev"
    status(client.put(url, json=PERSONA, headers={"If-Match": '"2"'}), 409)
    status(client.put(url, json=PERSONA, headers={"If-Match": '"1"'}), 200)
    status(client.patch(url, json={"owner": "ops"}, headers={"If-Match": "1"}), 409)
    status(client.patch(url, json={"owner": "ops"}, headers={"If-Match": 'W/"2"'}), 200)
    status(client.delete(url, headers={"If-Match": '"2"'}), 409)
    for bad in ("null", "*", '"0"', '"1', "1.5"):
        body = status(client.delete(url, headers={"If-Match": bad}), 422)
        assert body["errors"][0]["field"] == "header.if-match"
    status(client.delete(url, headers={"If-Match": '"3"'}), 200)


def test_a_patch_of_a_kind_without_merge_patch_is_405_naming_the_methods(client: TestClient) -> None:
    for method in ("PATCH", "OPTIONS", "TRACE"):
        resp = client.request(method, "/v1/subnets/seg1")
        status(resp, 405)
        assert resp.headers["allow"] == "DELETE, GET, PUT"
    resp = client.options("/v1/interfaces/0000000000000a01:2")  # PUT from a feature
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, PATCH, PUT"
    assert client.options("/v1/personas").headers["allow"] == "GET, POST"


def test_numbers_without_a_fraction_are_integers(client: TestClient, store: Store) -> None:
    resp = client.post("/v1/personalities", content=b'{"name": "web", "firewall_rules": '
                       b'[{"protocol": "tcp", "port": 443.0, "action": "allow"}]}',
                       headers={"content-type": "application/json"})
    assert status(resp, 201)["firewall_rules"][0]["port"] == 443
    body = status(client.post("/v1/personalities", json={"name": "x", "firewall_rules": [
        {"protocol": "tcp", "port": 443.5, "action": "allow"}]}), 422)
    assert body["errors"][0]["field"] == "body.firewall_rules[0].port"
    assert integral({"a": [1.0, 2.5, True, "3.0"]}) == {"a": [1, 2.5, True, "3.0"]}


def test_merge_patch_and_its_schema() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"c": None, "e": 4}}) == \
        {"b": {"d": 3, "e": 4}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    schema = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "qos": {"anyOf": [{"type": "object", "required": ["rate"], "properties": {"rate": {"type": "integer"}}},
                          {"type": "null"}], "description": "limits"}}}
    patch = as_patch(schema)
    assert "required" not in patch and patch["properties"]["name"] == {"type": "string"}
    qos = patch["properties"]["qos"]
    assert qos["description"] == "limits" and qos["anyOf"][-1] == {"type": "null"}
    assert qos["anyOf"][0]["properties"]["rate"] == {"type": "integer"}  # given, never removed
    assert "required" not in qos["anyOf"][0]


def test_openapi_states_ids_revisions_and_if_match(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    post = paths["/v1/subnets"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert post["properties"]["id"]["pattern"].startswith("^[A-Za-z0-9]")
    assert post["properties"]["cidr"]["x-rule"] and "pattern" in post["properties"]["cidr"]
    put = paths["/v1/subnets/{id}"]["put"]
    assert "revision" in put["requestBody"]["content"]["application/yaml"]["schema"]["required"]
    assert not [p for p in put.get("parameters", []) if p["in"] == "header"]
    delete = paths["/v1/subnets/{id}"]["delete"]
    if_match = next(p for p in delete["parameters"] if p["name"] == "If-Match")
    assert if_match["schema"]["type"] == "string" and "anyOf" not in if_match["schema"]
    assert if_match["schema"]["pattern"] == '^(?:(?:W/)?"([1-9][0-9]{0,15})"|([1-9][0-9]{0,15}))$'
    for status_code in ("400", "415", "422"):
        assert status_code in paths["/v1/subnets/{id}"]["put"]["responses"]
