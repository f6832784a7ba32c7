"""REST and hubctl of the policy feature's round 2: overrides, reviews of unseen
connections and the audit trail (TestClient, in-memory store, fake hub; the fixture
of test_policy_api: IF1, IF2 web, IF3 db, web's policy at version 2)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.features.policy import audit
from controller.features.policy.rules import AUDIT, OVERRIDE, REVIEW, SESSION
from controller.store import Store, open_store
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub
from tests.unit.test_policy_api import (IF1, IF3, IF4, PROFILES, SESSIONS, fields, ok,
                                        problem, store)  # noqa: F401  (store: the fixture)

SSH = "new-web:egress-tcp-22-set-ext"
DNS = "new-web:egress-udp-5353-set-ext"


def overrides(iface: str) -> str:
    return f"/v1/interfaces/{iface}/policy-overrides"


def pending(store: Store, rid: str, first_seen: float, category: str = "new-web",
            port: int = 22, protocol: str = "tcp") -> None:
    """A review as the runtime writes it."""
    store.create(REVIEW, rid, {"category": category, "direction": "egress", "protocol": protocol,
                               "port": port, "peer": "set:ext", "members": [IF4], "count": 10,
                               "first_seen": first_seen, "state": "pending"})


def trail(client: TestClient, **query: Any) -> list[dict[str, Any]]:
    return ok(client.get("/v1/audit", params=query))


ALLOW_SSH = {"action": "allow", "protocol": "tcp", "port": 22, "peer": "set:ext",
            "reason": "ticket 42: backups over ssh"}


# -- overrides -------------------------------------------------------------------------------

def test_an_override_is_stored_listed_and_deleted(client: TestClient, store: Store,
                                                   hub: FakeHub) -> None:
    resp = client.post(overrides(IF4), json=ALLOW_SSH)
    doc = ok(resp, 201)
    assert resp.headers["location"] == f"{overrides(IF4)}/{doc['id']}"
    assert doc["id"] == "ov-1" and doc["interface_id"] == IF4 and doc["direction"] == "egress"
    body = store.get(OVERRIDE, "ov-1").body
    assert {k: body[k] for k in ("action", "protocol", "port", "peer", "reason")} == ALLOW_SSH
    assert body["created_at"] > 0
    assert hub.changed_kinds == [OVERRIDE]
    assert [e.message for e in store.events() if e.kind == OVERRIDE] == ["created"]
    second = ok(client.post(overrides(IF4), json={"action": "deny", "protocol": "icmp",
                                                  "peer": "address:198.51.100.9",
                                                  "direction": "ingress", "reason": "noisy"}), 201)
    assert second["id"] == "ov-2" and second["port"] is None
    ok(client.post(overrides(IF3), json=ALLOW_SSH), 201)
    assert [o["id"] for o in ok(client.get(overrides(IF4)))] == ["ov-1", "ov-2"]
    assert [o["id"] for o in ok(client.get(overrides(IF3)))] == ["ov-3"]
    assert ok(client.get(overrides(IF1))) == []
    # another interface's override is not this one's
    problem(client.delete(f"{overrides(IF4)}/ov-3"), 404)
    assert ok(client.delete(f"{overrides(IF4)}/ov-1"))["id"] == "ov-1"
    assert store.find(OVERRIDE, "ov-1") is None and store.find(OVERRIDE, "ov-3") is not None
    problem(client.delete(f"{overrides(IF4)}/ov-1"), 404)
    assert hub.changed_kinds == [OVERRIDE] * 4


def test_override_ids_are_not_reused_after_a_delete(client: TestClient) -> None:
    ok(client.post(overrides(IF4), json=ALLOW_SSH), 201)
    ok(client.delete(f"{overrides(IF4)}/ov-1"))
    assert ok(client.post(overrides(IF4), json=ALLOW_SSH), 201)["id"] == "ov-2"


@pytest.mark.parametrize("changes, field", [
    ({"port": 70000}, "body.port"),
    ({"port": 0}, "body.port"),
    ({"port": "22"}, "body.port"),
    ({"protocol": "icmp"}, "body.port"),                 # a port with a protocol without ports
    ({"peer": "ext"}, "body.peer"),
    ({"peer": "host:198.51.100.1"}, "body.peer"),
    ({"peer": "address:198.51.100"}, "body.peer"),
    ({"action": "permit"}, "body.action"),
    ({"protocol": "sctp"}, "body.protocol"),
    ({"direction": "both"}, "body.direction"),
    ({"reason": " "}, "body.reason"),
    ({"reason": None}, "body.reason"),
])
def test_bad_overrides_are_refused_naming_the_field(client: TestClient, store: Store,
                                                    changes: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in {**ALLOW_SSH, **changes}.items() if v is not None}
    assert field in fields(problem(client.post(overrides(IF4), json=body), 422))
    assert store.list(OVERRIDE) == [] and store.list(AUDIT) == []


def test_an_override_of_an_unknown_interface_is_404(client: TestClient, store: Store) -> None:
    problem(client.post(overrides("0000000000000a09:9"), json=ALLOW_SSH), 404)
    problem(client.get(overrides("0000000000000a09:9")), 404)
    assert store.list(OVERRIDE) == [] and store.get_meta("policy.override.seq") is None


# -- reviews ---------------------------------------------------------------------------------

def test_reviews_are_listed_pending_first_and_filtered(client: TestClient, store: Store) -> None:
    pending(store, SSH, 300.0)
    pending(store, DNS, 200.0, protocol="udp", port=5353)
    pending(store, "web:egress-tcp-25-set-ext", 100.0, category="web", port=25)
    store.update(REVIEW, "web:egress-tcp-25-set-ext",
                 {**store.get(REVIEW, "web:egress-tcp-25-set-ext").body, "state": "denied"})
    listed = ok(client.get("/v1/policy-reviews"))
    assert [r["id"] for r in listed] == [DNS, SSH, "web:egress-tcp-25-set-ext"]
    one = listed[1]
    assert {k: one[k] for k in ("category", "direction", "protocol", "port", "peer", "members",
                                "count", "first_seen", "state")} == {
        "category": "new-web", "direction": "egress", "protocol": "tcp", "port": 22,
        "peer": "set:ext", "members": [IF4], "count": 10, "first_seen": 300.0,
        "state": "pending"}
    assert [r["id"] for r in ok(client.get("/v1/policy-reviews", params={"category": "web"}))] \
        == ["web:egress-tcp-25-set-ext"]
    assert [r["id"] for r in ok(client.get("/v1/policy-reviews", params={"state": "pending"}))] \
        == [DNS, SSH]
    assert fields(problem(client.get("/v1/policy-reviews", params={"state": "maybe"}), 422)) \
        == ["query.state"]
    assert ok(client.get(f"/v1/policy-reviews/{SSH}"))["port"] == 22
    problem(client.get("/v1/policy-reviews/new-web:nothing"), 404)


def test_an_approval_is_written_once_with_its_ttl(client: TestClient, store: Store,
                                                  hub: FakeHub) -> None:
    pending(store, SSH, 300.0)
    doc = ok(client.post(f"/v1/policy-reviews/{SSH}/approve", json={"ttl": "1h"}))
    assert doc["state"] == "approved" and doc["ttl"] == 3600
    assert doc["expires_at"] == pytest.approx(doc["decided_at"] + 3600)
    stored = store.get(REVIEW, SSH).body
    assert (stored["state"], stored["ttl"], stored["decided_by"]) == ("approved", 3600, "rest")
    assert hub.changed_kinds == [REVIEW]
    again = problem(client.post(f"/v1/policy-reviews/{SSH}/approve", json={}), 409)
    assert fields(again) == ["path.id"] and again["state"] == "approved"
    problem(client.post(f"/v1/policy-reviews/{SSH}/deny"), 409)
    assert store.get(REVIEW, SSH).body == stored and hub.changed_kinds == [REVIEW]


def test_an_approval_without_a_ttl_is_kept_and_a_denial_takes_it_out_of_the_queue(
        client: TestClient, store: Store) -> None:
    pending(store, SSH, 300.0)
    pending(store, DNS, 200.0, protocol="udp", port=5353)
    kept = ok(client.post(f"/v1/policy-reviews/{SSH}/approve"))
    assert (kept["ttl"], kept["expires_at"]) == (None, None)
    denied = ok(client.post(f"/v1/policy-reviews/{DNS}/deny", json={"reason": "not needed"}))
    assert denied["state"] == "denied" and denied["decided_at"] > 0
    assert ok(client.get("/v1/policy-reviews", params={"state": "pending"})) == []
    problem(client.post(f"/v1/policy-reviews/{DNS}/approve"), 409)


@pytest.mark.parametrize("body, field", [
    ({"ttl": "soon"}, "body.ttl"), ({"ttl": 0}, "body.ttl"), ({"ttl": True}, "body.ttl"),
    ({"reason": ""}, "body.reason"), ({"until": 5}, "body.until"),
])
def test_bad_approvals_are_refused_naming_the_field(client: TestClient, store: Store,
                                                    body: dict[str, Any], field: str) -> None:
    pending(store, SSH, 300.0)
    assert fields(problem(client.post(f"/v1/policy-reviews/{SSH}/approve", json=body), 422)) \
        == [field]
    assert store.get(REVIEW, SSH).body["state"] == "pending" and store.list(AUDIT) == []


def test_a_decision_on_an_unknown_review_is_404(client: TestClient, store: Store) -> None:
    problem(client.post("/v1/policy-reviews/new-web:nothing/approve"), 404)
    problem(client.post("/v1/policy-reviews/new-web:nothing/deny"), 404)
    assert store.list(AUDIT) == []


# -- the audit trail -------------------------------------------------------------------------

def test_audit_record_numbers_entries_in_the_writes_transaction(store: Store) -> None:
    first = audit.record(store, "rest", "x.created", "why", None, {"a": 1}, 10.0, subject="a")
    assert first["id"] == "000000000001" and store.get_meta(audit.SEQ_KEY) == "1"
    with pytest.raises(RuntimeError):
        with store.transaction():
            audit.record(store, "rest", "x.updated", None, {"a": 1}, {"a": 2}, 11.0)
            raise RuntimeError("the write failed")
    assert store.get_meta(audit.SEQ_KEY) == "1" and len(store.list(AUDIT)) == 1
    assert audit.record(store, "rest", "x.deleted", None, {"a": 1}, None, 12.0)["seq"] == 2


def test_the_trail_survives_a_restart(tmp_path: Any) -> None:
    path = str(tmp_path / "hub.db")
    with open_store(path) as s:
        audit.record(s, "rest", "x.created", None, None, {"a": 1}, 10.0)
    with open_store(path) as s:
        assert audit.record(s, "rest", "x.deleted", None, {"a": 1}, None, 11.0)["seq"] == 2
        assert [d.body["what"] for d in audit.entries(s)] == ["x.deleted", "x.created"]


def test_override_writes_are_audited_with_before_and_after(client: TestClient) -> None:
    created = ok(client.post(overrides(IF4), json=ALLOW_SSH), 201)
    ok(client.delete(f"{overrides(IF4)}/ov-1"))
    deleted, added = trail(client)
    assert (added["what"], added["subject"], added["actor"]) == ("policy-override.created",
                                                                 "ov-1", "rest")
    assert added["why"] == ALLOW_SSH["reason"] and added["before"] is None
    assert added["after"] == created
    assert deleted["what"] == "policy-override.deleted"
    assert deleted["before"] == created and deleted["after"] is None
    assert deleted["at"] >= added["at"] and deleted["seq"] == added["seq"] + 1


def test_review_decisions_are_audited_with_before_and_after(client: TestClient,
                                                            store: Store) -> None:
    pending(store, SSH, 300.0)
    pending(store, DNS, 200.0, protocol="udp", port=5353)
    ok(client.post(f"/v1/policy-reviews/{SSH}/approve", json={"ttl": 60, "reason": "backup"}))
    ok(client.post(f"/v1/policy-reviews/{DNS}/deny"))
    denied, approved = trail(client)
    assert (approved["what"], approved["subject"], approved["why"]) == (
        "policy-review.approved", SSH, "backup")
    assert approved["before"]["state"] == "pending" and approved["after"]["state"] == "approved"
    assert approved["after"]["ttl"] == 60
    assert (denied["what"], denied["before"]["state"], denied["after"]["state"]) == (
        "policy-review.denied", "pending", "denied")
    # a refused decision writes nothing
    problem(client.post(f"/v1/policy-reviews/{DNS}/deny"), 409)
    assert len(trail(client)) == 2


def test_profile_writes_are_audited_with_before_and_after(client: TestClient) -> None:
    body = {"source_category": "web", "target_category": "new-web", "strength": 50}
    created = ok(client.post(PROFILES, json=body), 201)
    patched = ok(client.patch(f"{PROFILES}/web-to-new-web", json={"strength": 100}))
    replaced = ok(client.put(f"{PROFILES}/web-to-new-web",
                             json={**body, "mode": "audit", "revision": patched["revision"]}))
    ok(client.post(PROFILES, params={"dry_run": "true"},
                   json={**body, "target_category": "lab"}))          # rolled back: no entry
    problem(client.post(PROFILES, json={**body, "strength": 101}), 422)  # refused: no entry
    ok(client.delete(f"{PROFILES}/web-to-new-web"))
    entries = trail(client, what="mirroring-profile")
    assert [e["what"] for e in entries] == ["mirroring-profile.deleted",
                                            "mirroring-profile.updated",
                                            "mirroring-profile.updated",
                                            "mirroring-profile.created"]
    deleted, put, patch, create = entries
    assert create["before"] is None and create["after"]["strength"] == 50
    assert create["after"]["revision"] == created["revision"]
    assert (patch["before"]["strength"], patch["after"]["strength"]) == (50, 100)
    assert (put["before"]["mode"], put["after"]["mode"]) == ("enforce", "audit")
    assert put["after"]["revision"] == replaced["revision"]
    assert deleted["before"]["mode"] == "audit" and deleted["after"] is None
    assert {e["subject"] for e in entries} == {"web-to-new-web"}


def test_learning_sessions_are_audited_with_before_and_after(client: TestClient,
                                                             store: Store) -> None:
    ok(client.post(SESSIONS, json={"category": "web", "duration": "10m"}), 201)
    ok(client.post(f"{SESSIONS}/web-1/stop"))
    problem(client.post(f"{SESSIONS}/web-1/stop"), 409)
    stopped, started = trail(client, what=SESSION)
    assert (started["what"], started["subject"]) == ("learning-session.started", "web-1")
    assert started["before"] is None and started["after"]["state"] == "learning"
    assert started["after"]["duration"] == 600
    assert stopped["what"] == "learning-session.stopped"
    assert (stopped["before"]["state"], stopped["after"]["state"]) == ("learning", "stopped")


def test_the_trail_is_newest_first_limited_and_filtered(client: TestClient,
                                                        store: Store) -> None:
    for n in range(5):
        audit.record(store, "rest", "policy-override.created" if n % 2 else "x.other", None,
                     None, {"n": n}, 100.0 + n)
    assert [e["after"]["n"] for e in trail(client)] == [4, 3, 2, 1, 0]
    assert [e["id"] for e in trail(client, limit=2)] == ["000000000005", "000000000004"]
    assert [e["after"]["n"] for e in trail(client, what="policy-override")] == [3, 1]
    assert [e["after"]["n"] for e in trail(client, what="policy-override.created")] == [3, 1]
    assert trail(client, what="policy") == []       # a kind is matched whole, not a prefix
    assert fields(problem(client.get("/v1/audit", params={"limit": 0}), 422)) == ["query.limit"]


def test_the_trail_has_no_route_that_changes_it(client: TestClient, store: Store) -> None:
    audit.record(store, "rest", "x.created", None, None, {}, 1.0)
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        assert client.request(method, "/v1/audit").status_code == 405
        assert client.request(method, "/v1/audit/000000000001").status_code in (404, 405)
    assert len(store.list(AUDIT)) == 1


# -- hubctl ----------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], http: TestClient, *argv: str) -> str:
    code, out, err = run_cli(capsys, http, *argv)
    assert code == 0, err
    return out


def test_hubctl_reviews(capsys: pytest.CaptureFixture[str], http: TestClient,
                        store: Store) -> None:
    pending(store, SSH, 300.0)
    pending(store, DNS, 200.0, protocol="udp", port=5353)
    out = cli(capsys, http, "review", "list")
    assert out.index(DNS) < out.index(SSH) and "pending" in out
    assert "approved until" in cli(capsys, http, "review", "approve", SSH, "--ttl", "1h")
    assert store.get(REVIEW, SSH).body["ttl"] == 3600
    assert f"review {DNS}: denied" in cli(capsys, http, "review", "deny", DNS, "--reason", "no")
    assert json.loads(cli(capsys, http, "review", "list", "--state", "pending", "-o",
                          "json")) == []
    code, _, err = run_cli(capsys, http, "review", "deny", DNS)
    assert code == 1 and "path.id" in err


def test_hubctl_overrides(capsys: pytest.CaptureFixture[str], http: TestClient,
                          store: Store) -> None:
    out = cli(capsys, http, "override", "add", IF4, "--action", "allow", "--proto", "tcp",
              "--port", "22", "--peer", "set:ext", "--reason", "ticket 42")
    assert f"override ov-1 on {IF4}: allow egress tcp/22 set:ext (ticket 42)" in out
    assert store.get(OVERRIDE, "ov-1").body["port"] == 22
    assert "ticket 42" in cli(capsys, http, "override", "list", IF4)
    assert f"deleted override ov-1 of {IF4}" in cli(capsys, http, "override", "delete", IF4,
                                                     "ov-1")
    code, _, err = run_cli(capsys, http, "override", "add", IF4, "--action", "allow",
                           "--proto", "tcp", "--port", "70000", "--peer", "set:ext",
                           "--reason", "x")
    assert code == 1 and "body.port" in err


def test_hubctl_audit(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    cli(capsys, http, "override", "add", IF1, "--action", "deny", "--proto", "icmp", "--peer",
        "category:db", "--reason", "quiet")
    cli(capsys, http, "override", "delete", IF1, "ov-1")
    out = cli(capsys, http, "audit")
    assert out.index("policy-override.deleted") < out.index("policy-override.created")
    assert "quiet" in out
    assert len(json.loads(cli(capsys, http, "audit", "--limit", "1", "-o", "json"))) == 1
