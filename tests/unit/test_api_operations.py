"""REST for personality operations: switch, revert, history, operations, A/B apply,
and the personality PUT/DELETE hooks (TestClient, in-memory store, fake hub)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import interfaces
from controller.features.personality import operations
from controller.store import Store, open_store
from controller.core.topology import Host
from tests.unit.fakes import FakeHub, dry_run_answer

PROBLEM = "application/problem+json"
IF1, IF2, IF3 = "0000000000000a01:2", "0000000000000a01:3", "0000000000000a02:1"
SEG1 = {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"}
WEB = {"name": "web", "subnet_id": "seg1", "ip_addresses": ["10.0.1.10"], "dns_servers": ["10.0.1.53"]}
LOCKDOWN = {"name": "lockdown", "subnet_id": "seg1", "default_action": "deny"}
OPEN = {"name": "open", "default_action": "allow"}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", SEG1)
    for id, body in (("web", WEB), ("lockdown", LOCKDOWN), ("open", OPEN)):
        s.create("personality", id, body)
    for mac, ip, dpid, port in (("02:00:00:00:00:01", "10.0.1.1", 0xA01, 2),
                                ("02:00:00:00:00:02", "10.0.1.2", 0xA01, 3),
                                ("02:00:00:00:00:03", "10.0.1.3", 0xA02, 1)):
        interfaces.record_host(s, Host(mac, (ip,), dpid, port))
    set_iface(s, IF1, personality_id="web", default_personality_id="web")
    yield s
    s.close()


def set_iface(store: Store, id: str, **fields: Any) -> None:
    store.put("interface", id, {**store.get("interface", id).body, **fields})


def finish(store: Store, op_id: str, state: str = "succeeded") -> None:
    """What the coordinator would do at the end of an operation."""
    op = store.get("operation", op_id)
    store.put("operation", op_id, {**op.body, "state": state, "result": state, "finished_at": 1.0})


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and isinstance(body["errors"], list)
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def op_ids(store: Store) -> list[str]:
    return [d.id for d in store.list("operation")]


def nothing_stored(store: Store, hub: FakeHub, before: int = 0) -> None:
    assert len(store.list("operation")) == before
    assert hub.operation_notices == 0 or before
    assert not [e for e in store.events(kind="operation")][before:]


# -- switch -------------------------------------------------------------------------------

def test_switch_creates_a_pending_operation(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post(f"/v1/interfaces/{IF1}/switch",
                       json={"personality_id": "lockdown", "drain": {"max_seconds": 5},
                             "health_checks": [{"type": "gateway"},
                                               {"type": "tcp", "target": "10.0.2.2", "port": 22}]})
    assert resp.status_code == 202, resp.text
    op = resp.json()
    assert resp.headers["location"] == f"/v1/operations/{op['id']}"
    assert op["id"].startswith("op-") and op["revision"] == 1
    assert op["kind"] == "switch" and op["state"] == "pending" and op["interface_id"] == IF1
    assert (op["from_personality_id"], op["to_personality_id"]) == ("web", "lockdown")
    assert op["drain"] == {"max_seconds": 5.0, "until": "zero-connections"}
    assert [c["type"] for c in op["health_checks"]] == ["gateway", "tcp"]
    assert op["health_checks"][1]["port"] == 22 and op["log"][0]["state"] == "pending"
    assert hub.operation_notices == 1
    assert store.get("interface", IF1).body["operation_id"] == op["id"]
    assert [(e.subject, e.message) for e in store.events(kind="operation")] == [(op["id"], "created")]
    assert client.get(f"/v1/operations/{op['id']}").json() == op
    iface = client.get(f"/v1/interfaces/{IF1}").json()
    assert iface["operation_id"] == op["id"]


def test_switch_yaml_body(client: TestClient, store: Store) -> None:
    resp = client.post(f"/v1/interfaces/{IF2}/switch", content=b"personality_id: open\n",
                       headers={"content-type": "application/yaml"})
    assert resp.status_code == 202 and resp.json()["from_personality_id"] is None


BAD_SWITCH = [
    ("no personality", {}, ["body.personality_id"]),
    ("unknown field", {"personality_id": "open", "bogus": 1}, ["body.bogus"]),
    ("bad until", {"personality_id": "open", "drain": {"until": "never"}}, ["body.drain.until"]),
    ("negative drain", {"personality_id": "open", "drain": {"max_seconds": -1}}, ["body.drain.max_seconds"]),
    ("ping without target", {"personality_id": "open", "health_checks": [{"type": "ping"}]},
     ["body.health_checks[0].target"]),
    ("tcp without port", {"personality_id": "open",
                          "health_checks": [{"type": "ping", "target": "10.0.1.1"},
                                            {"type": "tcp", "target": "10.0.1.1"}]},
     ["body.health_checks[1].port"]),
    ("bad target", {"personality_id": "open", "health_checks": [{"type": "ping", "target": "10.0.1"}]},
     ["body.health_checks[0].target"]),
    ("unknown personality", {"personality_id": "ghost"}, ["body.personality_id"]),
    ("gateway without subnet", {"personality_id": "open", "health_checks": [{"type": "gateway"}]},
     ["body.health_checks[0].target"]),
    ("dns without servers", {"personality_id": "lockdown",
                             "health_checks": [{"type": "gateway"}, {"type": "dns"}]},
     ["body.health_checks[1].target"]),
]


@pytest.mark.parametrize("what, body, expected", BAD_SWITCH, ids=[b[0] for b in BAD_SWITCH])
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry"])
def test_switch_invalid_is_422_and_stores_nothing(client: TestClient, store: Store, hub: FakeHub,
                                                  what: str, body: dict[str, Any], expected: list[str],
                                                  dry_run: bool) -> None:
    if dry_run:
        body = {**body, "dry_run": True}
    resp = problem(client.post(f"/v1/interfaces/{IF1}/switch", json=body), 422)
    assert fields(resp) == expected
    assert all(e["reason"] for e in resp["errors"])
    nothing_stored(store, hub)
    assert hub.dry_runs == [] and "operation_id" not in store.get("interface", IF1).body


def test_gateway_and_dns_targets_given_explicitly(client: TestClient, store: Store) -> None:
    resp = client.post(f"/v1/interfaces/{IF2}/switch",
                       json={"personality_id": "open",
                             "health_checks": [{"type": "gateway", "target": "10.0.1.254"},
                                               {"type": "dns", "target": "9.9.9.9", "timeout_seconds": 1}]})
    assert resp.status_code == 202, resp.text
    resp = client.post(f"/v1/interfaces/{IF3}/switch",
                       json={"personality_id": "web", "health_checks": [{"type": "dns"}]})
    assert resp.status_code == 202, resp.text


def test_switch_bad_requests(client: TestClient, store: Store, hub: FakeHub) -> None:
    body = problem(client.post("/v1/interfaces/ghost/switch", json={"personality_id": "open"}), 404)
    assert body["kind"] == "interface" and body["id"] == "ghost"
    problem(client.post(f"/v1/interfaces/{IF1}/switch", json=["open"]), 400)
    problem(client.post(f"/v1/interfaces/{IF1}/switch", content=b"x", headers={"content-type": "text/plain"}), 415)
    problem(client.post(f"/v1/interfaces/{IF1}/switch", content=b"", headers={"content-type": "application/json"}), 400)
    nothing_stored(store, hub)


def test_switch_busy_is_409(client: TestClient, store: Store, hub: FakeHub) -> None:
    first = client.post(f"/v1/interfaces/{IF1}/switch", json={"personality_id": "lockdown"}).json()
    body = problem(client.post(f"/v1/interfaces/{IF1}/switch", json={"personality_id": "open"}), 409)
    assert body["operation_id"] == first["id"] and body["interface_id"] == IF1
    assert first["id"] in body["detail"]
    assert op_ids(store) == [first["id"]] and hub.operation_notices == 1
    finish(store, first["id"], "rolled_back")
    resp = client.post(f"/v1/interfaces/{IF1}/switch", json={"personality_id": "open"})
    assert resp.status_code == 202 and hub.operation_notices == 2


def test_dry_run_passes_the_hub_answer_through(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post(f"/v1/interfaces/{IF1}/switch",
                       json={"personality_id": "lockdown", "dry_run": True,
                             "health_checks": [{"type": "gateway"}]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == dry_run_answer(IF1, "lockdown")
    assert hub.dry_runs == [(IF1, "lockdown")]
    nothing_stored(store, hub)
    assert "operation_id" not in store.get("interface", IF1).body


@pytest.mark.parametrize("error, status", [(LookupError("interface not connected"), 404),
                                           (ValueError("address 10.0.1.10 is taken"), 422),
                                           (TimeoutError("the hub did not answer in time"), 503)])
def test_dry_run_errors(client: TestClient, store: Store, hub: FakeHub, error: Exception, status: int) -> None:
    hub.dry_run_error = error
    body = problem(client.post(f"/v1/interfaces/{IF1}/switch",
                               json={"personality_id": "lockdown", "dry_run": True}), status)
    if status == 422:
        assert fields(body) == ["body.personality_id"] and "10.0.1.10 is taken" in body["errors"][0]["reason"]
    if status == 503:
        assert body["detail"] == "the hub did not answer the dry run in time"
    nothing_stored(store, hub)


# -- operations ----------------------------------------------------------------------------

def test_list_and_get_operations(client: TestClient, store: Store) -> None:
    a = operations.create(store, IF1, "lockdown", kind="switch", now=100.0)
    b = operations.create(store, IF2, "open", kind="apply", now=200.0)
    c = operations.create(store, IF3, "web", kind="switch", now=300.0)
    finish(store, a.id)
    assert [o["id"] for o in client.get("/v1/operations").json()] == [c.id, b.id, a.id]
    assert [o["id"] for o in client.get("/v1/operations", params={"interface_id": IF2}).json()] == [b.id]
    assert [o["id"] for o in client.get("/v1/operations", params={"state": "pending"}).json()] == [c.id, b.id]
    assert client.get("/v1/operations", params={"state": "succeeded", "interface_id": IF2}).json() == []
    assert client.get("/v1/operations", params={"interface_id": "ghost"}).json() == []
    body = problem(client.get("/v1/operations", params={"state": "done"}), 422)
    assert fields(body) == ["query.state"]
    one = client.get(f"/v1/operations/{a.id}").json()
    assert one["state"] == "succeeded" and one["revision"] == 2 and one["kind"] == "switch"
    body = problem(client.get("/v1/operations/op-nope"), 404)
    assert body["kind"] == "operation"


def test_history(client: TestClient, store: Store) -> None:
    a = operations.create(store, IF1, "lockdown", kind="switch", now=100.0)
    finish(store, a.id)
    b = operations.create(store, IF1, "web", kind="revert", now=200.0)
    operations.create(store, IF2, "open", kind="switch", now=150.0)
    entries = client.get(f"/v1/interfaces/{IF1}/history").json()
    assert [(e["operation"], e["kind"], e["from"], e["to"], e["state"]) for e in entries] == [
        (a.id, "switch", "web", "lockdown", "succeeded"), (b.id, "revert", "web", "web", "pending")]
    assert client.get(f"/v1/interfaces/{IF3}/history").json() == []
    problem(client.get("/v1/interfaces/ghost/history"), 404)


def test_interface_views_show_operation_fields(client: TestClient, store: Store) -> None:
    op = client.post(f"/v1/interfaces/{IF1}/switch", json={"personality_id": "open"}).json()
    set_iface(store, IF1, expires_at=1234.5)
    one = client.get(f"/v1/interfaces/{IF1}").json()
    assert one["operation_id"] == op["id"] and one["expires_at"] == 1234.5
    listed = {i["id"]: i for i in client.get("/v1/interfaces").json()}
    assert listed[IF1]["operation_id"] == op["id"] and "operation_id" not in listed[IF2]


# -- revert ---------------------------------------------------------------------------------

def test_revert_to_the_default(client: TestClient, store: Store, hub: FakeHub) -> None:
    set_iface(store, IF1, personality_id="lockdown")
    resp = client.post(f"/v1/interfaces/{IF1}/revert")
    assert resp.status_code == 202, resp.text
    op = resp.json()
    assert op["kind"] == "revert" and (op["from_personality_id"], op["to_personality_id"]) == ("lockdown", "web")
    assert op["drain"] == {"max_seconds": 30.0, "until": "zero-connections"} and op["health_checks"] == []
    assert resp.headers["location"] == f"/v1/operations/{op['id']}" and hub.operation_notices == 1
    finish(store, op["id"])
    resp = client.post(f"/v1/interfaces/{IF1}/revert",
                       json={"drain": {"max_seconds": 2, "until": "timeout"},
                             "health_checks": [{"type": "gateway"}, {"type": "dns"}]})
    assert resp.status_code == 202, resp.text
    assert resp.json()["drain"] == {"max_seconds": 2.0, "until": "timeout"}
    assert len(resp.json()["health_checks"]) == 2 and hub.operation_notices == 2


def test_revert_refusals(client: TestClient, store: Store, hub: FakeHub) -> None:
    body = problem(client.post(f"/v1/interfaces/{IF2}/revert"), 409)
    assert "no default personality" in body["detail"]
    body = problem(client.post(f"/v1/interfaces/{IF1}/revert"), 409)
    assert "already runs its default" in body["detail"]
    problem(client.post("/v1/interfaces/ghost/revert"), 404)
    set_iface(store, IF1, personality_id="lockdown")
    body = problem(client.post(f"/v1/interfaces/{IF1}/revert", json={"drain": {"max_seconds": "soon"}}), 422)
    assert fields(body) == ["body.drain.max_seconds"]
    body = problem(client.post(f"/v1/interfaces/{IF1}/revert", json={"personality_id": "open"}), 422)
    assert fields(body) == ["body.personality_id"]
    body = problem(client.post(f"/v1/interfaces/{IF1}/revert",
                               json={"health_checks": [{"type": "tcp", "target": "10.0.1.1"}]}), 422)
    assert fields(body) == ["body.health_checks[0].port"]
    set_iface(store, IF3, default_personality_id="open")
    body = problem(client.post(f"/v1/interfaces/{IF3}/revert", json={"health_checks": [{"type": "gateway"}]}), 422)
    assert fields(body) == ["body.health_checks[0].target"]
    nothing_stored(store, hub)


def test_revert_from_a_fallback_state_and_when_busy(client: TestClient, store: Store, hub: FakeHub) -> None:
    set_iface(store, IF1, personality_state="fallback")
    first = client.post(f"/v1/interfaces/{IF1}/revert")
    assert first.status_code == 202
    body = problem(client.post(f"/v1/interfaces/{IF1}/revert"), 409)
    assert body["operation_id"] == first.json()["id"]
    assert len(store.list("operation")) == 1


# -- A/B apply ---------------------------------------------------------------------------------

def test_apply_to_listed_interfaces(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post("/v1/personalities/web/apply",
                       json={"interfaces": [IF1, IF2, IF3], "drain": {"max_seconds": 1},
                             "health_checks": [{"type": "gateway"}]})
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["unchanged"] == [IF1]
    assert [(o["interface_id"], o["kind"], o["to_personality_id"], o["state"]) for o in answer["operations"]] == [
        (IF2, "apply", "web", "pending"), (IF3, "apply", "web", "pending")]
    assert all(o["drain"]["max_seconds"] == 1.0 for o in answer["operations"])
    assert sorted(op_ids(store)) == sorted(o["id"] for o in answer["operations"])
    assert hub.operation_notices == 1
    for o in answer["operations"]:
        assert store.get("interface", o["interface_id"]).body["operation_id"] == o["id"]


def test_apply_nothing_to_do(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post("/v1/personalities/web/apply", json={"interfaces": [IF1]})
    assert resp.status_code == 202 and resp.json() == {"operations": [], "unchanged": [IF1]}
    assert hub.operation_notices == 0


def test_apply_is_all_or_nothing(client: TestClient, store: Store, hub: FakeHub) -> None:
    body = problem(client.post("/v1/personalities/open/apply",
                               json={"interfaces": [IF2, "0000000000000b09:1", IF3, IF2]}), 422)
    assert fields(body) == ["body.interfaces[1]", "body.interfaces[3]"]
    nothing_stored(store, hub)
    busy = operations.create(store, IF3, "lockdown", kind="switch", now=1.0)
    body = problem(client.post("/v1/personalities/open/apply", json={"interfaces": [IF1, IF2, IF3]}), 409)
    assert body["busy"] == [{"interface_id": IF3, "operation_id": busy.id}]
    assert IF3 in body["detail"] and busy.id in body["detail"]
    assert op_ids(store) == [busy.id] and hub.operation_notices == 0
    assert "operation_id" not in store.get("interface", IF1).body
    assert "operation_id" not in store.get("interface", IF2).body


def test_apply_by_selector(client: TestClient, store: Store, hub: FakeHub) -> None:
    answer = client.post("/v1/personalities/open/apply",
                         json={"selector": {"datapath": "0000000000000A01"}}).json()
    assert [o["interface_id"] for o in answer["operations"]] == [IF1, IF2]
    for o in answer["operations"]:
        finish(store, o["id"])
    answer = client.post("/v1/personalities/lockdown/apply", json={"selector": {"personality_id": None}}).json()
    assert [o["interface_id"] for o in answer["operations"]] == [IF2, IF3]
    for o in answer["operations"]:
        finish(store, o["id"])
    answer = client.post("/v1/personalities/lockdown/apply",
                         json={"selector": {"datapath": "0000000000000a01", "personality_id": "web"}}).json()
    assert [o["interface_id"] for o in answer["operations"]] == [IF1]
    assert hub.operation_notices == 3


def test_apply_and_list_by_category(client: TestClient, store: Store) -> None:
    for iid in (IF1, IF3):
        store.put("interface", iid, {**store.get("interface", iid).body, "categories": ["web"]})
    assert [i["id"] for i in client.get("/v1/interfaces", params={"category": "web"}).json()] \
        == [IF1, IF3]
    answer = client.post("/v1/personalities/lockdown/apply",
                         json={"selector": {"category": "web"}}).json()
    assert [o["interface_id"] for o in answer["operations"]] == [IF1, IF3]
    resp = client.post("/v1/personalities/lockdown/apply", json={"selector": {"category": "db"}})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "body.selector"


BAD_APPLY = [
    ("neither", {}, ["body.interfaces", "body.selector"]),
    ("both", {"interfaces": [IF1], "selector": {"datapath": "0000000000000a01"}},
     ["body.interfaces", "body.selector"]),
    ("empty list", {"interfaces": []}, ["body.interfaces"]),
    ("empty selector", {"selector": {}}, ["body.selector"]),
    ("bad datapath", {"selector": {"datapath": "a01"}}, ["body.selector.datapath"]),
    ("unknown selector field", {"selector": {"port": 2}}, ["body.selector.port"]),
    ("selects nothing", {"selector": {"datapath": "0000000000000b01"}}, ["body.selector"]),
    ("bad check", {"interfaces": [IF2], "health_checks": [{"type": "ping"}]}, ["body.health_checks[0].target"]),
    ("dns without servers", {"interfaces": [IF2], "health_checks": [{"type": "dns"}]},
     ["body.health_checks[0].target"]),
]


@pytest.mark.parametrize("what, body, expected", BAD_APPLY, ids=[b[0] for b in BAD_APPLY])
def test_apply_invalid_is_422(client: TestClient, store: Store, hub: FakeHub, what: str,
                              body: dict[str, Any], expected: list[str]) -> None:
    assert fields(problem(client.post("/v1/personalities/open/apply", json=body), 422)) == expected
    nothing_stored(store, hub)


def test_apply_unknown_personality(client: TestClient, store: Store, hub: FakeHub) -> None:
    problem(client.post("/v1/personalities/ghost/apply", json={"interfaces": [IF2]}), 404)
    nothing_stored(store, hub)


# -- personality PUT / DELETE hooks ---------------------------------------------------------------

def test_personality_put_starts_update_operations(client: TestClient, store: Store, hub: FakeHub) -> None:
    set_iface(store, IF2, personality_id="web")
    set_iface(store, IF3, personality_id="open")
    busy = operations.create(store, IF2, "lockdown", kind="switch", now=1.0)
    resp = client.put("/v1/personalities/web", json={**WEB, "ip_addresses": ["10.0.1.11"], "revision": 1})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["revision"] == 2 and doc["ip_addresses"] == ["10.0.1.11"]
    assert resp.headers["etag"] == '"2"' and len(doc["operations"]) == 1
    op = store.get("operation", doc["operations"][0]).body
    assert (op["interface_id"], op["kind"], op["from_personality_id"], op["to_personality_id"]) == (
        IF1, "update", "web", "web")
    assert "revision 2" in op["reason"]
    assert store.get("interface", IF1).body["operation_id"] == doc["operations"][0]
    assert store.get("interface", IF2).body["operation_id"] == busy.id
    skipped = [e for e in store.events(kind="personality") if e.message.startswith("update skipped")]
    assert [(e.subject, e.data) for e in skipped] == [
        ("web", {"revision": 2, "interface_id": IF2, "operation_id": busy.id})]
    assert hub.changed_kinds == ["personality", "operation"]


def test_personality_put_without_users_starts_nothing(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.put("/v1/personalities/open", json={**OPEN, "revision": 1})
    assert resp.status_code == 200 and resp.json()["operations"] == []
    assert store.list("operation") == [] and hub.changed_kinds == ["personality"]


def test_personality_put_invalid_starts_nothing(client: TestClient, store: Store, hub: FakeHub) -> None:
    problem(client.put("/v1/personalities/web", json={**WEB, "ip_addresses": ["10.9.9.9"], "revision": 1}), 422)
    problem(client.put("/v1/personalities/web", json={**WEB, "revision": 7}), 409)
    nothing_stored(store, hub)


def test_personality_delete_refused_while_an_operation_needs_it(client: TestClient, store: Store) -> None:
    op = client.post(f"/v1/interfaces/{IF2}/switch", json={"personality_id": "lockdown"}).json()
    body = problem(client.delete("/v1/personalities/lockdown"), 409)
    assert body["used_by"] == [f"operation/{op['id']}"] and op["id"] in body["detail"]
    set_iface(store, IF3, personality_id="lockdown")
    body = problem(client.delete("/v1/personalities/lockdown"), 409)
    assert body["used_by"] == [f"interface/{IF3}", f"operation/{op['id']}"]
    set_iface(store, IF3, personality_id=None)
    finish(store, op["id"])
    assert client.delete("/v1/personalities/lockdown").status_code == 200


def test_personality_delete_refused_while_a_rollback_may_need_it(client: TestClient, store: Store) -> None:
    set_iface(store, IF2, personality_id="open")
    op = client.post(f"/v1/interfaces/{IF2}/switch", json={"personality_id": "lockdown"}).json()
    set_iface(store, IF2, personality_id="lockdown")  # the coordinator moved it; open is the way back
    body = problem(client.delete("/v1/personalities/open"), 409)
    assert body["used_by"] == [f"operation/{op['id']}"]
    finish(store, op["id"])
    assert client.delete("/v1/personalities/open").status_code == 200


def test_openapi_documents_the_routes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "post" in doc["paths"]["/v1/interfaces/{id}/switch"]
    assert "post" in doc["paths"]["/v1/interfaces/{id}/revert"]
    assert "get" in doc["paths"]["/v1/interfaces/{id}/history"]
    assert "get" in doc["paths"]["/v1/operations"] and "get" in doc["paths"]["/v1/operations/{id}"]
    apply = doc["paths"]["/v1/personalities/{id}/apply"]["post"]
    assert "selector" in apply["requestBody"]["content"]["application/json"]["schema"]["properties"]
    switch = doc["paths"]["/v1/interfaces/{id}/switch"]["post"]
    assert "personality_id" in switch["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"202", "200", "409", "422", "503"} <= set(switch["responses"])
    assert list(switch["responses"]["409"]["content"]) == [PROBLEM]
