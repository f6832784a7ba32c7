"""hubctl shard against the real API app (TestClient, in-memory store, a fake hub whose
rotate query stores a round the way the runtime does; a scripted runtime for --wait)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import interfaces
from controller.core.topology import Host
from controller.features.shard import cli_rotate
from controller.features.shard.records import (LEASE, RESOURCE, ROTATION, STATE, Deprecated, Lease,
                                               PoolState, Rotation, Step)
from controller.features.shard.rotation import Shard
from controller.store import Store, open_store
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

IF1, IF2 = "0000000000000a01:2", "0000000000000a01:3"
POOL = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/29"}

run = run_cli


class RotatingHub(FakeHub):
    """Answers ``("shard", "rotate")`` by storing a running round with a pending step per
    resource asked for (as the runtime does before it answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.store: Store | None = None

    def query(self, feature: str, name: str, **args: Any) -> Any:
        if (feature, name) != ("shard", "rotate"):
            return super().query(feature, name, **args)
        self.queries.append((feature, name, args))
        assert self.store is not None
        steps = [Step(r, "web-s1", "web-s2", "10.200.0.2", None) for r in args["resources"] or ()]
        rotation = Rotation("r1", args["pool_id"], 100.0, forced=tuple(args["resources"] or ()),
                            reason="forced", steps=steps)
        self.store.put(ROTATION, rotation.id, rotation.to_body())
        return {"id": rotation.id, "state": rotation.state}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    for port in (2, 3):
        interfaces.record_host(s, Host(f"02:00:00:00:00:0{port}", (f"10.0.1.{port}",), 0xA01, port))
    yield s
    s.close()


@pytest.fixture
def hub(store: Store) -> RotatingHub:
    h = RotatingHub()
    h.store = store
    return h


@pytest.fixture
def pool(client: TestClient) -> None:
    assert client.post("/v1/shard-pools", json=POOL).status_code == 201


def enroll(capsys: pytest.CaptureFixture[str], http: TestClient, *argv: str) -> str:
    code, out, err = run(capsys, http, "shard", "enroll", "web", *argv)
    assert code == 0, err
    return out


def test_enroll_prints_the_key_once(capsys: pytest.CaptureFixture[str], http: TestClient,
                                    store: Store, pool: None) -> None:
    out = enroll(capsys, http, IF1)
    key = store.get(RESOURCE, "web-1").body["key"]
    assert f"key: {key}" in out and "shown once" in out
    assert "external address: 198.51.100.65" in out and "RAP server: 10.0.1.254 port 6699" in out
    assert (f"hub-rap --server 10.0.1.254 --port 6699 --resource web-1 --key {key} "
            "--interface IFNAME") in out
    for argv in (("resources", "web"), ("resource", "web", "web-1"), ("history", "web-1")):
        code, shown, err = run(capsys, http, "shard", *argv)
        assert code == 0 and key not in shown, err

    out = enroll(capsys, http, IF2, "--external-ip", "198.51.100.70", "--id", "db")
    assert "as resource db" in out and "198.51.100.70" in out
    assert store.get(RESOURCE, "db").body["external_ip"] == "198.51.100.70"


def test_enroll_reports_the_refused_field(capsys: pytest.CaptureFixture[str], http: TestClient,
                                          store: Store, pool: None) -> None:
    code, out, err = run(capsys, http, "shard", "enroll", "web", IF1, "--external-ip", "10.9.9.9")
    assert code == 1 and out == ""
    assert "HTTP 422" in err and "body.external_ip" in err and "198.51.100.64/29" in err
    assert store.list(RESOURCE) == []


def test_resources_and_resource(capsys: pytest.CaptureFixture[str], http: TestClient,
                                store: Store, pool: None) -> None:
    code, out, _ = run(capsys, http, "shard", "resources", "web")
    assert code == 0 and out.strip() == "(no resources)"
    enroll(capsys, http, IF1)
    enroll(capsys, http, IF2)
    store.put(LEASE, "web-1", Lease(
        "web-1", "leased", "10.200.0.20", "web-s2", 2000.0,
        deprecated=(Deprecated("10.200.0.5", "web-s1", 900.0, 4500.0, 3),),
        history=({"at": 1.0, "event": "leased", "address": "10.200.0.5"},
                 {"at": 2.0, "event": "moved", "address": "10.200.0.20"})).to_body())
    code, out, err = run(capsys, http, "shard", "resources", "web")
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["ID", "INTERFACE", "EXTERNAL", "IP", "ADDRESS", "SHARD", "LEASE",
                        "DEPRECATED"]
    assert lines[1] == ["web-1", IF1, "198.51.100.65", "10.200.0.20", "web-s2", "leased", "1"]
    assert lines[2] == ["web-2", IF2, "198.51.100.66", "-", "-", "unleased", "0"]

    code, out, _ = run(capsys, http, "shard", "resource", "web", "web-1")
    assert code == 0
    assert "DEPRECATED" in out and "10.200.0.5" in out and "HISTORY" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:12] if line.strip()}
    assert rows["address"] == ["10.200.0.20"] and rows["shard"] == ["web-s2"]
    code, out, _ = run(capsys, http, "-o", "json", "shard", "resource", "web", "web-1")
    assert code == 0 and json.loads(out)["deprecated"][0]["connections"] == 3
    code, _, err = run(capsys, http, "shard", "resource", "web", "ghost")
    assert code == 1 and "HTTP 404" in err


