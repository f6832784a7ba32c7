"""REST CRUD for subnets and personalities (TestClient, in-memory store, fake hub)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.fakes import FakeHub
from controller.store import Store, open_store

PROBLEM = "application/problem+json"
SEG1 = {"id": "seg1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}
WEB = {"name": "Web Front", "subnet_id": "seg1", "ip_addresses": ["10.0.1.10"],
       "firewall_rules": [{"protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"}],
       "default_action": "deny"}
LOCKDOWN_YAML = """\
name: lockdown
subnet_id: seg1
ip_addresses: [10.0.1.20]
firewall_rules:
  - protocol: tcp
    port: 443
    direction: ingress
    action: allow
default_action: deny
expires_after: 30m
"""


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


@pytest.fixture
def seg1(client: TestClient) -> dict[str, Any]:
    resp = client.post("/v1/subnets", json=SEG1)
    assert resp.status_code == 201
    return resp.json()


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and isinstance(body["errors"], list)
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def fields_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A document answer without the stored document's own members."""
    return {k: v for k, v in doc.items() if k not in ("id", "revision", "created_at", "updated_at")}


def events(store: Store, kind: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(e.kind, e.subject, e.message, e.data) for e in store.events(kind=kind)]


# -- subnets ------------------------------------------------------------------------

