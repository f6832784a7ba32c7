"""REST for personas, attachments, usage and alerts (TestClient, in-memory store, fake hub)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from controller.core import interfaces
from controller.api.app import create_app
from controller.api.context import ApiContext
from controller.features.persona import store as persona_store
from controller.features.persona.settings import PersonaSettings
from controller.store import Store, open_store
from controller.core.topology import Host
from tests.unit.fakes import FakeHub, persona_preview_answer

PROBLEM = "application/problem+json"
FUTURE = "2099-12-31T23:59:59Z"
IF1, IF2 = "0000000000000a01:2", "0000000000000a01:3"
ISSUE_EXAMPLE = {"name": "TempDevNetwork", "ip_range": "10.100.0.0/24", "protocols": ["tcp", "udp"],
                 "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
                 "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                       {"protocol": "tcp", "port": 22, "action": "deny"}],
                 "expiration": "2024-12-31T23:59:59Z"}
SEED = {**ISSUE_EXAMPLE, "expiration": FUTURE}
SEED_YAML = """\
name: TempDevNetwork
ip_range: 10.100.0.0/24
protocols: [tcp, udp]
qos: {bandwidth: 100Mbps, latency: 50ms}
security_policies:
  - {protocol: tcp, port: 80, action: allow}
  - {protocol: tcp, port: 22, action: deny}