def test_key_and_release(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                         pool: None) -> None:
    enroll(capsys, http, IF1)
    old = store.get(RESOURCE, "web-1").body["key"]
    code, out, err = run(capsys, http, "shard", "key", "web", "web-1")
    new = store.get(RESOURCE, "web-1").body["key"]
    assert code == 0 and new != old and f"new key for resource web-1: {new}" in out, err
    code, out, err = run(capsys, http, "shard", "release", "web", "web-1")
    assert code == 0 and "released resource web-1 of shard pool web" in out, err
    assert store.find(RESOURCE, "web-1") is None
    code, _, err = run(capsys, http, "shard", "release", "web", "web-1")
    assert code == 1 and "HTTP 404" in err


def test_history_with_or_without_the_pool(capsys: pytest.CaptureFixture[str], http: TestClient,
                                          store: Store, client: TestClient, pool: None) -> None:
    assert client.post("/v1/shard-pools", json={"name": "db", "pool": "10.201.0.0/16",
                                                "external_range": "198.51.100.128/29"}
                       ).status_code == 201
    code, _, err = run(capsys, http, "shard", "enroll", "db", IF2)
    assert code == 0, err
    store.put(LEASE, "db-1", Lease("db-1", history=(
        {"at": 1.0, "event": "registered"}, {"at": 2.0, "event": "leased",
                                             "address": "10.201.0.3"})).to_body())
    for argv in (("db-1",), ("db", "db-1"), ("db-1", "--pool", "db")):
        code, out, err = run(capsys, http, "shard", "history", *argv)
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 2 and lines[0].endswith("registered")
        assert lines[1].endswith("leased  address=10.201.0.3")
    code, out, _ = run(capsys, http, "shard", "history", "web", "db-1")
    assert code == 1
    code, _, err = run(capsys, http, "shard", "history", "ghost")
    assert code == 1 and "no shard pool has a resource 'ghost'" in err


def test_shards(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                pool: None) -> None:
    code, out, _ = run(capsys, http, "shard", "shards", "web")
    assert code == 0 and out.strip() == "(no shards yet)"
    enroll(capsys, http, IF1)
    store.put(STATE, "web", PoolState("web", (
        Shard("web-s1", IPv4Network("10.200.0.0/28"), 10.0, 310.0),
        Shard("web-s2", IPv4Network("10.200.0.16/29"), 10.0, 310.0, state="retired"))).to_body())
    store.put(LEASE, "web-1", Lease("web-1", "leased", "10.200.0.2", "web-s1").to_body())
    code, out, _ = run(capsys, http, "shard", "shards", "web")
    lines = [line.split()[:5] for line in out.splitlines()]
    assert lines == [["ID", "CIDR", "STATE", "MEMBERS", "UTILIZATION"],
                     ["web-s1", "10.200.0.0/28", "active", "1", "7%"],
                     ["web-s2", "10.200.0.16/29", "retired", "0", "0%"]]


# -- rotation --------------------------------------------------------------------------

class Runtime:
    """Stands in for the runtime: at each poll, the next line of ``script`` (per resource,
    the step's state and message; then the round's state) is written to the stored round."""

    def __init__(self, store: Store, script: list[tuple[dict[str, tuple[str, str]], str]]) -> None:
        self.store, self.script, self.polls = store, script, 0

    def __call__(self, seconds: float) -> None:
        assert seconds == cli_rotate.POLL_INTERVAL_S
        assert self.polls < len(self.script), "hubctl kept polling after the round ended"
        steps, state = self.script[self.polls]
        self.polls += 1
        doc = self.store.get(ROTATION, "r1")
        rotation = Rotation.from_doc(doc.id, doc.body)
        rotation.steps = [replace(s, state=steps[s.resource][0], message=steps[s.resource][1],
                                  to_address="10.200.0.18") if s.resource in steps else s
                          for s in rotation.steps]
        rotation.state = state
        self.store.put(ROTATION, "r1", rotation.to_body())