def test_subnet_crud(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post("/v1/subnets", json={**SEG1, "description": "first"})
    assert resp.status_code == 201
    doc = resp.json()
    assert set(doc) == {"id", "revision", "created_at", "updated_at", "cidr", "gateway", "description"}
    assert doc["id"] == "seg1" and doc["revision"] == 1
    assert fields_of(doc) == {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254", "description": "first"}
    assert resp.headers["location"] == "/v1/subnets/seg1" and resp.headers["etag"] == '"1"'
    assert store.get("subnet", "seg1").body == fields_of(doc)
    assert hub.changed_kinds == ["subnet"]

    assert client.get("/v1/subnets/seg1").json() == doc
    assert client.get("/v1/subnets").json() == [doc]

    resp = client.put("/v1/subnets/seg1", json={"cidr": "10.0.1.0/24", "gateway": "10.0.1.1", "revision": 1})
    assert resp.status_code == 200
    assert resp.json()["revision"] == 2 and fields_of(resp.json()) == {"cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}
    assert hub.changed_kinds == ["subnet"] * 2

    resp = client.delete("/v1/subnets/seg1")
    assert resp.status_code == 200 and resp.json()["revision"] == 2
    assert store.list("subnet") == [] and hub.changed_kinds == ["subnet"] * 3
    problem(client.get("/v1/subnets/seg1"), 404)
    assert events(store) == [("subnet", "seg1", "created", {"revision": 1}),
                             ("subnet", "seg1", "updated", {"revision": 2}),
                             ("subnet", "seg1", "deleted", {"revision": 2})]


def test_subnet_id_generated_from_cidr(client: TestClient) -> None:
    resp = client.post("/v1/subnets", json={"cidr": "10.0.7.0/24", "gateway": "10.0.7.254"})
    assert resp.status_code == 201 and resp.json()["id"] == "10-0-7-0-24"


def test_subnet_duplicate_and_overlap(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    problem(client.post("/v1/subnets", json=SEG1), 409)
    body = problem(client.post("/v1/subnets", json={"id": "half", "cidr": "10.0.1.0/25",
                                                    "gateway": "10.0.1.1"}), 422)
    assert fields(body) == ["body.cidr"] and "overlaps subnet 'seg1'" in body["errors"][0]["reason"]
    assert [d.id for d in store.list("subnet")] == ["seg1"]


def test_subnet_bad_id(client: TestClient, store: Store) -> None:
    body = problem(client.post("/v1/subnets", json={"id": "a/b", "cidr": "10.0.300.0/24",
                                                    "gateway": "10.0.1.1"}), 422)
    assert fields(body) == ["body.id", "body.cidr"]
    assert store.list("subnet") == [] and events(store) == []


def test_subnet_put_revision(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    new = {"cidr": "10.0.1.0/24", "gateway": "10.0.1.253"}
    body = problem(client.put("/v1/subnets/seg1", json=new), 428)
    assert fields(body) == ["body.revision"]
    assert client.put("/v1/subnets/seg1", json=new, headers={"If-Match": '"1"'}).status_code == 200
    body = problem(client.put("/v1/subnets/seg1", json=new, headers={"If-Match": '"1"'}), 409)
    assert body["expected_revision"] == 1 and body["actual_revision"] == 2
    body = problem(client.put("/v1/subnets/seg1", json={**new, "revision": 1}), 409)
    assert store.get("subnet", "seg1").revision == 2
    problem(client.put("/v1/subnets/nope", json={**new, "revision": 1}), 404)


def test_subnet_put_must_keep_personalities_valid(client: TestClient, store: Store,
                                                  seg1: dict[str, Any]) -> None:
    assert client.post("/v1/personalities", json=WEB).status_code == 201
    body = problem(client.put("/v1/subnets/seg1", json={"cidr": "10.0.2.0/24", "gateway": "10.0.2.254",
                                                        "revision": 1}), 409)
    assert fields(body) == ["body.cidr"]
    assert "personality 'web-front'" in body["errors"][0]["reason"]
    body = problem(client.put("/v1/subnets/seg1", json={"cidr": "10.0.1.0/24", "gateway": "10.0.1.10",
                                                        "revision": 1}), 409)
    assert fields(body) == ["body.gateway"]
    assert store.get("subnet", "seg1").revision == 1


def test_subnet_delete_in_use(client: TestClient, store: Store, hub: FakeHub, seg1: dict[str, Any]) -> None:
    assert client.post("/v1/personalities", json=WEB).status_code == 201
    body = problem(client.delete("/v1/subnets/seg1"), 409)
    assert body["used_by"] == ["personality/web-front"]
    assert store.find("subnet", "seg1") is not None and hub.changed_kinds == ["subnet", "personality"]
    assert client.delete("/v1/personalities/web-front").status_code == 200
    assert client.delete("/v1/subnets/seg1").status_code == 200


def test_subnet_delete_with_stale_if_match(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    problem(client.delete("/v1/subnets/seg1", headers={"If-Match": '"5"'}), 409)
    assert store.find("subnet", "seg1") is not None
    assert client.delete("/v1/subnets/seg1", headers={"If-Match": "1"}).status_code == 200


# -- personalities ---------------------------------------------------------------------

def test_personality_create_get_list(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    resp = client.post("/v1/personalities", json=WEB)
    assert resp.status_code == 201
    doc = resp.json()
    assert set(doc) == {"id", "revision", "created_at", "updated_at", *WEB}
    assert doc["id"] == "web-front" and doc["revision"] == 1
    assert doc["firewall_rules"] == WEB["firewall_rules"]
    assert store.get("personality", "web-front").body == fields_of(doc)
    assert resp.headers["location"] == "/v1/personalities/web-front"
    assert client.get("/v1/personalities/web-front").json() == doc
    assert client.get("/v1/personalities").json() == [doc]
    assert events(store, "personality") == [("personality", "web-front", "created", {"revision": 1})]


def test_personality_given_id_and_duplicate(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    resp = client.post("/v1/personalities", json={**WEB, "id": "web"})
    assert resp.status_code == 201 and resp.json()["id"] == "web"
    assert "id" not in store.get("personality", "web").body
    body = problem(client.post("/v1/personalities", json={**WEB, "id": "web"}), 409)
    assert body["id"] == "web"
    assert client.post("/v1/personalities", json=WEB).status_code == 201  # slug web-front
    problem(client.post("/v1/personalities", json={**WEB, "name": "web front"}), 409)
    assert len(events(store, "personality")) == 2


def test_personality_yaml_body(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    resp = client.post("/v1/personalities", content=LOCKDOWN_YAML.encode(),
                       headers={"content-type": "application/yaml"})
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert doc["id"] == "lockdown"
    assert doc["expires_after"] == 1800
    assert doc["firewall_rules"] == [{"protocol": "tcp", "port": 443, "direction": "ingress",
                                      "action": "allow"}]
    assert store.get("personality", "lockdown").body == fields_of(doc)


def test_personality_unsupported_and_broken_bodies(client: TestClient, store: Store) -> None:
    problem(client.post("/v1/personalities", content=b"name: x", headers={"content-type": "text/plain"}), 415)
    problem(client.post("/v1/personalities", content=b"name: [", headers={"content-type": "application/yaml"}), 400)
    problem(client.post("/v1/personalities", json=["name"]), 400)
    assert store.list("personality") == [] and events(store) == []


def test_personality_put(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    client.post("/v1/personalities", json=WEB)
    new = {**WEB, "ip_addresses": ["10.0.1.11"], "revision": 1}
    resp = client.put("/v1/personalities/web-front", json=new)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["revision"] == 2 and doc["ip_addresses"] == ["10.0.1.11"]
    assert "revision" not in store.get("personality", "web-front").body and resp.headers["etag"] == '"2"'
    # Stale revision, in the body or in If-Match.
    body = problem(client.put("/v1/personalities/web-front", json=new), 409)
    assert body["expected_revision"] == 1 and body["actual_revision"] == 2
    problem(client.put("/v1/personalities/web-front", json=WEB, headers={"If-Match": '"1"'}), 409)
    assert client.put("/v1/personalities/web-front", json=WEB, headers={"If-Match": 'W/"2"'}).status_code == 200
    # Missing, malformed or contradictory revisions.
    problem(client.put("/v1/personalities/web-front", json=WEB), 428)
    body = problem(client.put("/v1/personalities/web-front", json={**WEB, "revision": "three"}), 422)
    assert fields(body) == ["body.revision"]
    body = problem(client.put("/v1/personalities/web-front", json=WEB, headers={"If-Match": "*"}), 422)
    assert fields(body) == ["header.if-match"]
    body = problem(client.put("/v1/personalities/web-front", json={**WEB, "revision": 3},
                              headers={"If-Match": '"2"'}), 422)
    assert fields(body) == ["body.revision"]
    body = problem(client.put("/v1/personalities/web-front", json={**WEB, "id": "other", "revision": 3}), 422)
    assert fields(body) == ["body.id"]
    problem(client.put("/v1/personalities/ghost", json={**WEB, "revision": 1}), 404)
    assert store.get("personality", "web-front").revision == 3
    assert [m for _, _, m, _ in events(store, "personality")] == ["created", "updated", "updated"]


def test_personality_put_invalid_changes_nothing(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    client.post("/v1/personalities", json=WEB)
    before = store.get("personality", "web-front")
    body = problem(client.put("/v1/personalities/web-front",
                              json={**WEB, "ip_addresses": ["10.0.9.9"], "revision": 1}), 422)
    assert fields(body) == ["body.ip_addresses[0]"]
    assert store.get("personality", "web-front") == before
    assert len(events(store, "personality")) == 1


def test_personality_delete_in_use(client: TestClient, store: Store, seg1: dict[str, Any]) -> None:
    client.post("/v1/personalities", json=WEB)
    store.put("interface", "eth1", {"personality_id": "web-front"})
    store.put("interface", "eth2", {"default_personality_id": "web-front"})
    store.put("interface", "eth3", {"personality_id": "other"})
    body = problem(client.delete("/v1/personalities/web-front"), 409)
    assert body["used_by"] == ["interface/eth1", "interface/eth2"]
    store.delete("interface", "eth1")
    problem(client.delete("/v1/personalities/web-front"), 409)
    store.delete("interface", "eth2")
    resp = client.delete("/v1/personalities/web-front")
    assert resp.status_code == 200 and resp.json()["id"] == "web-front"
    assert store.list("personality") == []
    problem(client.delete("/v1/personalities/web-front"), 404)
    assert events(store, "personality")[-1] == ("personality", "web-front", "deleted", {"revision": 1})


def test_name_without_usable_id(client: TestClient, store: Store) -> None:
    body = problem(client.post("/v1/personalities", json={"name": "!!!"}), 422)
    assert fields(body) == ["body.name"]
    assert client.post("/v1/personalities", json={"name": "!!!", "id": "bang"}).status_code == 201


# -- bad documents: 422 naming the field, nothing stored ---------------------------------

BAD = [
    ("invalid CIDR", {"firewall_rules": [{"source": "10.0.0.0/33", "protocol": "tcp", "action": "allow"}]},
     "body.firewall_rules[0].source"),
    ("unknown protocol", {"firewall_rules": [{"protocol": "tcp", "action": "allow"},
                                             {"protocol": "sctp", "action": "deny"}]},
     "body.firewall_rules[1].protocol"),
    ("port out of range", {"firewall_rules": [{"protocol": "tcp", "action": "allow"},
                                              {"protocol": "tcp", "action": "allow"},
                                              {"protocol": "udp", "port": 70000, "action": "allow"}]},
     "body.firewall_rules[2].port"),
    ("next hop outside the subnet", {"routing_table": [{"destination": "0.0.0.0/0", "next_hop": "10.9.9.9"}]},
     "body.routing_table[0].next_hop"),
    ("unknown subnet", {"subnet_id": "seg9"}, "body.subnet_id"),
]


@pytest.mark.parametrize("what, change, field", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("as_yaml", [False, True], ids=["json", "yaml"])
def test_bad_document_is_422_and_stores_nothing(client: TestClient, store: Store, what: str,
                                                change: dict[str, Any], field: str, as_yaml: bool) -> None:
    store.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    doc = {"name": "bad", "subnet_id": "seg1", **change}
    if as_yaml:
        import yaml
        resp = client.post("/v1/personalities", content=yaml.safe_dump(doc).encode(),
                           headers={"content-type": "application/yaml"})
    else:
        resp = client.post("/v1/personalities", json=doc)
    body = problem(resp, 422)
    assert fields(body) == [field]
    assert body["errors"][0]["reason"]
    assert field in body["detail"]
    assert store.list("personality") == []
    assert events(store) == []


def test_openapi_documents_the_routes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/v1/subnets", "/v1/personalities"):
        assert {"get", "post"} <= set(doc["paths"][path])
        assert {"get", "put", "delete"} <= set(doc["paths"][path + "/{id}"])
    post = doc["paths"]["/v1/personalities"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/yaml"}
    assert "firewall_rules" in post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert list(post["responses"]["422"]["content"]) == [PROBLEM]
    stored = doc["components"]["schemas"]["StoredPersonality"]["properties"]
    assert {"id", "revision", "created_at", "updated_at", "name", "firewall_rules"} <= set(stored)
    assert {"id", "revision", "cidr", "gateway"} <= set(doc["components"]["schemas"]["StoredSubnet"]["properties"])
