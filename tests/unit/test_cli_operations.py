"""hubctl interface / operation / personality apply against the real API app
(TestClient, in-memory store, fake hub; a scripted coordinator for --wait)."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.core import interfaces
from controller.features.personality import cli_wait
from controller.features.personality.cli import parse_check
from controller.features.personality.cli_tables import connection_count, format_check, format_connection
from controller.features.personality.operations import FINAL
from controller.store import Store, open_store
from controller.core.topology import Host
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

IF1, IF2, IF3 = "0000000000000a01:2", "0000000000000a01:3", "0000000000000a02:1"


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    s.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    s.create("personality", "web", {"name": "web", "subnet_id": "seg1", "dns_servers": ["10.0.1.53"]})
    s.create("personality", "lockdown", {"name": "lockdown", "subnet_id": "seg1"})
    for mac, ip, dpid, port in (("02:00:00:00:00:01", "10.0.1.1", 0xA01, 2),
                                ("02:00:00:00:00:02", "10.0.1.2", 0xA01, 3),
                                ("02:00:00:00:00:03", "10.0.1.3", 0xA02, 1)):
        interfaces.record_host(s, Host(mac, (ip,), dpid, port))
    s.put("interface", IF1, {**s.get("interface", IF1).body, "personality_id": "web",
                             "default_personality_id": "web"})
    yield s
    s.close()


run = run_cli


class Coordinator:
    """Stands in for the hub's coordinator: each poll interval moves every
    unfinished operation one step along ``script`` (state, connections, note)."""

    def __init__(self, store: Store, script: list[tuple[str, Any, str | None]]) -> None:
        self.store, self.script, self.step, self.sleeps = store, script, 0, 0

    def __call__(self, seconds: float) -> None:
        assert seconds == cli_wait.POLL_INTERVAL_S
        self.sleeps += 1
        assert self.step < len(self.script), "hubctl kept polling after the operation finished"
        state, connections, note = self.script[self.step]
        self.step += 1
        for doc in self.store.list("operation"):
            b = doc.body
            if b["state"] in FINAL:
                continue
            log = b["log"] + ([{"at": 1e12, "state": state, "message": note}] if note or
                              state != b["state"] else [])
            body = {**b, "state": state, "connections": connections, "log": log}
            if state in FINAL:
                body.update(result=state, reason=note if state != "succeeded" else None, finished_at=2e12)
            self.store.put("operation", doc.id, body)


SUCCESS = [("transition", None, "prepared both personalities"),
           ("draining", 3, "draining old connections"), ("draining", 3, None), ("draining", 1, None),
           ("applying", 0, "new personality installed"), ("verifying", 0, "2 checks"),
           ("succeeded", 0, "all checks passed")]
ROLLBACK = [("transition", None, None), ("draining", 0, None), ("applying", None, None),
            ("verifying", None, None), ("rolled_back", None, "health check gateway 10.0.1.254 failed")]


# -- interfaces -------------------------------------------------------------------------------

def test_interface_list_and_get(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store) -> None:
    code, out, err = run(capsys, http, "interface", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "MAC", "IPS", "PERSONALITY", "STATE", "DEFAULT", "OPERATION"]
    assert lines[1].split() == [IF1, "02:00:00:00:00:01", "10.0.1.1", "web", "active", "web", "-"]
    assert lines[2].split() == [IF2, "02:00:00:00:00:02", "10.0.1.2", "-", "active", "-", "-"]
    store.put("interface", IF1, {**store.get("interface", IF1).body, "expires_at": 1e9, "expires_to": "web",
                                 "operation_id": "op-1"})
    code, out, _ = run(capsys, http, "interface", "get", IF1)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["personality"] == ["web"] and rows["operation"] == ["op-1"] and rows["datapath"] == ["0000000000000a01"]
    assert rows["expires"][0].startswith("2001-09-") and rows["after"] == ["expiry", "web"]
    code, out, _ = run(capsys, http, "-o", "json", "interface", "get", IF2)
    assert code == 0 and json.loads(out)["id"] == IF2
    code, _, err = run(capsys, http, "interface", "get", "ghost")
    assert code == 1 and "Not Found (HTTP 404)" in err


def test_interface_switch_starts_an_operation(capsys: pytest.CaptureFixture[str], http: TestClient,
                                              store: Store, hub: FakeHub) -> None:
    code, out, err = run(capsys, http, "interface", "switch", IF1, "lockdown", "--drain-max", "5",
                         "--until", "timeout", "--check", "gateway", "--check", "tcp:10.0.2.2:22@1.5",
                         "--check", "dns:9.9.9.9")
    assert code == 0, err
    [op] = store.list("operation")
    assert op.body["drain"] == {"max_seconds": 5.0, "until": "timeout"}
    assert op.body["health_checks"] == [
        {"type": "gateway", "target": None, "port": None, "timeout_seconds": 3.0},
        {"type": "tcp", "target": "10.0.2.2", "port": 22, "timeout_seconds": 1.5},
        {"type": "dns", "target": "9.9.9.9", "port": None, "timeout_seconds": 3.0}]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.strip()}
    assert rows["id"] == [op.id] and rows["state"] == ["pending"] and rows["to"] == ["lockdown"]
    assert rows["checks"] == ["gateway,tcp:10.0.2.2:22@1.5,dns:9.9.9.9"]
    assert rows["drain"] == ["up", "to", "5s,", "until", "timeout"]
    assert "LOG" in out and hub.operation_notices == 1

    code, out, err = run(capsys, http, "interface", "switch", IF1, "web")
    assert code == 1 and out == ""
    assert "Interface busy (HTTP 409)" in err and op.id in err


def test_interface_switch_reports_field_errors(capsys: pytest.CaptureFixture[str], http: TestClient,
                                               store: Store) -> None:
    code, _, err = run(capsys, http, "interface", "switch", IF2, "ghost")
    assert code == 1 and "body.personality_id: no personality with id 'ghost'" in err
    code, _, err = run(capsys, http, "interface", "switch", IF2, "web", "--check", "ping:10.0.1")
    assert code == 1 and "body.health_checks[0].target" in err
    assert store.list("operation") == []


def test_dry_run(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store, hub: FakeHub) -> None:
    code, out, err = run(capsys, http, "interface", "switch", IF1, "lockdown", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"dry run: {IF1}  (none) -> lockdown")
    assert lines[1] == "flows: 1 to add, 1 to delete"
    assert lines[2].startswith("+ table=40") and "10.0.1.10" in lines[2]
    assert lines[3].startswith("- table=40") and "10.0.1.9" in lines[3]
    assert lines[4:] == ["connections that would be cut: 1", "  tcp 10.0.1.10:40000 <-> 10.0.2.2:22"]
    assert hub.dry_runs == [(IF1, "lockdown")] and store.list("operation") == []
    code, out, _ = run(capsys, http, "-o", "json", "interface", "switch", IF1, "lockdown", "--dry-run")
    assert code == 0 and json.loads(out)["would_cut"] == 1


def test_switch_wait_succeeded(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = Coordinator(store, SUCCESS)
    monkeypatch.setattr(cli_wait, "_sleep", coordinator)
    code, out, err = run(capsys, http, "interface", "switch", IF1, "lockdown", "--wait")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "pending: switch: web -> lockdown"
    assert lines[1] == "transition: prepared both personalities"
    assert lines[2] == "draining: draining old connections"
    assert re.fullmatch(r"draining: 3 connections, \d+\.\d s of 30 s", lines[3])
    assert re.fullmatch(r"draining: 1 connection, \d+\.\d s of 30 s", lines[4])
    assert lines[5:] == ["applying: new personality installed", "verifying: 2 checks",
                         "succeeded: all checks passed"]
    assert coordinator.sleeps == len(SUCCESS)


def test_switch_wait_rolled_back(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, ROLLBACK))
    code, out, _ = run(capsys, http, "interface", "switch", IF1, "lockdown", "--wait", "--check", "gateway")
    assert code == 1
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["pending", "transition", "draining", "draining",
                                                      "applying", "verifying", "rolled_back"]
    assert lines[3].startswith("draining: 0 connections, ")
    assert lines[-1] == "rolled_back: health check gateway 10.0.1.254 failed"


def test_switch_wait_failed_json(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, [("failed", None, "switch lost")]))
    code, out, _ = run(capsys, http, "-o", "json", "interface", "switch", IF1, "lockdown", "--wait")
    assert code == 1
    op = json.loads(out)
    assert op["state"] == "failed" and op["reason"] == "switch lost"


def test_revert(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, http, "interface", "revert", IF1)
    assert code == 1 and "Already on the default personality (HTTP 409)" in err
    store.put("interface", IF1, {**store.get("interface", IF1).body, "personality_id": "lockdown"})
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, SUCCESS))
    code, out, err = run(capsys, http, "interface", "revert", IF1, "--wait", "--drain-max", "2")
    assert code == 0, err
    assert out.splitlines()[0] == "pending: revert: lockdown -> web"
    assert re.search(r"draining: 3 connections, \d+\.\d s of 2 s", out)
    [op] = store.list("operation")
    assert op.body["kind"] == "revert" and op.body["drain"]["max_seconds"] == 2.0
    code, _, err = run(capsys, http, "interface", "revert", IF2)
    assert code == 1 and "no default personality" in err


def test_history_and_operations(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, [("succeeded", 0, None)]))
    assert run(capsys, http, "interface", "switch", IF1, "lockdown", "--wait")[0] == 0
    assert run(capsys, http, "interface", "switch", IF2, "web")[0] == 0
    first, second = sorted(store.list("operation"), key=lambda d: d.body["created_at"])

    code, out, _ = run(capsys, http, "interface", "history", IF1)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["OPERATION", "KIND", "AT", "FROM", "TO", "STATE", "RESULT", "REASON"]
    cols = lines[1].split()
    assert cols[:2] == [first.id, "switch"] and cols[4:] == ["web", "lockdown", "succeeded", "succeeded", "-"]
    code, out, _ = run(capsys, http, "interface", "history", IF3)
    assert code == 0 and out.strip() == "(no operations)"

    code, out, _ = run(capsys, http, "operation", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "INTERFACE", "KIND", "FROM", "TO", "STATE", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [second.id, first.id]
    code, out, _ = run(capsys, http, "operation", "list", "--interface", IF2)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [second.id]
    code, out, _ = run(capsys, http, "operation", "list", "--state", "succeeded", "-o", "json")
    assert [o["id"] for o in json.loads(out)] == [first.id]
    code, _, err = run(capsys, http, "operation", "list", "--state", "bogus")
    assert code == 1 and "query.state" in err

    code, out, _ = run(capsys, http, "operation", "get", first.id)
    assert code == 0 and "LOG" in out and "succeeded" in out
    code, _, err = run(capsys, http, "operation", "get", "op-nope")
    assert code == 1 and "Not Found (HTTP 404)" in err


def test_personality_apply(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store) -> None:
    code, out, err = run(capsys, http, "personality", "apply", "web", "--interface", IF1, "--interface", IF2)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["INTERFACE", "OPERATION", "FROM", "TO", "STATE"]
    assert lines[1].split()[0] == IF2 and lines[1].split()[2:] == ["-", "web", "pending"]
    assert lines[-1] == f"unchanged (already on it): {IF1}"
    code, _, err = run(capsys, http, "personality", "apply", "lockdown", "--datapath", "0000000000000a01")
    assert code == 1 and "Interface busy (HTTP 409)" in err and IF2 in err
    assert len(store.list("operation")) == 1
    code, _, err = run(capsys, http, "personality", "apply", "lockdown", "--interface", "ghost")
    assert code == 1 and "body.interfaces[0]: string should match pattern" in err
    code, _, err = run(capsys, http, "personality", "apply", "lockdown", "--interface",
                       "00000000000000ff:9")
    assert code == 1 and "body.interfaces[0]: no interface with id '00000000000000ff:9'" in err


def test_personality_apply_wait(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, ROLLBACK))
    code, out, _ = run(capsys, http, "personality", "apply", "lockdown", "--datapath", "0000000000000a01",
                       "--wait")
    assert code == 1
    assert f"{IF1}: pending: apply: web -> lockdown" in out.splitlines()
    assert f"{IF2}: rolled_back: health check gateway 10.0.1.254 failed" in out.splitlines()
    assert out.splitlines()[-1] == (f"2 of 2 operations did not succeed: {IF1} rolled_back, "
                                    f"{IF2} rolled_back")

    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, SUCCESS))
    code, out, _ = run(capsys, http, "personality", "apply", "web", "--interface", IF1, "--interface", IF3,
                       "--wait")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"unchanged (already on it): {IF1}"
    assert lines[1] == f"{IF3}: pending: apply: None -> web"
    assert f"{IF3}: draining: 3 connections, " in out
    assert lines[-1] == f"{IF3}: succeeded: all checks passed"
    [op] = [d for d in store.list("operation") if d.body["interface_id"] == IF3]
    assert op.body["state"] == "succeeded"


def test_personality_apply_wait_json(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, [("succeeded", 0, None)]))
    code, out, _ = run(capsys, http, "-o", "json", "personality", "apply", "lockdown", "--interface", IF2,
                       "--wait")
    assert code == 0
    assert [(o["interface_id"], o["state"]) for o in json.loads(out)] == [(IF2, "succeeded")]


def test_usage(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, _, err = run(capsys, http, "personality", "apply", "web")
    assert code == 2 and "--interface" in err
    code, _, err = run(capsys, http, "personality", "apply", "web", "--interface", IF1, "--datapath", "x")
    assert code == 2
    code, _, err = run(capsys, http, "interface", "switch", IF1, "web", "--dry-run", "--wait")
    assert code == 2 and "not allowed with" in err
    code, _, err = run(capsys, http, "interface", "switch", IF1, "web", "--check", "tcp:10.0.0.1")
    assert code == 2 and "bad check 'tcp:10.0.0.1'" in err
    code, _, err = run(capsys, http, "interface", "switch", IF1, "web", "--until", "forever")
    assert code == 2
    code, out, _ = run(capsys, http, "personality", "--help")
    assert code == 0 and "apply" in out and "create" in out
    code, out, _ = run(capsys, http, "interface", "--help")
    assert code == 0 and all(v in out for v in ("list", "get", "switch", "revert", "history"))


@pytest.mark.parametrize("spec, check", [
    ("gateway", {"type": "gateway"}),
    ("gateway:10.0.1.254", {"type": "gateway", "target": "10.0.1.254"}),
    ("dns", {"type": "dns"}),
    ("dns:9.9.9.9@0.5", {"type": "dns", "target": "9.9.9.9", "timeout_seconds": 0.5}),
    ("ping:10.0.2.2", {"type": "ping", "target": "10.0.2.2"}),
    ("tcp:10.0.2.2:22@5", {"type": "tcp", "target": "10.0.2.2", "port": 22, "timeout_seconds": 5.0}),
])
def test_parse_check(spec: str, check: dict[str, Any]) -> None:
    assert parse_check(spec) == check
    assert format_check({"timeout_seconds": 3.0, **check}) == spec


@pytest.mark.parametrize("spec", ["", "ping", "tcp:10.0.0.1", "tcp:10.0.0.1:ssh", "http:x", "gateway:a:b",
                                  "dns:1.1.1.1@soon", "ping:"])
def test_parse_check_rejects(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_check(spec)


def test_connection_helpers() -> None:
    assert connection_count(4) == 4 and connection_count([{}, {}]) == 2
    assert connection_count({"count": 7}) == 7 and connection_count(None) is None
    assert format_connection({"protocol": "udp", "src": "10.0.1.1", "dst": "10.0.1.53", "dst_port": 53}) == \
        "udp 10.0.1.1 -> 10.0.1.53:53"
    assert format_connection({"protocol": "icmp", "local": "10.0.1.1", "peer": "10.0.2.2"}) == \
        "icmp 10.0.1.1 <-> 10.0.2.2"
    assert format_connection({"zone": 3, "mark": 1}) == "zone=3 mark=1"


def test_wait_on_a_terminal_rewrites_the_progress_line(capsys: pytest.CaptureFixture[str], http: TestClient,
                                                       store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    monkeypatch.setattr(cli_wait, "_sleep", Coordinator(store, SUCCESS))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, http, "interface", "switch", IF1, "lockdown", "--wait")
    assert code == 0
    assert out.count("\r\x1b[Kdraining: 3 connections, ") == 2
    assert re.search(r"\r\x1b\[Kdraining: 1 connection, \d+\.\d s of 30 s\napplying: ", out)
    assert out.endswith("succeeded: all checks passed\n")
