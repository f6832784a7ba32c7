"""REST and hubctl for shadow appliances, slots, findings and remediations (TestClient,
in-memory store, fake hub)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import claims, interfaces
from controller.core.topology import Host
from controller.features.shadow.document import (CAPABILITY, FINDING, KIND, REMEDIATION, SLOT, SLOT_STATE,
                                                 STATE)
from controller.store import Store, open_store
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

PROBLEM = "application/problem+json"
IF1, IF2, IF3, IF4, IF5, IF6, IF7 = (f"0000000000000a01:{p}" for p in range(2, 9))
UNKNOWN_IF = "0000000000000a09:9"
APPLIANCES, SLOTS = "/v1/appliances", "/v1/shadow-slots"
WEB: dict[str, Any] = {"name": "web", "interfaces": [IF1], "appliance_image": "python3 -m http.server 80",
                       "service": [{"protocol": "tcp", "port": 80}],
                       "shadowing": {"shadow_traffic_percentage": 50,
                                     "shadow_analysis_profiles": ["IDS_Signature_Scan"]}}


@pytest.fixture
def store() -> Iterator[Store]:
    """IF1, IF2, IF6, IF7 free; IF3 runs a personality; IF4 is a persona member; IF5 is a
    shard resource."""
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    for port in range(2, 9):
        interfaces.record_host(s, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01, port))
    s.put("interface", IF3, {**s.get("interface", IF3).body, "personality_id": "open"})
    s.create("persona", "dev", {"state": "active", "index": 1,
                                "document": {"name": "dev", "ip_range": "10.100.0.0/24"},
                                "attachments": [{"interface_id": IF4, "ip": "10.100.0.2"}]})
    s.create("shard-resource", "pool-1", {"pool_id": "pool", "interface_id": IF5, "key": "k",
                                          "external_ip": "198.51.100.65", "index": 0})
    yield s
    s.close()


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    return resp.json()


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def slot(client: TestClient, interface_id: str = IF6, **body: Any) -> dict[str, Any]:
    resp = client.post(SLOTS, json={"interface_id": interface_id, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def appliance(client: TestClient, **changes: Any) -> dict[str, Any]:
    resp = client.post(APPLIANCES, json={**WEB, **changes})
    assert resp.status_code == 201, resp.text
    return resp.json()


def shadowing(**fields: Any) -> dict[str, Any]:
    return {**WEB["shadowing"], **fields}


# -- appliances ------------------------------------------------------------------------------

def test_a_manifest_is_stored_and_shown_with_what_the_runtime_keeps(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    slot(client)
    resp = client.post(APPLIANCES, json=WEB)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"{APPLIANCES}/web"
    created = resp.json()
    assert created["shadowing"] == {"shadow_enabled": True, "shadow_instance_count": 1,
                                    "shadow_traffic_percentage": 50.0,
                                    "shadow_analysis_profiles": ["IDS_Signature_Scan"]}
    assert store.get(KIND, "web").body["remediation"] == {"mode": "alert", "ttl": 300,
                                                          "min_severity": "high"}
    assert hub.changed_kinds[-1] == KIND
    for shown in (client.get(f"{APPLIANCES}/web").json(), client.get(APPLIANCES).json()[0], created):
        assert (shown["instances"], shown["percentage"], shown["counters"]) == (
            [], {"current": 50.0, "reason": "as configured"},
            {"connections": 0, "packets": 0, "bytes": 0, "dropped": 0})
    assert [e.message for e in store.events(kind=KIND)] == ["created"]


def test_the_answer_merges_the_runtime_state(client: TestClient, store: Store) -> None:
    slot(client)
    slot(client, IF7)
    appliance(client, shadowing=shadowing(shadow_instance_count=2),
              adjustment={"mode": "adaptive", "min": 5.0, "max": 50.0})
    store.put(STATE, "web", {
        "instances": [{"id": "web-1", "slot_id": "slot-1", "state": "ready"},
                      {"id": "web-2", "slot_id": "slot-2", "state": "launching", "pid": 7}],
        "percentage": {"current": 25.0, "reason": "shadows report lag: halved"},
        "counters": {"connections": 12, "packets": 340, "bytes": 56000, "dropped": 3}})
    shown = client.get(f"{APPLIANCES}/web").json()
    none = {"counters": {"connections": 0, "packets": 0, "bytes": 0, "dropped": 0},
            "metrics": {}}
    assert shown["instances"] == [{"id": "web-1", "slot_id": "slot-1", "state": "ready", **none},
                                  {"id": "web-2", "slot_id": "slot-2", "state": "launching",
                                   **none}]
    assert shown["percentage"] == {"current": 25.0, "reason": "shadows report lag: halved"}
    assert shown["counters"] == {"connections": 12, "packets": 340, "bytes": 56000, "dropped": 3}
    assert shown["shadowing"]["shadow_traffic_percentage"] == 50.0   # the manifest's, as written
    store.put(STATE, "web", {"instances": [{"id": "web-1", "state": "dancing"}]})   # unreadable
    assert client.get(f"{APPLIANCES}/web").json()["instances"] == []


def test_a_new_fixed_percentage_shows_at_once_over_what_the_runtime_wrote(
        client: TestClient, store: Store) -> None:
    slot(client)
    appliance(client)
    store.put(STATE, "web", {"instances": [{"id": "web-1", "slot_id": "slot-1", "state": "ready"}],
                             "percentage": {"current": 50.0, "reason": "as configured"}})
    resp = client.patch(f"{APPLIANCES}/web", json={"shadowing": {"shadow_traffic_percentage": 0.1}})
    assert resp.json()["percentage"] == {"current": 0.1, "reason": "as configured"}, resp.text
    store.put(STATE, "web", {"percentage": {"current": 25.0, "reason": "shadows report lag: halved"}})
    assert client.get(f"{APPLIANCES}/web").json()["percentage"] == \
        {"current": 0.1, "reason": "as configured"}          # fixed: the adapted one is not used


def test_a_disabled_appliance_mirrors_nothing_and_takes_no_slot(client: TestClient) -> None:
    shown = appliance(client, shadowing=shadowing(shadow_enabled=False, shadow_instance_count=3))
    assert shown["percentage"] == {"current": 0.0, "reason": "shadowing is disabled"}


PERCENT = "body.shadowing.shadow_traffic_percentage"
SIGNATURE = "body.profiles.IDS_Signature_Scan.signatures[0]"


@pytest.mark.parametrize("changes, field", [
    ({"shadowing": shadowing(shadow_traffic_percentage=120)}, PERCENT),
    ({"shadowing": shadowing(shadow_traffic_percentage=12.34)}, PERCENT),
    ({"shadowing": shadowing(shadow_analysis_profiles=["IDS_Signature_Scan", "Port_Knocking"])},
     "body.shadowing.shadow_analysis_profiles[1]"),
    ({"shadowing": shadowing(shadow_instance_count=2)}, "body.shadowing.shadow_instance_count"),
    ({"profiles": {"IDS_Signature_Scan": {"signatures": [
        {"id": "s1", "content": "EVIL", "pattern": "EV.L", "severity": "high"}]}}}, SIGNATURE),
    ({"profiles": {"IDS_Signature_Scan": {"signatures": [{"id": "s1", "severity": "high"}]}}},
     SIGNATURE),
    ({"adjustment": {"mode": "adaptive", "min": 30, "max": 10}}, "body.adjustment.max"),
    ({"interfaces": [IF1, UNKNOWN_IF]}, "body.interfaces[1]"),
])
def test_bad_manifests_are_refused_naming_the_field_and_nothing_is_stored(
        client: TestClient, store: Store, hub: FakeHub, changes: dict[str, Any], field: str) -> None:
    slot(client)   # one slot: a count of 2 is more than are free
    notices = len(hub.changed_kinds)
    refused = problem(client.post(APPLIANCES, json={**WEB, **changes}), 422)
    assert fields(refused) == [field] and field in refused["detail"]
    assert store.list(KIND) == [] and len(hub.changed_kinds) == notices


def test_a_yaml_manifest_is_read_like_json(client: TestClient) -> None:
    text = ("name: web\ninterfaces: ['%s']\nappliance_image: srv\n"
            "shadowing: {shadow_traffic_percentage: 5.5, shadow_instance_count: 0}\n" % IF1)
    resp = client.post(APPLIANCES, content=text, headers={"content-type": "application/yaml"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["shadowing"]["shadow_traffic_percentage"] == 5.5


def test_instances_fit_in_the_slots_other_enabled_appliances_leave_free(
        client: TestClient, store: Store) -> None:
    count = "body.shadowing.shadow_instance_count"
    refused = problem(client.post(APPLIANCES, json=WEB), 422)   # no slot at all
    assert fields(refused) == [count] and "0 of 0 shadow slot(s) are free" in refused["errors"][0]["reason"]
    slot(client)
    slot(client, IF7)
    appliance(client)
    db = {**WEB, "name": "db", "interfaces": [IF2]}
    refused = problem(client.post(APPLIANCES, json={**db, "shadowing": shadowing(
        shadow_instance_count=2)}), 422)
    assert fields(refused) == [count]
    assert "1 of 2 shadow slot(s) are free (1 by 'web')" in refused["errors"][0]["reason"]
    assert client.post(APPLIANCES, json={**db, "shadowing": shadowing(
        shadow_enabled=False, shadow_instance_count=2)}).status_code == 201   # disabled: no slot
    resp = client.patch(f"{APPLIANCES}/db", json={"shadowing": {"shadow_enabled": True}})
    assert fields(problem(resp, 422)) == [count]
    resp = client.patch(f"{APPLIANCES}/db", json={"shadowing": {"shadow_enabled": True,
                                                                "shadow_instance_count": 1}})
    assert resp.status_code == 200, resp.text
    # its own instances are not counted against it: web may stay at 1, not grow to 2
    assert client.patch(f"{APPLIANCES}/web", json={"name": "web 2"}).status_code == 200
    resp = client.patch(f"{APPLIANCES}/web", json={"shadowing": {"shadow_instance_count": 2}})
    assert fields(problem(resp, 422)) == [count]


@pytest.mark.parametrize("interface, owner", [
    (IF4, "persona dev"), (IF5, "shard-resource pool-1"), (IF6, "shadow-slot slot-1")])
def test_an_interface_another_feature_holds_is_refused(
        client: TestClient, store: Store, hub: FakeHub, interface: str, owner: str) -> None:
    slot(client, IF6)
    slot(client, IF7)
    notices = len(hub.changed_kinds)
    refused = problem(client.post(APPLIANCES, json={**WEB, "interfaces": [IF1, interface]}), 409)
    assert fields(refused) == ["body.interfaces[1]"]
    assert (refused["owner"], refused["interface_id"]) == (owner, interface)
    assert owner.split()[1] in refused["errors"][0]["reason"]
    assert store.list(KIND) == [] and len(hub.changed_kinds) == notices


def test_a_personality_may_run_on_a_production_interface(client: TestClient, store: Store) -> None:
    slot(client)
    assert appliance(client, interfaces=[IF3])["interfaces"] == [IF3]
    assert [r.holder_kind for r in claims.holders(store, claims.INTERFACE, IF3)] == ["interface"]


def test_patch_changes_the_percentage_profiles_and_remediation_live(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    slot(client)
    first = appliance(client)
    resp = client.patch(f"{APPLIANCES}/web", json={"shadowing": {"shadow_traffic_percentage": 10}},
                        headers={"content-type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched["revision"] == first["revision"] + 1 and hub.changed_kinds[-1] == KIND
    assert patched["shadowing"] == {**first["shadowing"], "shadow_traffic_percentage": 10.0}
    assert patched["percentage"] == {"current": 10.0, "reason": "as configured"}
    assert {k: patched[k] for k in ("interfaces", "service", "appliance_image")} == \
        {k: first[k] for k in ("interfaces", "service", "appliance_image")}
    resp = client.patch(f"{APPLIANCES}/web", json={
        "remediation": {"mode": "block", "ttl": "2m"},
        "profiles": {"IDS_Signature_Scan": {"signatures": [
            {"id": "evil", "content": "EVIL", "severity": "critical"}]}}})
    assert resp.status_code == 200, resp.text
    body = store.get(KIND, "web").body
    assert body["remediation"] == {"mode": "block", "ttl": 120, "min_severity": "high"}
    assert body["profiles"]["IDS_Signature_Scan"]["signatures"][0]["id"] == "evil"
    refused = problem(client.patch(f"{APPLIANCES}/web", json={"shadowing": {
        "shadow_traffic_percentage": 12.34}}), 422)
    assert fields(refused) == [PERCENT]
    assert store.get(KIND, "web").revision == patched["revision"] + 1   # the refusal stored nothing
    assert client.patch(f"{APPLIANCES}/web", json={"profiles": None}).json()["profiles"] is None


def test_a_dry_run_stores_nothing(client: TestClient, store: Store, hub: FakeHub) -> None:
    slot(client)
    resp = client.post(APPLIANCES, params={"dry_run": "true"}, json=WEB)
    assert resp.status_code == 200 and resp.json()["percentage"]["current"] == 50.0
    assert store.list(KIND) == [] and KIND not in hub.changed_kinds


def test_delete(client: TestClient, store: Store) -> None:
    slot(client)
    appliance(client)
    resp = client.delete(f"{APPLIANCES}/web")
    assert resp.status_code == 200 and resp.json()["id"] == "web"
    problem(client.get(f"{APPLIANCES}/web"), 404)


# -- slots ------------------------------------------------------------------------------------

def test_a_slot_shows_its_key_once(client: TestClient, store: Store, hub: FakeHub) -> None:
    resp = client.post(SLOTS, json={"interface_id": IF6})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert resp.headers["location"] == f"{SLOTS}/slot-1"
    assert {k: created[k] for k in ("id", "interface_id", "channel")} == {
        "id": "slot-1", "interface_id": IF6, "channel": {"server": "10.0.1.254", "port": 6700}}
    key = created["key"]
    assert len(key) == 48 and int(key, 16) >= 0
    assert store.get(SLOT, "slot-1").body["key"] == key and hub.changed_kinds[-1] == SLOT
    for got in (client.get(f"{SLOTS}/slot-1"), client.get(SLOTS)):
        assert got.status_code == 200 and key not in got.text and '"key"' not in got.text
    assert client.get(f"{SLOTS}/slot-1").json()["state"] == "free"
    second = slot(client, IF7, id="spare")
    assert second["id"] == "spare" and second["key"] != key
    assert [r.owner for r in claims.holders(store, claims.INTERFACE, IF6)] == ["shadow-slot slot-1"]


def test_a_slot_shows_what_its_agent_does(client: TestClient, store: Store) -> None:
    slot(client)
    store.put(SLOT_STATE, "slot-1", {"state": "running", "appliance_id": "web",
                                     "instance_id": "web-1", "updated_at": 5.0})
    shown = client.get(f"{SLOTS}/slot-1").json()
    assert {k: shown[k] for k in ("state", "appliance_id", "instance_id", "updated_at")} == \
        {"state": "running", "appliance_id": "web", "instance_id": "web-1", "updated_at": 5.0}


@pytest.mark.parametrize("interface, owner", [
    (IF3, "personality open"), (IF4, "persona dev"), (IF5, "shard-resource pool-1"),
    (IF6, "shadow-slot slot-1"), (IF1, "appliance web")])
def test_a_slot_cannot_take_an_interface_that_is_held(
        client: TestClient, store: Store, hub: FakeHub, interface: str, owner: str) -> None:
    slot(client, IF6)
    slot(client, IF7)
    appliance(client)
    notices = len(hub.changed_kinds)
    refused = problem(client.post(SLOTS, json={"interface_id": interface}), 409)
    assert fields(refused) == ["body.interface_id"]
    assert (refused["owner"], refused["interface_id"]) == (owner, interface)
    assert [d.id for d in store.list(SLOT)] == ["slot-1", "slot-2"]
    assert len(hub.changed_kinds) == notices


def test_a_slots_interface_cannot_join_a_shard_pool(client: TestClient) -> None:
    slot(client)
    assert client.post("/v1/shard-pools", json={"name": "web", "pool": "10.200.0.0/16",
                                                "external_range": "198.51.100.128/29"}
                       ).status_code == 201
    refused = problem(client.post("/v1/shard-pools/web/resources", json={"interface_id": IF6}), 409)
    assert refused["owner"] == "shadow-slot slot-1"


@pytest.mark.parametrize("body, field", [
    ({"interface_id": UNKNOWN_IF}, "body.interface_id"),
    ({"interface_id": "eth0"}, "body.interface_id"),
    ({"interface_id": IF6, "id": "-x"}, "body.id"),
    ({"interface_id": IF6, "key": "mine"}, "body.key"),
    ({}, "body.interface_id"),
])
def test_bad_slots_are_refused_naming_the_field(client: TestClient, store: Store,
                                                body: dict[str, Any], field: str) -> None:
    assert fields(problem(client.post(SLOTS, json=body), 422)) == [field]
    assert store.list(SLOT) == []


def test_a_new_key_replaces_the_old(client: TestClient, store: Store, hub: FakeHub) -> None:
    old = slot(client)["key"]
    resp = client.post(f"{SLOTS}/slot-1/key")
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["id"] == "slot-1" and new["key"] != old
    assert store.get(SLOT, "slot-1").body["key"] == new["key"] and hub.changed_kinds[-1] == SLOT
    assert new["key"] not in client.get(f"{SLOTS}/slot-1").text
    problem(client.post(f"{SLOTS}/nope/key"), 404)


def test_a_slot_an_instance_runs_on_is_not_deleted(client: TestClient, store: Store,
                                                   hub: FakeHub) -> None:
    slot(client)
    slot(client, IF7)
    appliance(client)
    store.put(STATE, "web", {"instances": [{"id": "web-1", "slot_id": "slot-1", "state": "ready"}]})
    refused = problem(client.delete(f"{SLOTS}/slot-1"), 409)
    assert refused["instances"] == ["web/web-1"] and store.find(SLOT, "slot-1") is not None
    resp = client.delete(f"{SLOTS}/slot-2")        # the other slot is free
    assert resp.status_code == 204 and store.find(SLOT, "slot-2") is None
    store.put(STATE, "web", {"instances": [{"id": "web-1", "slot_id": "slot-1", "state": "stopped"}]})
    assert client.delete(f"{SLOTS}/slot-1").status_code == 204
    assert hub.changed_kinds[-1] == SLOT and not claims.holders(store, claims.INTERFACE, IF6)
    problem(client.delete(f"{SLOTS}/slot-1"), 404)
    assert slot(client)["id"] == "slot-1"          # the interface is free again


# -- findings and remediations -------------------------------------------------------------

def finding(id: str, appliance_id: str, at: float, **extra: Any) -> tuple[str, dict[str, Any]]:
    return id, {"appliance_id": appliance_id, "profile": "IDS_Signature_Scan", "severity": "high",
                "five_tuple": {"protocol": "tcp", "src": "10.0.1.20", "sport": 40000,
                               "dst": "10.0.1.2", "dport": 80},
                "evidence": {"signature": "evil"}, "at": at, "action": "alert", **extra}


def test_findings_newest_first(client: TestClient, store: Store) -> None:
    slot(client)
    appliance(client)
    for id, body in (finding("f1", "web", 10.0), finding("f2", "web", 30.0, action="block",
                                                         remediation_id="r1"),
                     finding("f3", "db", 20.0), finding("f4", "web", 40.0, profile="Nope")):
        store.put(FINDING, id, body)
    listed = client.get(f"{APPLIANCES}/web/findings").json()
    assert [f["id"] for f in listed] == ["f2", "f1"]        # f3 is db's; f4 does not fit
    assert listed[0] == {"id": "f2", "appliance_id": "web", "instance_id": None,
                         "profile": "IDS_Signature_Scan", "severity": "high",
                         "five_tuple": {"protocol": "tcp", "src": "10.0.1.20", "sport": 40000,
                                        "dst": "10.0.1.2", "dport": 80},
                         "evidence": {"signature": "evil"}, "at": 30.0, "action": "block",
                         "remediation_id": "r1"}
    assert [f["id"] for f in client.get(f"{APPLIANCES}/web/findings", params={"limit": 1}).json()] \
        == ["f2"]
    problem(client.get(f"{APPLIANCES}/db/findings"), 404)


def remediation(id: str, appliance_id: str, created_at: float) -> tuple[str, dict[str, Any]]:
    return id, {"appliance_id": appliance_id, "finding_id": f"f-{id}", "source": "10.0.1.20",
                "reason": "signature evil (critical)", "severity": "critical", "ttl": 300,
                "created_at": created_at, "expires_at": created_at + 300}


def test_remediations_listed_and_lifted(client: TestClient, store: Store, hub: FakeHub) -> None:
    for id, body in (remediation("r1", "web", 10.0), remediation("r2", "db", 20.0)):
        store.put(REMEDIATION, id, body)
    assert [r["id"] for r in client.get("/v1/remediations").json()] == ["r2", "r1"]
    assert [r["id"] for r in client.get("/v1/remediations",
                                        params={"appliance_id": "web"}).json()] == ["r1"]
    resp = client.delete("/v1/remediations/r1")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": "r1", **remediation("r1", "web", 10.0)[1]}
    assert store.find(REMEDIATION, "r1") is None and hub.changed_kinds[-1] == REMEDIATION
    [event] = store.events(kind=REMEDIATION)
    assert (event.subject, event.message, event.data["finding_id"], event.data["source"]) == \
        ("r1", "lifted", "f-r1", "10.0.1.20")
    problem(client.delete("/v1/remediations/r1"), 404)


# -- hubctl ----------------------------------------------------------------------------------

run = run_cli


def test_hubctl_appliances(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                           tmp_path: Path) -> None:
    slot(http)
    manifest = tmp_path / "web.yaml"
    manifest.write_text("name: web\ninterfaces: ['%s']\nappliance_image: srv\n"
                        "shadowing: {shadow_traffic_percentage: 50}\n" % IF1)
    code, out, err = run(capsys, http, "appliance", "create", "-f", str(manifest))
    assert code == 0 and "50.0% (as configured)" in out, err
    code, out, err = run(capsys, http, "appliance", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "NAME", "INTERFACES"], err
    assert out.splitlines()[1].split()[:5] == ["web", "web", IF1, "yes", "0/1"]
    store.put(STATE, "web", {"instances": [{
        "id": "web-1", "slot_id": "slot-1", "state": "ready",
        "counters": {"connections": 12, "packets": 90, "bytes": 9000, "dropped": 1},
        "load": {"pps": 40.0, "drops": 1, "lag_ms": 12.5, "cpu_percent": 3.0},
        "metrics": {"latency_p50_ms": 0.8, "latency_p99_ms": 2.5}}],
        "counters": {"connections": 12, "packets": 90, "bytes": 9000, "dropped": 1},
        "holds": [{"source": "10.0.1.20", "until": 2e9, "finding_id": "f-1"}]})
    code, out, err = run(capsys, http, "appliance", "get", "web")
    assert code == 0 and "INSTANCES" in out and "web-1  slot-1  ready" in out, err
    assert "12 connections, 90 packets, 9000 bytes, 1 dropped" in out
    assert "40 pps, 1 drops, lag 12.5 ms, cpu 3%" in out
    assert "latency_p50_ms 0.8, latency_p99_ms 2.5" in out and "10.0.1.20 until" in out
    code, out, err = run(capsys, http, "appliance", "set-percentage", "web", "12.5")
    assert code == 0 and "shadow traffic percentage 12.5%" in out, err
    assert store.get(KIND, "web").body["shadowing"]["shadow_traffic_percentage"] == 12.5
    code, out, err = run(capsys, http, "appliance", "set-percentage", "web", "12.34")
    assert code == 1 and out == "" and PERCENT in err and "HTTP 422" in err
    code, out, err = run(capsys, http, "appliance", "get", "web", "-o", "json")
    assert code == 0 and json.loads(out)["percentage"]["current"] == 12.5, err
    code, out, err = run(capsys, http, "appliance", "delete", "web")
    assert code == 0 and "deleted appliance web" in out, err


def test_hubctl_bad_manifest_names_the_field(capsys: pytest.CaptureFixture[str],
                                             http: TestClient, tmp_path: Path) -> None:
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps({**WEB, "shadowing": shadowing(shadow_traffic_percentage=120)}))
    code, out, err = run(capsys, http, "appliance", "create", "-f", str(manifest))
    assert code == 1 and out == "" and PERCENT in err


def test_hubctl_slots_and_the_agent_line(capsys: pytest.CaptureFixture[str],
                                         http: TestClient, store: Store) -> None:
    code, out, err = run(capsys, http, "shadow", "slot-add", IF6)
    assert code == 0, err
    key = store.get(SLOT, "slot-1").body["key"]
    assert f"key: {key}" in out
    assert (f"hub-shadow-agent --server 10.0.1.254 --port 6700 --slot slot-1 --key {key} "
            "--interface IFNAME") in out
    code, out, err = run(capsys, http, "shadow", "slots")
    assert code == 0 and key not in out and f"slot-1  {IF6}  free" in out, err
    code, out, err = run(capsys, http, "shadow", "slot-key", "slot-1")
    new = store.get(SLOT, "slot-1").body["key"]
    assert code == 0 and new != key and f"new key for shadow slot slot-1: {new}" in out, err
    code, out, err = run(capsys, http, "shadow", "slot-add", IF4)
    assert code == 1 and "persona" in err and "HTTP 409" in err
    code, out, err = run(capsys, http, "shadow", "slot-delete", "slot-1")
    assert code == 0 and "deleted shadow slot slot-1" in out, err
    assert run(capsys, http, "shadow", "slots")[1].strip() == "(no shadow slots)"


def test_hubctl_findings_and_remediations(capsys: pytest.CaptureFixture[str],
                                          http: TestClient, store: Store) -> None:
    slot(http)
    appliance(http)
    code, out, _ = run(capsys, http, "shadow", "findings", "web")
    assert code == 0 and out.strip() == "(no findings)"
    store.put(FINDING, *finding("f1", "web", 10.0))
    code, out, err = run(capsys, http, "shadow", "findings", "web")
    assert code == 0 and "IDS_Signature_Scan  high" in out, err
    assert "tcp 10.0.1.20:40000 > 10.0.1.2:80  alert   signature=evil" in out
    store.put(REMEDIATION, *remediation("r1", "web", 10.0))
    code, out, err = run(capsys, http, "remediation", "list", "--appliance", "web")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["r1", "web", "10.0.1.20", "critical"]
    code, out, err = run(capsys, http, "remediation", "lift", "r1")
    assert code == 0 and "lifted remediation r1 (source 10.0.1.20, appliance web)" in out, err
    assert run(capsys, http, "remediation", "list")[1].strip() == "(no remediations)"
    code, _, err = run(capsys, http, "remediation", "lift", "r1")
    assert code == 1 and "HTTP 404" in err


# -- the capability check --------------------------------------------------------------------

LACKS_CLONE = {"missing": {"clone": "OFPBAC_BAD_TYPE (type 2, code 1)"}, "probed_at": 1.0}


def test_a_switch_whose_probe_found_an_action_missing_refuses_the_manifest(
        client: TestClient, store: Store, hub: FakeHub) -> None:
    slot(client)
    store.put(CAPABILITY, "0000000000000a01", LACKS_CLONE)
    body = problem(client.post(APPLIANCES, json=WEB), 422)
    assert fields(body) == ["body.interfaces"], body
    reason = body["errors"][0]["reason"]
    assert "switch 0000000000000a01 lacks what the mirror needs: clone" in reason
    assert "OFPBAC_BAD_TYPE" in reason
    disabled = {**WEB, "shadowing": {**WEB["shadowing"], "shadow_enabled": False}}
    assert client.post(APPLIANCES, json=disabled).status_code == 201      # nothing to mirror
    store.put(CAPABILITY, "0000000000000a01", {"missing": {}, "probed_at": 2.0})
    assert client.patch(f"{APPLIANCES}/web", json={"shadowing": {"shadow_enabled": True}}
                        ).status_code == 200
    truncation = {"missing": {"output_trunc": "OFPBAC_BAD_ARGUMENT (type 2, code 5)"}}
    store.put(CAPABILITY, "0000000000000a01", truncation)
    assert client.patch(f"{APPLIANCES}/web", json={"name": "web"}).status_code == 200
    body = problem(client.patch(f"{APPLIANCES}/web", json={"mirror": {"snaplen": 128}}), 422)
    assert "output_trunc" in body["errors"][0]["reason"]
    assert not [q for q in hub.queries if q[0] == "shadow"], "REST never waits for the worker"


def test_why_nothing_is_mirrored_is_shown_while_shadowing_is_enabled(
        client: TestClient, store: Store) -> None:
    slot(client)
    appliance(client)
    why = "waiting for the capability probe of switch 0000000000000a01"
    store.put(STATE, "web", {"instances": [], "unmirrored": why})
    assert client.get(f"{APPLIANCES}/web").json()["unmirrored"] == why
    client.patch(f"{APPLIANCES}/web", json={"shadowing": {"shadow_enabled": False}})
    assert client.get(f"{APPLIANCES}/web").json()["unmirrored"] is None
