"""Northbound REST API v1 through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from controller.api import ApiContext, Problem, create_app
from controller.api.app import ROUTERS
from tests.unit.fakes import FakeHub
from controller.store import Store, open_store

PROBLEM = "application/problem+json"

DP_A = {
    "id": "0000000000000a01",
    "dpid": 0xA01,
    "connected": True,
    "of_version": "1.4",
    "ports": [
        {"port_no": 1, "name": "s1-eth1", "up": True, "role": "host"},
        {"port_no": 2, "name": "s1-eth2", "up": False, "role": "link"},
    ],
    "flows": {"desired": 12, "installed": 12, "in_sync": True},
    "last_reconciled_at": 1700000000.5,
}
DP_B = {
    "id": "0000000000000a02",
    "dpid": 0xA02,
    "connected": False,
    "of_version": None,
    "ports": [],
    "flows": {"desired": 4, "installed": 0, "in_sync": False},
    "last_reconciled_at": None,
}
DEGRADED = {"status": "degraded", "datapaths_connected": 1, "uptime_s": 42.0}
TOPOLOGY = {
    "switches": [{"id": "0000000000000a01", "dpid": 0xA01, "connected": True},
                 {"id": "0000000000000a02", "dpid": 0xA02, "connected": False}],
    "links": [{"src": {"datapath": "0000000000000a01", "port_no": 2},
               "dst": {"datapath": "0000000000000a02", "port_no": 3}}],
    "hosts": [{"mac": "00:00:00:00:00:01", "ips": ["10.0.0.1"], "datapath": "0000000000000a01",
               "port_no": 1, "last_seen": 1700000001.0}],
}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(store: Store, registry: CollectorRegistry) -> Iterator[TestClient]:
    app = create_app(ApiContext(store=store, hub=FakeHub([DP_A, DP_B], TOPOLOGY, DEGRADED), registry=registry, version="9.8.7"))
    with TestClient(app) as c:
        yield c


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status
    assert body["title"]
    assert isinstance(body["errors"], list)
    return body


def test_health(client: TestClient) -> None:
    resp = client.get("/v1/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "degraded", "datapaths_connected": 1, "uptime_s": 42.0}


def test_datapaths(client: TestClient) -> None:
    resp = client.get("/v1/datapaths")
    assert resp.status_code == 200
    assert resp.json() == [DP_A, DP_B]


def test_one_datapath(client: TestClient) -> None:
    assert client.get("/v1/datapaths/0000000000000a02").json() == DP_B


def test_short_datapath_id_is_padded(client: TestClient) -> None:
    assert client.get("/v1/datapaths/A01").json() == DP_A


def test_unknown_datapath_is_404_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/datapaths/00000000000000ff"), 404)
    assert body["title"] == "Not Found"
    assert "00000000000000ff" in body["detail"]


def test_topology(client: TestClient) -> None:
    resp = client.get("/v1/topology")
    assert resp.status_code == 200
    assert resp.json() == TOPOLOGY


def test_events_pagination(client: TestClient, store: Store) -> None:
    for i in range(5):
        store.append_event("datapath" if i % 2 else "flow", f"dp{i}", f"message {i}", {"i": i})
    first = client.get("/v1/events", params={"limit": 2}).json()
    assert [e["seq"] for e in first["items"]] == [1, 2]
    assert first["next"] == 2
    assert first["items"][1] == {"seq": 2, "ts": first["items"][1]["ts"], "kind": "datapath",
                                 "subject": "dp1", "message": "message 1", "data": {"i": 1}}
    second = client.get("/v1/events", params={"after": first["next"], "limit": 2}).json()
    assert [e["seq"] for e in second["items"]] == [3, 4]
    last = client.get("/v1/events", params={"after": 4}).json()
    assert [e["seq"] for e in last["items"]] == [5] and last["next"] == 5
    empty = client.get("/v1/events", params={"after": 5}).json()
    assert empty == {"items": [], "next": None}


def test_events_filters(client: TestClient, store: Store) -> None:
    store.append_event("flow", "a", "one")
    store.append_event("datapath", "b", "two")
    store.append_event("datapath", "c", "three")
    by_kind = client.get("/v1/events?kind=datapath").json()
    assert [e["subject"] for e in by_kind["items"]] == ["b", "c"]
    by_subject = client.get("/v1/events?subject=c").json()
    assert [e["message"] for e in by_subject["items"]] == ["three"]
    blank = client.get("/v1/events?kind=&subject=").json()
    assert len(blank["items"]) == 3


@pytest.mark.parametrize("query, field", [
    ("limit=0", "query.limit"),
    ("limit=1001", "query.limit"),
    ("limit=lots", "query.limit"),
    ("after=-1", "query.after"),
])
def test_bad_query_is_422_problem(client: TestClient, query: str, field: str) -> None:
    body = assert_problem(client.get(f"/v1/events?{query}"), 422)
    assert [e["field"] for e in body["errors"]] == [field]
    assert body["errors"][0]["reason"]


def test_one_error_per_field(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/events?limit=0&after=-3"), 422)
    assert sorted(e["field"] for e in body["errors"]) == ["query.after", "query.limit"]


def test_unknown_route_is_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404)


def test_method_not_allowed_is_405_problem(client: TestClient) -> None:
    resp = client.delete("/v1/health")
    assert_problem(resp, 405)
    assert resp.headers["allow"] == "GET"


def test_metrics(client: TestClient, registry: CollectorRegistry) -> None:
    counter = Counter("hubshift_test_things", "Things counted by the test", registry=registry)
    counter.inc(3)
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "hubshift_test_things_total 3.0" in resp.text


def test_openapi(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"] == {"title": "hubshift", "version": "9.8.7"}
    for path in ["/v1/health", "/v1/datapaths", "/v1/datapaths/{id}", "/v1/topology",
                 "/v1/events", "/metrics"]:
        assert "get" in doc["paths"][path]
    schemas = doc["components"]["schemas"]
    assert {"Datapath", "Topology", "EventPage", "Health", "ProblemDetails"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    not_found = doc["paths"]["/v1/datapaths/{id}"]["get"]["responses"]["404"]
    assert list(not_found["content"]) == [PROBLEM]


# -- error handlers, exercised through a router added for the test ------------

class Pool(BaseModel):
    ip_range: str


def _app_with(router: APIRouter, store: Store) -> TestClient:
    ROUTERS.append(router)
    try:
        app = create_app(ApiContext(store, FakeHub([DP_A, DP_B], TOPOLOGY, DEGRADED), CollectorRegistry(), "0"))
    finally:
        ROUTERS.remove(router)
    return TestClient(app)


def test_store_errors_and_crashes_become_problems(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    router = APIRouter()

    @router.get("/missing")
    def missing() -> None:
        store.get("persona", "ghost")

    @router.post("/dup")
    def dup() -> None:
        store.create("persona", "p", {})
        store.create("persona", "p", {})

    @router.put("/stale")
    def stale() -> None:
        store.put("persona", "q", {"v": 1})
        store.update("persona", "q", {"v": 2}, revision=7)

    @router.get("/teapot")
    def teapot() -> None:
        raise Problem(418, detail="short and stout", errors=[{"field": "body.spout", "reason": "bent"}],
                      extra={"hint": "tip me over"})

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    client = _app_with(router, store)
    body = assert_problem(client.get("/missing"), 404)
    assert "ghost" in body["detail"]
    assert_problem(client.post("/dup"), 409)
    body = assert_problem(client.put("/stale"), 409)
    assert body["expected_revision"] == 7 and body["actual_revision"] == 1
    assert "7" in body["detail"] and "1" in body["detail"]
    body = assert_problem(client.get("/teapot"), 418)
    assert body["errors"] == [{"field": "body.spout", "reason": "bent"}]
    assert body["hint"] == "tip me over"
    body = assert_problem(client.get("/boom"), 500)
    assert "kaboom" not in body["detail"]
    assert "unhandled error serving GET /boom" in caplog.text and "kaboom" in caplog.text


def test_malformed_json_body_is_400_problem(store: Store) -> None:
    router = APIRouter()

    @router.post("/pools")
    def create_pool(pool: Pool) -> dict[str, str]:
        return {"ip_range": pool.ip_range}

    client = _app_with(router, store)
    assert client.post("/pools", json={"ip_range": "10.0.0.0/24"}).status_code == 200
    body = assert_problem(client.post("/pools", content=b"{not json",
                                      headers={"content-type": "application/json"}), 400)
    assert body["errors"][0]["field"] == "body"
    body = assert_problem(client.post("/pools", json={"ip_range": 5}), 422)
    assert [e["field"] for e in body["errors"]] == ["body.ip_range"]
    body = assert_problem(client.post("/pools", json={}), 422)
    assert [e["field"] for e in body["errors"]] == ["body.ip_range"]