@pytest.fixture
def two(capsys: pytest.CaptureFixture[str], http: TestClient, pool: None) -> None:
    enroll(capsys, http, IF1)
    enroll(capsys, http, IF2)


def test_rotate_without_wait(capsys: pytest.CaptureFixture[str], http: TestClient,
                             hub: RotatingHub, two: None) -> None:
    code, out, err = run(capsys, http, "shard", "rotate", "web")
    assert code == 0, err
    assert "rotation r1 running" in out and "hubctl shard rotation web r1" in out
    assert hub.queries[-1] == ("shard", "rotate", {"pool_id": "web", "resources": None})
    code, out, _ = run(capsys, http, "shard", "rotations", "web")
    assert code == 0 and out.splitlines()[1].split()[0] == "r1"
    code, _, err = run(capsys, http, "shard", "rotate", "web", "--resource", "ghost")
    assert code == 1 and "body.resources[0]" in err


def test_rotate_wait_follows_each_step(capsys: pytest.CaptureFixture[str], http: TestClient,
                                       store: Store, hub: RotatingHub, two: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Runtime(store, [
        ({"web-1": ("announcing", ""), "web-2": ("announcing", "")}, "running"),
        ({"web-1": ("announcing", ""), "web-2": ("switching", "")}, "running"),
        ({"web-1": ("switching", ""), "web-2": ("done", "")}, "running"),
        ({"web-1": ("done", ""), "web-2": ("done", "")}, "done")])
    monkeypatch.setattr(cli_rotate, "_sleep", runtime)
    code, out, err = run(capsys, http, "shard", "rotate", "web", "--resource", "web-1",
                         "--resource", "web-2", "--wait")
    assert code == 0, err
    assert hub.queries[-1][2] == {"pool_id": "web", "resources": ["web-1", "web-2"]}
    lines = out.splitlines()
    assert lines[0] == "rotation r1 started"
    assert [line.split(":")[0] + " " + line.split()[1] for line in lines[1:-1]] == [
        "web-1 pending", "web-2 pending", "web-1 announcing", "web-2 announcing",
        "web-2 switching", "web-1 switching", "web-2 done", "web-1 done"]
    assert "10.200.0.2 (web-s1) -> 10.200.0.18 (web-s2)" in lines[-2]
    assert lines[-1] == "rotation r1 done: 2 of 2 moves done"
    assert runtime.polls == 4


def test_rotate_wait_fails_on_a_partial_round(capsys: pytest.CaptureFixture[str],
                                              http: TestClient, store: Store, two: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_rotate, "_sleep", Runtime(store, [
        ({"web-1": ("failed", "no ACK by the deadline"), "web-2": ("done", "")}, "partial")]))
    code, out, _ = run(capsys, http, "shard", "rotate", "web", "--resource", "web-1",
                       "--resource", "web-2", "--wait")
    assert code == 1
    assert "web-1: failed 10.200.0.2 (web-s1) -> 10.200.0.18 (web-s2): no ACK by the deadline" \
        in out
    assert out.splitlines()[-1] == "rotation r1 partial: 1 of 2 moves done, 1 failed"


def test_rotate_wait_gives_up_at_the_timeout(capsys: pytest.CaptureFixture[str],
                                             http: TestClient, store: Store, two: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds
    monkeypatch.setattr(cli_rotate, "_sleep", sleep)
    monkeypatch.setattr(cli_rotate, "_clock", lambda: clock[0])
    code, _, err = run(capsys, http, "shard", "rotate", "web", "--wait", "--timeout", "2")
    assert code == 1 and "did not finish within 2 s (still running)" in err
    assert clock[0] == 2.0


def test_rotate_wait_json_writes_only_the_final_round(capsys: pytest.CaptureFixture[str],
                                                      http: TestClient, store: Store, two: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_rotate, "_sleep", Runtime(store, [
        ({"web-1": ("done", "")}, "done")]))
    code, out, _ = run(capsys, http, "-o", "json", "shard", "rotate", "web", "--resource",
                       "web-1", "--wait")
    assert code == 0
    final = json.loads(out)
    assert final["state"] == "done" and final["steps"][0]["state"] == "done"


def test_rotation_detail(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                         two: None) -> None:
    run(capsys, http, "shard", "rotate", "web", "--resource", "web-1")
    code, out, err = run(capsys, http, "shard", "rotation", "web", "r1")
    assert code == 0, err
    assert "STEPS" in out and "web-1" in out and "pending" in out
    code, _, err = run(capsys, http, "shard", "rotation", "web", "r9")
    assert code == 1 and "HTTP 404" in err
