"""REST and hubctl of the policy feature: categories, address sets, learning sessions,
policies (versions, diffs, exports) and mirroring profiles (TestClient, in-memory store,
fake hub)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from controller.core import interfaces
from controller.core.topology import Host
from controller.features.policy import versions
from controller.features.policy.rules import (ADDRESS_SET, PROFILE, SESSION, Peer, Rule, RuleKey,
                                              Rules)
from controller.store import Store, open_store
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

PROBLEM = "application/problem+json"
MERGE = {"content-type": "application/merge-patch+json"}
IF1, IF2, IF3, IF4 = (f"0000000000000a01:{p}" for p in range(2, 6))
SESSIONS, PROFILES, SETS = "/v1/learning-sessions", "/v1/mirroring-profiles", "/v1/address-sets"


def rule(port: int, peer: Peer, members: set[str], first: float, of: int = 2) -> Rule:
    return Rule(RuleKey("egress", "tcp", port, peer), members=frozenset(members), of=of,
                first_seen=first, last_seen=first + 100, connections=3 * len(members))


EXT80 = rule(80, Peer("set", "ext"), {IF1, IF2}, 100.0)
DB5432 = rule(5432, Peer("category", "db"), {IF1, IF2}, 110.0)
EXT8080 = rule(8080, Peer("set", "ext"), {IF1}, 90.0)


@pytest.fixture
def store() -> Iterator[Store]:
    """IF1, IF2 are web, IF3 db, IF4 has no category; web's policy has versions 1 (ext:80)
    and 2 (ext:80, db:5432, ext:8080, supports 2/2, 2/2, 1/2); "old" has a policy and no
    member."""
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    for port in range(2, 6):
        interfaces.record_host(s, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01, port))
    for iid, cats in ((IF1, ["web"]), (IF2, ["web"]), (IF3, ["db"])):
        s.put("interface", iid, {**s.get("interface", iid).body, "categories": cats})
    s.create(ADDRESS_SET, "ext", {"name": "ext", "cidrs": ["198.51.100.0/24"]})
    versions.save(s, Rules("web", 0, {EXT80.id: EXT80}), "learning session web-1", 1000.0)
    versions.save(s, Rules("web", 0, {r.id: r for r in (EXT80, DB5432, EXT8080)}),
                  "learning session web-2", 2000.0)
    versions.save(s, Rules("old", 0, {}), "learning session old-1", 500.0)
    yield s
    s.close()


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    return resp.json()


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


# -- categories ------------------------------------------------------------------------------

def test_categories_are_a_merge_patch_of_the_interface_and_shown_by_get(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    doc = ok(client.patch(f"/v1/interfaces/{IF4}", headers=MERGE,
                          content=json.dumps({"categories": ["new-web", "db"]})))
    assert doc["categories"] == ["new-web", "db"] and doc["mac"] == "02:00:00:00:00:05"
    assert ok(client.get(f"/v1/interfaces/{IF4}"))["categories"] == ["new-web", "db"]
    assert hub.changed_kinds == ["interface"]
    # application/json works too; a patch without categories leaves them (and stores nothing)
    same = ok(client.patch(f"/v1/interfaces/{IF4}", json={}))
    assert same["categories"] == ["new-web", "db"] and same["revision"] == doc["revision"]
    # null removes them; the record without any shows []
    cleared = ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": None}))
    assert cleared["categories"] == [] and "categories" in store.get("interface", IF4).body
    listed = {i["id"]: i["categories"] for i in ok(client.get("/v1/interfaces"))}
    assert listed == {IF1: ["web"], IF2: ["web"], IF3: ["db"], IF4: []}


def test_a_category_patch_checks_the_revision_when_given(client: TestClient, store: Store) -> None:
    current = store.get("interface", IF4).revision
    stale = problem(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["web"]},
                                 headers={"If-Match": '"99"'}), 409)
    assert (stale["expected_revision"], stale["actual_revision"]) == (99, current)
    problem(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["web"], "revision": 99}),
            409)
    problem(client.patch(f"/v1/interfaces/{IF4}", json={"categories": [], "revision": 99}), 409)
    assert "categories" not in store.get("interface", IF4).body
    doc = ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["web"],
                                                         "revision": current}))
    assert doc["revision"] == current + 1
    ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["db"]},
                    headers={"If-Match": str(current + 1)}))
    assert store.get("interface", IF4).body["categories"] == ["db"]


@pytest.mark.parametrize("body, field", [
    ({"categories": ["Web"]}, "body.categories[0]"),
    ({"categories": ["web", "-db"]}, "body.categories[1]"),
    ({"categories": ["x" * 65]}, "body.categories[0]"),
    ({"categories": [""]}, "body.categories[0]"),
    ({"categories": [7]}, "body.categories[0]"),
    ({"categories": ["web", "web"]}, "body.categories"),
    ({"categories": "web"}, "body.categories"),
    ({"mac": "02:00:00:00:00:09"}, "body.mac"),
    ({"id": IF1, "categories": ["web"]}, "body.id"),
])
def test_bad_categories_are_refused_naming_the_field(client: TestClient, store: Store,
                                                     body: dict[str, Any], field: str) -> None:
    before = store.get("interface", IF4)
    assert fields(problem(client.patch(f"/v1/interfaces/{IF4}", json=body), 422)) == [field]
    assert store.get("interface", IF4) == before


def test_a_category_may_be_64_characters_of_the_allowed_kind(client: TestClient) -> None:
    name = "a" + "b.c_d-" * 10 + "xyz"
    assert len(name) == 64
    assert ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": [name, "0db"]}))[
        "categories"] == [name, "0db"]


def test_an_unknown_interface_is_404(client: TestClient) -> None:
    problem(client.patch("/v1/interfaces/0000000000000a09:9", json={"categories": ["web"]}), 404)


def test_a_relearned_host_keeps_its_categories(client: TestClient, store: Store) -> None:
    ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["db", "web"]}))
    # the host is seen again with another address and MAC: discovery refreshes the record
    assert interfaces.record_host(store, Host("02:00:00:00:00:55", ("10.0.1.55",), 0xA01, 5))
    doc = ok(client.get(f"/v1/interfaces/{IF4}"))
    assert (doc["mac"], doc["ips"], doc["categories"]) == ("02:00:00:00:00:55", ["10.0.1.55"],
                                                           ["db", "web"])
    assert interfaces.record_host(store, Host("02:00:00:00:00:55", ("10.0.1.55",), 0xA01, 5)) \
        is False
    assert IF4 in {c["category"]: c["members"] for c in ok(client.get("/v1/categories"))}["web"]


def test_categories_list_each_category_and_its_members_sorted(client: TestClient) -> None:
    ok(client.patch(f"/v1/interfaces/{IF4}", json={"categories": ["web", "app"]}))
    assert ok(client.get("/v1/categories")) == [
        {"category": "app", "members": [IF4]},
        {"category": "db", "members": [IF3]},
        {"category": "web", "members": [IF1, IF2, IF4]}]


# -- address sets ----------------------------------------------------------------------------

def test_address_sets_are_stored_documents_with_the_id_from_the_name(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    doc = ok(client.post(SETS, json={"name": "Partner Net", "cidrs": ["203.0.113.0/24",
                                                                     "192.0.2.128/25"]}), 201)
    assert (doc["id"], doc["cidrs"]) == ("partner-net", ["203.0.113.0/24", "192.0.2.128/25"])
    assert hub.changed_kinds == [ADDRESS_SET]
    assert sorted(d["id"] for d in ok(client.get(SETS))) == ["ext", "partner-net"]
    patched = ok(client.patch(f"{SETS}/partner-net", json={"cidrs": ["203.0.113.0/24"]}))
    assert patched["cidrs"] == ["203.0.113.0/24"] and patched["name"] == "Partner Net"
    ok(client.delete(f"{SETS}/partner-net"))
    problem(client.get(f"{SETS}/partner-net"), 404)


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "cidrs": ["10.0.0.1/24"]}, "body.cidrs[0]"),
    ({"name": "x", "cidrs": ["10.0.0.0/24", "300.0.0.0/8"]}, "body.cidrs[1]"),
    ({"name": "x", "cidrs": ["10.0.0.0/24", "10.0.0.0/24"]}, "body.cidrs"),
    ({"name": "x", "cidrs": []}, "body.cidrs"),
    ({"name": "x"}, "body.cidrs"),
    ({"name": "!!", "cidrs": ["10.0.0.0/24"]}, "body.name"),
    ({"name": "x", "cidrs": ["10.0.0.0/24"], "members": []}, "body.members"),
])
def test_bad_address_sets_are_refused_naming_the_field(client: TestClient, body: dict[str, Any],
                                                       field: str) -> None:
    assert fields(problem(client.post(SETS, json=body), 422)) == [field]


# -- learning sessions -----------------------------------------------------------------------

def test_a_learning_session_runs_until_stopped_and_shows_progress(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    started = client.post(SESSIONS, json={"category": "web"})
    doc = ok(started, 201)
    assert started.headers["location"] == f"{SESSIONS}/{doc['id']}"
    assert (doc["id"], doc["state"], doc["category"], doc["duration"], doc["ends_at"]) == \
        ("web-1", "learning", "web", None, None)
    assert doc["progress"] == {"members": 0, "connections": 0, "rules": 0}
    assert hub.changed_kinds == [SESSION]
    # the runtime writes its progress into the session
    body = store.get(SESSION, "web-1").body
    store.put(SESSION, "web-1", {**body, "progress": {"members": 2, "connections": 7, "rules": 3}})
    assert ok(client.get(f"{SESSIONS}/web-1"))["progress"] == {"members": 2, "connections": 7,
                                                              "rules": 3}
    assert [s["id"] for s in ok(client.get(SESSIONS))] == ["web-1"]
    stopped = ok(client.post(f"{SESSIONS}/web-1/stop"))
    assert (stopped["state"], stopped["stopped_by"]) == ("stopped", "rest")
    assert stopped["progress"]["rules"] == 3 and stopped["stopped_at"] >= doc["started_at"]
    assert store.get(SESSION, "web-1").body["state"] == "stopped"
    assert hub.changed_kinds == [SESSION, SESSION]
    again = problem(client.post(f"{SESSIONS}/web-1/stop"), 409)
    assert fields(again) == ["path.id"] and again["state"] == "stopped"
    # stopped, the category may be learned again
    assert ok(client.post(SESSIONS, json={"category": "web"}), 201)["id"] == "web-2"


def test_one_session_per_category_runs_at_a_time(client: TestClient, store: Store) -> None:
    ok(client.post(SESSIONS, json={"category": "web", "duration": "10m"}), 201)
    busy = problem(client.post(SESSIONS, json={"category": "web"}), 409)
    assert fields(busy) == ["body.category"] and busy["session_id"] == "web-1"
    assert ok(client.post(SESSIONS, json={"category": "db"}), 201)["id"] == "db-1"
    assert len(store.list(SESSION)) == 2


def test_a_duration_sets_the_end_and_a_session_past_it_does_not_hold_the_category(
        client: TestClient, store: Store) -> None:
    doc = ok(client.post(SESSIONS, json={"category": "web", "duration": "10m"}), 201)
    assert doc["duration"] == 600 and doc["ends_at"] == pytest.approx(doc["started_at"] + 600)
    body = store.get(SESSION, "web-1").body
    store.put(SESSION, "web-1", {**body, "ends_at": body["started_at"] - 1})
    assert ok(client.post(SESSIONS, json={"category": "web", "duration": 30}), 201)["id"] == "web-2"


def test_a_category_with_no_member_may_be_learned(client: TestClient) -> None:
    doc = ok(client.post(SESSIONS, json={"category": "nobody-yet"}), 201)
    assert (doc["state"], doc["progress"]["members"]) == ("learning", 0)


def test_sessions_are_listed_by_category_and_state(client: TestClient) -> None:
    for category in ("web", "db"):
        ok(client.post(SESSIONS, json={"category": category}), 201)
    ok(client.post(f"{SESSIONS}/web-1/stop"))
    assert [s["id"] for s in ok(client.get(SESSIONS, params={"category": "db"}))] == ["db-1"]
    assert [s["id"] for s in ok(client.get(SESSIONS, params={"state": "stopped"}))] == ["web-1"]
    problem(client.get(f"{SESSIONS}/nope-1"), 404)
    problem(client.post(f"{SESSIONS}/nope-1/stop"), 404)


@pytest.mark.parametrize("body, field", [
    ({}, "body.category"),
    ({"category": "Web"}, "body.category"),
    ({"category": "web", "duration": 0}, "body.duration"),
    ({"category": "web", "duration": "soon"}, "body.duration"),
    ({"category": "web", "state": "stopped"}, "body.state"),
])
def test_bad_sessions_are_refused_naming_the_field(client: TestClient, store: Store,
                                                   body: dict[str, Any], field: str) -> None:
    assert fields(problem(client.post(SESSIONS, json=body), 422)) == [field]
    assert store.list(SESSION) == []


# -- policies --------------------------------------------------------------------------------

def test_policies_list_every_category_with_a_policy(client: TestClient) -> None:
    listed = ok(client.get("/v1/policies"))
    assert [(p["category"], p["version"], p["rules"]) for p in listed] == [("old", 1, 0),
                                                                        ("web", 2, 3)]


def test_a_policy_answers_its_current_version_and_rules(client: TestClient) -> None:
    doc = ok(client.get("/v1/policies/web"))
    assert (doc["category"], doc["version"], doc["reason"]) == ("web", 2, "learning session web-2")
    rules = {r["id"]: r for r in doc["rules"]}
    assert set(rules) == {EXT80.id, DB5432.id, EXT8080.id}
    assert {"id", "direction", "protocol", "port", "peer", "support", "members", "first_seen",
            "last_seen"} <= set(rules[EXT8080.id])
    assert (rules[EXT8080.id]["port"], rules[EXT8080.id]["peer"], rules[EXT8080.id]["support"],
            rules[EXT8080.id]["members"]) == (8080, "set:ext", "1/2", [IF1])
    assert rules[DB5432.id]["peer"] == "category:db" and rules[DB5432.id]["support"] == "2/2"
    old = ok(client.get("/v1/policies/web", params={"version": 1}))
    assert (old["version"], [r["id"] for r in old["rules"]]) == (1, [EXT80.id])


def test_a_policy_that_does_not_exist_is_404(client: TestClient) -> None:
    for path in ("/v1/policies/db", "/v1/policies/db/versions", "/v1/policies/db/diff",
                 "/v1/policies/NOT-A-CATEGORY"):
        problem(client.get(path), 404)
    problem(client.get("/v1/policies/web", params={"version": 3}), 404)
    problem(client.get("/v1/policies/db", params={"format": "dot"}), 404)


def test_versions_are_listed_and_diffed(client: TestClient) -> None:
    assert [(v["version"], v["rules"], v["reason"])
            for v in ok(client.get("/v1/policies/web/versions"))] == [
        (1, 1, "learning session web-1"), (2, 3, "learning session web-2")]
    diff = ok(client.get("/v1/policies/web/diff", params={"from": 1, "to": 2}))
    assert (diff["from"], diff["to"]) == (1, 2)
    assert sorted(r["id"] for r in diff["added"]) == sorted([DB5432.id, EXT8080.id])
    assert diff["removed"] == [] and diff["changed"] == []
    back = ok(client.get("/v1/policies/web/diff", params={"from": 2, "to": 1}))
    assert sorted(r["id"] for r in back["removed"]) == sorted([DB5432.id, EXT8080.id])
    assert ok(client.get("/v1/policies/web/diff")) == diff          # the current one and before
    first = ok(client.get("/v1/policies/web/diff", params={"to": 1}))
    assert (first["from"], [r["id"] for r in first["added"]]) == (0, [EXT80.id])
    problem(client.get("/v1/policies/web/diff", params={"from": 7}), 404)


def test_a_policy_as_node_link_json(client: TestClient) -> None:
    data = ok(client.get("/v1/policies/web", params={"format": "graph"}))
    assert data["directed"] is True
    assert sorted(e["key"] for e in data["edges"]) == sorted([EXT80.id, DB5432.id, EXT8080.id])
    assert "category:web" in {n["id"] for n in data["nodes"]}


def test_a_policy_as_graphviz(client: TestClient) -> None:
    resp = client.get("/v1/policies/web", params={"format": "dot"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/vnd.graphviz")
    assert resp.text.startswith('digraph "policy web"') and EXT8080.id in resp.text


def test_a_policy_as_a_kubernetes_network_policy(client: TestClient) -> None:
    resp = client.get("/v1/policies/web", params={"format": "k8s"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(resp.text)
    assert doc["kind"] == "NetworkPolicy"
    assert doc["spec"]["podSelector"] == {"matchLabels": {"hubshift/category": "web"}}
    egress = doc["spec"]["egress"]
    peers = [p for r in egress for p in r["to"]]
    assert {"ipBlock": {"cidr": "198.51.100.0/24"}} in peers        # the stored address set
    assert {"podSelector": {"matchLabels": {"hubshift/category": "db"}}} in peers
    assert {p["port"] for r in egress for p in r["ports"]} == {80, 5432, 8080}


def test_a_category_kubernetes_cannot_label_is_refused_naming_the_format(
        client: TestClient, store: Store) -> None:
    versions.save(store, Rules("web-", 0, {}), "test", 1.0)
    assert fields(problem(client.get("/v1/policies/web-", params={"format": "k8s"}), 422)) == \
        ["query.format"]
    assert ok(client.get("/v1/policies/web-"))["rules"] == []


# -- mirroring profiles ----------------------------------------------------------------------

def profile(client: TestClient, **changes: Any) -> dict[str, Any]:
    body = {"source_category": "web", "target_category": "new-web", "strength": 50, **changes}
    return ok(client.post(PROFILES, json=body), 201)


def test_a_profile_is_stored_with_its_id_and_mode(client: TestClient, hub: FakeHub) -> None:
    doc = profile(client)
    assert (doc["id"], doc["mode"], doc["strength"]) == ("web-to-new-web", "enforce", 50)
    assert hub.changed_kinds == [PROFILE]
    audit = profile(client, target_category="lab", mode="audit", id="lab-audit")
    assert (audit["id"], audit["mode"]) == ("lab-audit", "audit")
    assert [d["id"] for d in ok(client.get(PROFILES))] == ["lab-audit", "web-to-new-web"]
    assert ok(client.patch(f"{PROFILES}/web-to-new-web", json={"strength": 100}))["strength"] == 100
    ok(client.delete(f"{PROFILES}/lab-audit"))
    problem(client.get(f"{PROFILES}/lab-audit"), 404)


@pytest.mark.parametrize("changes, field", [
    ({"strength": 101}, "body.strength"),
    ({"strength": -1}, "body.strength"),
    ({"strength": 50.5}, "body.strength"),
    ({"strength": True}, "body.strength"),
    ({"target_category": "web"}, "body.target_category"),
    ({"source_category": "ghost"}, "body.source_category"),
    ({"mode": "observe"}, "body.mode"),
    ({"target_category": "New Web"}, "body.target_category"),
])
def test_bad_profiles_are_refused_naming_the_field(client: TestClient, store: Store,
                                                   changes: dict[str, Any], field: str) -> None:
    body = {"source_category": "web", "target_category": "new-web", "strength": 50, **changes}
    assert fields(problem(client.post(PROFILES, json=body), 422)) == [field]
    assert store.list(PROFILE) == []


def test_a_source_is_known_by_its_members_or_by_its_policy(client: TestClient) -> None:
    assert profile(client, source_category="db", target_category="db2")["id"] == "db-to-db2"
    assert profile(client, source_category="old", target_category="old2")["id"] == "old-to-old2"


def test_a_patch_is_checked_like_a_create(client: TestClient) -> None:
    profile(client)
    assert fields(problem(client.patch(f"{PROFILES}/web-to-new-web",
                                       json={"target_category": "web"}), 422)) == \
        ["body.target_category"]
    assert fields(problem(client.patch(f"{PROFILES}/web-to-new-web",
                                       json={"strength": 101}), 422)) == ["body.strength"]


def test_a_target_gets_one_profile(client: TestClient) -> None:
    profile(client)
    taken = problem(client.post(PROFILES, json={"source_category": "db", "strength": 10,
                                                "target_category": "new-web"}), 409)
    assert fields(taken) == ["body.target_category"] and taken["profile_id"] == "web-to-new-web"


def test_the_preview_lists_every_rule_in_or_out_with_the_reason(client: TestClient) -> None:
    profile(client)
    preview = ok(client.get(f"{PROFILES}/web-to-new-web/preview"))
    assert (preview["policy_version"], preview["ranked"], preview["cut"]) == (2, 3, 2)
    rows = [(r["rule_id"], r["included"], r["rank"], r["reason"]) for r in preview["rows"]]
    # support 2/2 first (the earlier first seen ahead), then 1/2; 50% of 3 keeps 2
    assert rows == [(EXT80.id, True, 1, "support 2/2, rank 1 of 3, cut at 2"),
                    (DB5432.id, True, 2, "support 2/2, rank 2 of 3, cut at 2"),
                    (EXT8080.id, False, 3, "support 1/2, rank 3 of 3, cut at 2")]
    assert (preview["rows"][2]["port"], preview["rows"][2]["peer"]) == (8080, "set:ext")
    client.patch(f"{PROFILES}/web-to-new-web", json={"strength": 100})
    full = ok(client.get(f"{PROFILES}/web-to-new-web/preview"))
    assert all(r["included"] for r in full["rows"]) and full["cut"] == 3
    client.patch(f"{PROFILES}/web-to-new-web", json={"strength": 0})
    none = ok(client.get(f"{PROFILES}/web-to-new-web/preview"))
    assert not any(r["included"] for r in none["rows"]) and none["cut"] == 0


def test_the_preview_of_a_source_without_a_policy_is_empty(client: TestClient) -> None:
    profile(client, source_category="db", target_category="db2")
    preview = ok(client.get(f"{PROFILES}/db-to-db2/preview"))
    assert (preview["policy_version"], preview["rows"], preview["cut"]) == (None, [], 0)
    problem(client.get(f"{PROFILES}/nope/preview"), 404)


# -- hubctl ----------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], http: TestClient, *argv: str) -> str:
    code, out, err = run_cli(capsys, http, *argv)
    assert code == 0, err
    return out


def test_hubctl_categories(capsys: pytest.CaptureFixture[str], http: TestClient,
                           store: Store) -> None:
    out = cli(capsys, http, "category", "set", IF4, "new-web", "db")
    assert f"interface {IF4}: categories new-web, db" in out
    assert store.get("interface", IF4).body["categories"] == ["new-web", "db"]
    out = cli(capsys, http, "category", "list")
    assert "new-web" in out and f"{IF3},{IF4}" in out
    assert json.loads(cli(capsys, http, "category", "list", "-o", "json"))[0]["category"] == "db"
    cli(capsys, http, "category", "clear", IF4)
    assert store.get("interface", IF4).body["categories"] == []
    code, _, err = run_cli(capsys, http, "category", "set", IF4, "Bad")
    assert code == 1 and "body.categories[0]" in err


def test_hubctl_address_sets(capsys: pytest.CaptureFixture[str], http: TestClient,
                             tmp_path: Path) -> None:
    path = tmp_path / "partner.yaml"
    path.write_text("name: partner\ncidrs: [203.0.113.0/24]\n")
    assert "203.0.113.0/24" in cli(capsys, http, "address-set", "create", "-f", str(path))
    assert "partner" in cli(capsys, http, "address-set", "list")
    assert yaml.safe_load(cli(capsys, http, "address-set", "get", "partner", "-o", "yaml"))[
        "cidrs"] == ["203.0.113.0/24"]
    assert "deleted address-set partner" in cli(capsys, http, "address-set", "delete", "partner")


def test_hubctl_learning(capsys: pytest.CaptureFixture[str], http: TestClient,
                         store: Store) -> None:
    out = cli(capsys, http, "learn", "start", "web", "--for", "10m")
    assert "session web-1" in out and store.get(SESSION, "web-1").body["duration"] == 600
    assert "until stopped" in cli(capsys, http, "learn", "start", "db")
    status = cli(capsys, http, "learn", "status")
    assert "web-1" in status and "db-1" in status and "learning" in status
    assert "stopped session web-1" in cli(capsys, http, "learn", "stop", "web-1")
    one = json.loads(cli(capsys, http, "learn", "status", "web-1", "-o", "json"))
    assert one["state"] == "stopped" and one["progress"]["rules"] == 0
    code, _, err = run_cli(capsys, http, "learn", "stop", "web-1")
    assert code == 1 and "path.id" in err


def test_hubctl_policy(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    assert "web" in cli(capsys, http, "policy", "list")
    out = cli(capsys, http, "policy", "show", "web")
    assert out.startswith("policy of web, version 2") and "set:ext" in out and "1/2" in out
    assert json.loads(cli(capsys, http, "policy", "show", "web", "-o", "json"))["version"] == 2
    assert cli(capsys, http, "policy", "show", "web", "-o", "dot").startswith("digraph")
    assert yaml.safe_load(cli(capsys, http, "policy", "show", "web", "-o", "k8s"))[
        "kind"] == "NetworkPolicy"
    assert "edges" in json.loads(cli(capsys, http, "policy", "show", "web", "-o", "graph"))
    assert "version 1" in cli(capsys, http, "policy", "show", "web", "--version", "1")
    diff = cli(capsys, http, "policy", "diff", "web", "1", "2")
    assert f"+ {EXT8080.id}" in diff and f"+ {DB5432.id}" in diff
    assert json.loads(cli(capsys, http, "policy", "diff", "web", "1", "2", "-o", "json"))[
        "to"] == 2
    assert "learning session web-2" in cli(capsys, http, "policy", "versions", "web")


def test_hubctl_profiles(capsys: pytest.CaptureFixture[str], http: TestClient,
                         store: Store) -> None:
    assert "web-to-new-web" in cli(capsys, http, "profile", "create", "web", "new-web",
                                   "--strength", "50")
    out = cli(capsys, http, "profile", "create", "db", "lab", "--strength", "10", "--audit")
    assert "audit" in out and store.get(PROFILE, "db-to-lab").body["mode"] == "audit"
    assert "db-to-lab" in cli(capsys, http, "profile", "list")
    preview = cli(capsys, http, "profile", "preview", "web-to-new-web")
    assert "2 of 3 rules of version 2" in preview
    assert "support 1/2, rank 3 of 3, cut at 2" in preview
    assert json.loads(cli(capsys, http, "profile", "preview", "web-to-new-web", "-o", "json"))[
        "cut"] == 2
    assert "deleted profile db-to-lab" in cli(capsys, http, "profile", "delete", "db-to-lab")
    code, _, err = run_cli(capsys, http, "profile", "create", "web", "x", "--strength", "101")
    assert code == 1 and "body.strength" in err


def test_drift_lists_idle_rules_over_todays_members(client: TestClient, capsys,
                                                    store: Store) -> None:
    from tests.unit.conftest import run_cli
    answer = client.get("/v1/policies/web/drift", params={"unused": 60})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["category"] == "web" and body["unused_seconds"] == 60
    assert set(body["unused"]) == {r["id"] for r in body["rules"]}     # all seen long ago
    assert client.get("/v1/policies/nobody/drift").status_code == 404
    code, out, err = run_cli(capsys, client, "policy", "drift", "web", "--unused", "1m")
    assert code == 0 and out.startswith("drift of web, version"), err