expiration: 2099-12-31T23:59:59Z
"""


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    interfaces.record_host(s, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    interfaces.record_host(s, Host("02:00:00:00:00:02", ("10.0.1.2",), 0xA01, 3))
    yield s
    s.close()


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and isinstance(body["errors"], list)
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def created(client: TestClient, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    resp = client.post("/v1/personas", json={**(body or SEED), **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()


# -- create ----------------------------------------------------------------------------------

def test_the_issue_example_is_refused_for_its_past_date_only(client: TestClient, store: Store,
                                                            hub: FakeHub) -> None:
    body = problem(client.post("/v1/personas", json=ISSUE_EXAMPLE), 422)
    assert fields(body) == ["body.expiration"]
    assert "2024-12-31T23:59:59Z is in the past" in body["errors"][0]["reason"]
    assert body["detail"] == "invalid persona: body.expiration"
    assert store.list("persona") == [] and hub.persona_notices == 0


def test_create_answers_201_with_id_gateway_and_nat(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post("/v1/personas", json=SEED)
    assert resp.status_code == 201
    p = resp.json()
    assert resp.headers["location"] == "/v1/personas/tempdevnetwork" and resp.headers["etag"] == '"1"'
    assert (p["id"], p["gateway"], p["nat"], p["state"], p["index"]) == \
        ("tempdevnetwork", "10.100.0.1", None, "active", 1)
    assert p["remapped"] == [] and p["attachments"] == [] and p["expired_at"] is None
    assert p["document"]["qos"] == {"bandwidth": "100Mbps", "latency": "50ms",
                                    "bandwidth_kbps": 100_000, "latency_ms": 50.0}
    assert hub.persona_notices == 1
    stored = store.get("persona", "tempdevnetwork")
    assert {k: p[k] for k in stored.body} == stored.body


def test_create_from_yaml(client: TestClient) -> None:
    resp = client.post("/v1/personas", content=SEED_YAML, headers={"content-type": "application/yaml"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["document"]["expiration"] == FUTURE


@pytest.mark.parametrize("change, field, words", [
    ({"ip_range": "10.100.0.300/24"}, "body.ip_range", "not a valid IPv4 network"),
    ({"protocols": ["tcp", "http"]}, "body.protocols[1]", "'http' is not allowed"),
    ({"expiration": "2024-12-31T23:59:59Z"}, "body.expiration", "in the past"),
    ({"qos": {"bandwidth": "fast"}}, "body.qos.bandwidth", "'fast' is not a rate"),
    ({"ip_range": "10.0.1.0/25"}, "body.ip_range", "overlaps hub subnet 'seg1'"),
    ({"id": "bad id!"}, "body.id", "must be 1-64 characters"),
])
def test_bad_input_is_refused_naming_the_field(client: TestClient, store: Store, hub: FakeHub,
                                               change: dict[str, Any], field: str, words: str) -> None:
    for dry_run in (False, True):
        body = problem(client.post("/v1/personas", params={"dry_run": dry_run}, json={**SEED, **change}), 422)
        assert fields(body) == [field] and words in body["errors"][0]["reason"]
    assert store.list("persona") == [] and hub.persona_notices == 0 and hub.persona_previews == []


def test_a_bad_id_and_a_bad_document_are_reported_together(client: TestClient, store: Store) -> None:
    body = problem(client.post("/v1/personas", json={**SEED, "id": "-x", "qos": {"bandwidth": "fast"}}), 422)
    assert fields(body) == ["body.id", "body.qos.bandwidth"]
    assert store.list("persona") == []


def test_duplicate_names_and_ids_are_conflicts(client: TestClient, store: Store) -> None:
    created(client, id="dev")
    body = problem(client.post("/v1/personas", json={**SEED, "ip_range": "10.101.0.0/24"}), 409)
    assert fields(body) == ["body.name"] and body["title"] == "Name taken" and body["persona_id"] == "dev"
    body = problem(client.post("/v1/personas", json={**SEED, "id": "dev", "name": "x"}), 409)
    assert "persona 'dev' already exists" in body["detail"]
    assert [d.id for d in store.list("persona")] == ["dev"]


def test_overlapping_personas_get_nat_and_the_answer_says_so(client: TestClient, hub: FakeHub) -> None:
    created(client, name="a")
    b = created(client, name="b")
    assert b["nat"] == {"hub_range": "100.64.1.0/24"}
    assert b["remapped"] == [{"persona_id": "a", "hub_range": "100.64.0.0/24"}]
    assert client.get("/v1/personas/a").json()["nat"] == {"hub_range": "100.64.0.0/24"}
    assert hub.persona_notices == 2


def test_the_nat_pool_comes_from_the_context(store: Store, hub: FakeHub) -> None:
    ctx = ApiContext(store, hub, CollectorRegistry(), "0",
                     settings={"persona": PersonaSettings(nat_pool=IPv4Network("192.0.2.0/23"))})
    with TestClient(create_app(ctx)) as client:
        created(client, name="a")
        body = problem(client.post("/v1/personas", json={**SEED, "name": "b", "ip_range": "10.100.0.0/23"}), 409)
        assert body["title"] == "NAT pool exhausted" and fields(body) == ["body.ip_range"]
        assert body["nat_pool"] == "192.0.2.0/23" and "no free /23 block" in body["detail"]
        c = created(client, name="c")
        assert c["nat"] == {"hub_range": "192.0.3.0/24"}
        assert c["remapped"] == [{"persona_id": "a", "hub_range": "192.0.2.0/24"}]
    assert hub.persona_notices == 2


# -- dry run --------------------------------------------------------------------------------------

def test_dry_run_shows_what_would_be_installed_and_stores_nothing(client: TestClient, store: Store,
                                                                  hub: FakeHub) -> None:
    created(client, name="a")
    resp = client.post("/v1/personas?dry_run=true", json={**SEED, "name": "b"})
    assert resp.status_code == 200
    answer = resp.json()
    sent = hub.persona_previews[0]
    assert sent["id"] == "b" and sent["index"] == 2 and sent["nat"] == {"hub_range": "100.64.1.0/24"}
    assert answer == {"id": "b", "record": {k: v for k, v in sent.items() if k != "id"},
                      "remapped": [{"persona_id": "a", "hub_range": "100.64.0.0/24"}],
                      **persona_preview_answer(sent)}
    assert [d.id for d in store.list("persona")] == ["a"]
    assert store.get("persona", "a").body["nat"] is None and hub.persona_notices == 1


def test_dry_run_errors(client: TestClient, store: Store, hub: FakeHub) -> None:
    hub.persona_preview_error = ValueError("no gateway switch is configured")
    body = problem(client.post("/v1/personas?dry_run=true", json=SEED), 422)
    assert body["title"] == "Cannot compile" and "no gateway switch" in body["detail"]
    hub.persona_preview_error = TimeoutError()
    assert problem(client.post("/v1/personas?dry_run=true", json=SEED), 503)
    assert store.list("persona") == []


# -- read, replace, patch, delete ---------------------------------------------------------------

def test_read(client: TestClient, store: Store) -> None:
    a = created(client, name="a")
    created(client, name="b", ip_range="10.101.0.0/24")
    assert [p["id"] for p in client.get("/v1/personas").json()] == ["a", "b"]
    one = client.get("/v1/personas/a")
    assert one.headers["etag"] == '"1"'
    assert one.json() == {k: v for k, v in a.items() if k != "remapped"}
    persona_store.mark_expired(store, "b", 1.0)
    assert [p["id"] for p in client.get("/v1/personas?state=expired").json()] == ["b"]
    assert [p["id"] for p in client.get("/v1/personas", params={"state": "active"}).json()] == ["a"]
    assert fields(problem(client.get("/v1/personas?state=gone"), 422)) == ["query.state"]
    body = problem(client.get("/v1/personas/nope"), 404)
    assert body["detail"] == "persona 'nope' does not exist"


def test_put(client: TestClient, hub: FakeHub) -> None:
    created(client)
    new = {**SEED, "protocols": ["tcp"], "security_policies": [], "owner": "ops"}
    body = problem(client.put("/v1/personas/tempdevnetwork", json=new), 428)
    assert fields(body) == ["body.revision"]
    body = problem(client.put("/v1/personas/tempdevnetwork", json={**new, "ip_range": "10.100.0.0/25",
                                                                   "revision": 1}), 422)
    assert fields(body) == ["body.ip_range"] and "cannot change" in body["errors"][0]["reason"]
    body = problem(client.put("/v1/personas/tempdevnetwork", json={**new, "id": "other", "revision": 1}), 422)
    assert fields(body) == ["body.id"]
    resp = client.put("/v1/personas/tempdevnetwork", json=new, headers={"If-Match": '"1"'})
    assert resp.status_code == 200 and resp.json()["revision"] == 2
    assert resp.json()["document"]["owner"] == "ops" and resp.headers["etag"] == '"2"'
    body = problem(client.put("/v1/personas/tempdevnetwork", json={**new, "revision": 1}), 409)
    assert body["actual_revision"] == 2
    # The body a GET answers can be PUT back as it is.
    got = client.get("/v1/personas/tempdevnetwork").json()
    back = client.put("/v1/personas/tempdevnetwork", json={**got["document"], "revision": 2})
    assert back.status_code == 200 and back.json()["document"] == got["document"]
    assert hub.persona_notices == 3
    assert problem(client.put("/v1/personas/nope", json=new), 404)


def test_patch_moves_the_deadline(client: TestClient, hub: FakeHub) -> None:
    p = created(client)
    resp = client.patch("/v1/personas/tempdevnetwork", content='{"expiration": "2100-06-01T00:00:00Z"}',
                        headers={"content-type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["expires_at"] > p["expires_at"] and resp.json()["revision"] == 2
    resp = client.patch("/v1/personas/tempdevnetwork", json={"qos": {"latency": None, "bandwidth": "1Gbps"},
                                                             "revision": 2})
    assert resp.json()["document"]["qos"] == {"bandwidth": "1Gbps", "bandwidth_kbps": 1_000_000}
    assert problem(client.patch("/v1/personas/tempdevnetwork", json={"owner": "x"},
                                headers={"If-Match": '"1"'}), 409)
    body = problem(client.patch("/v1/personas/tempdevnetwork", json={"expiration": "2020-01-01T00:00:00Z"}), 422)
    assert fields(body) == ["body.expiration"]
    body = problem(client.patch("/v1/personas/tempdevnetwork", json={"ip_range": "10.9.0.0/24"}), 422)
    assert fields(body) == ["body.ip_range"]
    assert problem(client.patch("/v1/personas/tempdevnetwork", content="[1]",
                                headers={"content-type": "application/merge-patch+json"}), 400)
    assert problem(client.patch("/v1/personas/tempdevnetwork", content="x",
                                headers={"content-type": "text/plain"}), 415)
    assert hub.persona_notices == 3


def test_delete(client: TestClient, store: Store, hub: FakeHub) -> None:
    created(client)
    assert problem(client.delete("/v1/personas/tempdevnetwork", headers={"If-Match": '"5"'}), 409)
    resp = client.delete("/v1/personas/tempdevnetwork")
    assert resp.status_code == 200 and resp.json()["id"] == "tempdevnetwork"
    assert store.list("persona") == [] and hub.persona_notices == 2
    assert problem(client.delete("/v1/personas/tempdevnetwork"), 404)


# -- attachments -----------------------------------------------------------------------------------

def test_attach_and_detach(client: TestClient, store: Store, hub: FakeHub) -> None:
    created(client, name="a")
    created(client, name="b")  # a is mapped to 100.64.0.0/24
    resp = client.post("/v1/personas/a/attachments", json={"interface_id": IF1})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/v1/personas/a/attachments/{IF1}"
    assert resp.json() == {"persona_id": "a", "interface_id": IF1, "ip": "10.100.0.2",
                           "mac": "02:00:00:00:00:01", "gateway": "10.100.0.1", "prefix_length": 24,
                           "hub_ip": "100.64.0.2"}
    assert client.get(f"/v1/personas/a/attachments/{IF1}").json() == resp.json()
    resp = client.post("/v1/personas/b/attachments", json={"interface_id": IF2, "ip": "10.100.0.77"})
    assert resp.json()["hub_ip"] == "100.64.1.77"
    assert client.get("/v1/personas/a").json()["attachments"] == [
        {"interface_id": IF1, "ip": "10.100.0.2", "mac": "02:00:00:00:00:01"}]
    resp = client.delete(f"/v1/personas/a/attachments/{IF1}")
    assert resp.status_code == 200 and resp.json()["ip"] == "10.100.0.2"
    assert store.get("persona", "a").body["attachments"] == []
    body = problem(client.delete(f"/v1/personas/a/attachments/{IF1}"), 404)
    assert body["detail"] == f"attachment '{IF1}' does not exist"
    assert hub.persona_notices == 5


def test_attach_refusals(client: TestClient, store: Store, hub: FakeHub) -> None:
    created(client)
    url = "/v1/personas/tempdevnetwork/attachments"
    store.put("interface", IF2, {**store.get("interface", IF2).body, "personality_id": "web"})
    body = problem(client.post(url, json={"interface_id": IF2}), 409)
    assert fields(body) == ["body.interface_id"] and body["personality_id"] == "web"
    assert "runs personality 'web'" in body["detail"]
    body = problem(client.post(url, json={"interface_id": "0000000000000a09:1"}), 422)
    assert fields(body) == ["body.interface_id"]
    body = problem(client.post(url, json={"interface_id": IF1, "ip": "10.100.0.255"}), 422)
    assert fields(body) == ["body.ip"] and "broadcast" in body["errors"][0]["reason"]
    body = problem(client.post(url, json={"ip": "10.100.0.5", "port": 3}), 422)
    assert sorted(fields(body)) == ["body.interface_id", "body.port"]
    assert problem(client.post("/v1/personas/nope/attachments", json={"interface_id": IF1}), 404)
    assert store.get("persona", "tempdevnetwork").body["attachments"] == [] and hub.persona_notices == 1


# -- usage and alerts -----------------------------------------------------------------------------------

def test_usage(client: TestClient, hub: FakeHub) -> None:
    created(client)
    assert client.get("/v1/personas/tempdevnetwork/usage").json() == {
        "persona_id": "tempdevnetwork", "state": "active", "bytes": {"in": 0, "out": 0},
        "packets": {"in": 0, "out": 0}, "connections": 0, "denied": 0, "rate_bps": {"in": 0, "out": 0},
        "updated_at": None, "latency_ms": None}
    counted = {"bytes": {"in": 1500, "out": 64000}, "packets": {"in": 10, "out": 50}, "connections": 3,
               "denied": 2, "rate_bps": {"in": 12000.0, "out": 512000.0}, "updated_at": 1700000000.0,
               "latency_ms": 0.42}
    hub.usage["tempdevnetwork"] = counted
    assert client.get("/v1/personas/tempdevnetwork/usage").json() == {
        "persona_id": "tempdevnetwork", "state": "active", **counted}
    assert problem(client.get("/v1/personas/nope/usage"), 404)


def alert(store: Store, id: str, at: float | str, kind: str, persona_id: str) -> None:
    store.create("alert", id, {"kind": kind, "severity": "warning", "subject": f"persona/{persona_id}",
                               "persona_id": persona_id, "message": f"{kind} on {persona_id}",
                               "value": 10, "threshold": 5, "at": at})


def test_alerts_newest_first_with_filters(client: TestClient, store: Store) -> None:
    assert client.get("/v1/alerts").json() == []
    alert(store, "al-1", 100.0, "bandwidth", "a")
    alert(store, "al-2", 300.0, "security_events", "a")
    alert(store, "al-3", 200.0, "bandwidth", "b")
    items = client.get("/v1/alerts").json()
    assert [a["id"] for a in items] == ["al-2", "al-3", "al-1"]
    assert items[0] == {"id": "al-2", "kind": "security_events", "severity": "warning",
                        "subject": "persona/a", "persona_id": "a", "message": "security_events on a",
                        "value": 10, "threshold": 5, "at": 300.0}
    assert [a["id"] for a in client.get("/v1/alerts?persona_id=a").json()] == ["al-2", "al-1"]
    assert [a["id"] for a in client.get("/v1/alerts?kind=bandwidth").json()] == ["al-3", "al-1"]
    assert [a["id"] for a in client.get("/v1/alerts?kind=bandwidth&persona_id=b").json()] == ["al-3"]
    assert [a["id"] for a in client.get("/v1/alerts?limit=1").json()] == ["al-2"]
    # The runtime writes RFC 3339 times; they sort by time, with Unix times alike.
    alert(store, "a:latency", "1970-01-01T00:04:10.000Z", "latency", "a")  # 250 s
    assert [a["id"] for a in client.get("/v1/alerts").json()] == ["al-2", "a:latency", "al-3", "al-1"]
    assert fields(problem(client.get("/v1/alerts?limit=0"), 422)) == ["query.limit"]


# -- OpenAPI ------------------------------------------------------------------------------------------

def test_openapi_documents_the_routes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths["/v1/personas"]) == {"get", "post"}
    assert set(paths["/v1/personas/{id}"]) == {"get", "put", "patch", "delete"}
    assert set(paths["/v1/personas/{id}/attachments"]) == {"post"}
    assert set(paths["/v1/personas/{id}/attachments/{interface_id}"]) == {"get", "delete"}
    assert set(paths["/v1/personas/{id}/usage"]) == {"get"}
    assert set(paths["/v1/alerts"]) == {"get"}
    post = paths["/v1/personas"]["post"]
    schema = post["requestBody"]["content"]["application/yaml"]["schema"]
    assert {"name", "ip_range", "protocols", "expiration", "id"} <= set(schema["properties"])
    assert set(schema["required"]) == {"name", "ip_range", "protocols", "expiration"}
    assert {"201", "200", "409", "422"} <= set(post["responses"])
    assert post["responses"]["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/ProblemDetails"}
    patch = paths["/v1/personas/{id}"]["patch"]["requestBody"]["content"]
    assert "application/merge-patch+json" in patch and "required" not in patch["application/json"]["schema"]
    components = doc["components"]["schemas"]
    assert {"StoredPersona", "CreatedPersona", "PersonaPreview", "AttachmentView", "Usage", "Alert"} <= \
        set(components)
    assert {"gateway", "nat", "state", "expires_at", "attachments"} <= \
        set(components["StoredPersona"]["properties"])


def test_a_persona_member_cannot_switch_personality_and_its_range_cannot_become_a_subnet(client, hub):
    """The reverse checks: a persona owns its interfaces and addresses while it lives."""
    from controller.core import interfaces
    client.app.state.ctx.store.put(interfaces.KIND, "0000000000000a01:3", {
        "datapath": "0000000000000a01", "port": 3, "mac": "02:00:0a:00:01:03", "ips": [],
        "personality_id": None, "default_personality_id": None, "personality_state": "active"})
    created = client.post("/v1/personas", json=dict(SEED)).json()
    assert client.post(f"/v1/personas/{created['id']}/attachments",
                       json={"interface_id": "0000000000000a01:3"}).status_code == 201
    client.post("/v1/personalities", json={"id": "open", "name": "open"})
    r = client.post("/v1/interfaces/0000000000000a01:3/switch", json={"personality_id": "open"})
    assert r.status_code == 409 and r.json()["persona_id"] == created["id"], r.json()
    before = client.get("/v1/subnets").json()
    r = client.post("/v1/subnets", json={"cidr": "10.100.0.0/16", "gateway": "10.100.255.254"})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "body.cidr", r.json()
    assert client.get("/v1/subnets").json() == before
