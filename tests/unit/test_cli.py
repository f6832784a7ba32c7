"""hubctl against the real API app (TestClient) and a few canned transports."""

from __future__ import annotations

import argparse
import ast
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from controller.cli import hub as cli_hub
from controller.cli import main as cli
from controller.cli.commands import Common
from controller.core.plugin import Plugin
from controller.registry import FEATURES
from controller.api import ApiContext, create_app
from tests.unit.fakes import FakeHub
from controller.store import Store, open_store

DP = {
    "id": "0000000000000a01", "dpid": 0xA01, "connected": True, "of_version": "1.4",
    "ports": [{"port_no": 1, "name": "s1-eth1", "up": True, "role": "host"},
              {"port_no": 2, "name": "s1-eth2", "up": True, "role": "link"},
              {"port_no": 3, "name": "s1-eth3", "up": False, "role": "unknown"}],
    "flows": {"desired": 10, "installed": 9, "in_sync": False},
    "last_reconciled_at": None,
}
DP_DOWN = {
    "id": "0000000000000a02", "dpid": 0xA02, "connected": False, "of_version": None, "ports": [],
    "flows": {"desired": 0, "installed": 0, "in_sync": True}, "last_reconciled_at": None,
}
HEALTH = {"status": "ok", "datapaths_connected": 1, "uptime_s": 3725.0}
TOPOLOGY = {
    "switches": [{"id": "0000000000000a01", "dpid": 0xA01, "connected": True}],
    "links": [{"src": {"datapath": "0000000000000a01", "port_no": 2},
               "dst": {"datapath": "0000000000000a02", "port_no": 4}}],
    "hosts": [{"mac": "00:00:00:00:00:01", "ips": ["10.0.0.1", "fd00::1"],
               "datapath": "0000000000000a01", "port_no": 1, "last_seen": 1700000000.0}],
}


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


@pytest.fixture
def http(store: Store) -> TestClient:
    return TestClient(create_app(ApiContext(store, FakeHub([DP, DP_DOWN], TOPOLOGY, HEALTH), CollectorRegistry(), "0.1.0")))


def run(capsys: pytest.CaptureFixture[str], http: httpx.Client | None, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv), client=http)
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, out, err = run(capsys, http, "status")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["hub:", "ok", "datapaths", "connected:", "1", "uptime:", "1h02m"]
    assert lines[2].split() == ["DATAPATH", "CONNECTED", "OPENFLOW", "PORTS", "UP", "FLOWS", "IN", "SYNC"]
    assert lines[3].split() == ["0000000000000a01", "yes", "1.4", "2/3", "9/10", "no"]
    assert lines[4].split() == ["0000000000000a02", "no", "-", "0/0", "0/0", "yes"]
    # columns are aligned
    assert lines[2].index("CONNECTED") == lines[3].index("yes") == lines[4].index("no")


@pytest.mark.parametrize("fmt, load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_status_machine_formats(capsys: pytest.CaptureFixture[str], http: TestClient,
                                fmt: str, load: Any) -> None:
    code, out, _ = run(capsys, http, "-o", fmt, "status")
    assert code == 0
    assert load(out) == {"health": HEALTH, "datapaths": [DP, DP_DOWN]}


def test_output_option_after_command(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, out, _ = run(capsys, http, "topology", "--output", "json")
    assert code == 0 and json.loads(out) == TOPOLOGY


def test_topology_table(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, out, _ = run(capsys, http, "topology")
    assert code == 0
    sections = out.strip().split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["SWITCHES", "LINKS", "HOSTS"]
    assert sections[1].splitlines()[2].split() == ["0000000000000a01:2", "0000000000000a02:4"]
    host = sections[2].splitlines()[2].split()
    assert host[:4] == ["00:00:00:00:00:01", "10.0.0.1,fd00::1", "0000000000000a01", "1"]


def test_events(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store) -> None:
    store.append_event("datapath", "0000000000000a01", "connected")
    store.append_event("flow", "0000000000000a01", "12 flows installed")
    store.append_event("datapath", "0000000000000a02", "disconnected")

    code, out, _ = run(capsys, http, "events", "--kind", "datapath")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "KIND", "SUBJECT", "MESSAGE"]
    assert [ln.split()[0] for ln in lines[1:]] == ["1", "3"]
    assert lines[2].endswith("disconnected")

    code, out, _ = run(capsys, http, "-o", "json", "events", "--after", "1", "--limit", "1")
    assert code == 0
    page = json.loads(out)
    assert [e["message"] for e in page["items"]] == ["12 flows installed"] and page["next"] == 2

    code, out, _ = run(capsys, http, "events", "--after", "3")
    assert code == 0 and out.strip() == "(no events)"

    code, out, _ = run(capsys, http, "events", "--limit", "2")      # the latest two, in order
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["2", "3"]
    code, out, _ = run(capsys, http, "events", "--kind", "datapath", "--limit", "1")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["3"]


def test_events_follow(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    store.append_event("datapath", "a", "first")
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            store.append_event("datapath", "b", "second")
            store.append_event("datapath", "c", "third")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_hub.time, "sleep", fake_sleep)
    code, out, _ = run(capsys, http, "-o", "json", "events", "--follow")
    assert code == 0
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["first", "second", "third"]
    assert sleeps == [1.0, 1.0]


def test_problem_response(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, out, err = run(capsys, http, "events", "--limit", "5000")
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("hubctl: Unprocessable ") and first.endswith(" (HTTP 422)")
    assert "query.limit: Input should be less than or equal to 1000" in err


def test_not_found_problem(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, _, err = run(capsys, http, "--api", "http://127.0.0.1:8080/wrong/prefix", "status")
    assert code == 1
    assert "Not Found (HTTP 404)" in err and "no route for /wrong/prefix/v1/health" in err


def test_non_problem_error(capsys: pytest.CaptureFixture[str]) -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(502, text="upstream down"))
    code = cli.main(["status"], transport=transport)
    _, err = capsys.readouterr()
    assert code == 1
    assert "Bad Gateway (HTTP 502)" in err and "upstream down" in err


def test_api_from_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=TOPOLOGY)

    monkeypatch.setenv("HUBCTL_API", "http://hub.example:9000/")
    assert cli.main(["-o", "yaml", "topology"], transport=httpx.MockTransport(handler)) == 0
    assert seen == ["http://hub.example:9000/v1/topology"]
    assert yaml.safe_load(capsys.readouterr().out) == TOPOLOGY


def test_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code = cli.main(["--api", url, "status"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"hubctl: cannot reach the hub API at {url}: ")
    assert len(err.strip()) > len(f"hubctl: cannot reach the hub API at {url}:")


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["-o", "xml", "status"]) == 2
    assert cli.main(["--help"]) == 0
    assert "status" in capsys.readouterr().out


# -- command groups come from the registry --------------------------------------------

def _commands(parser: argparse.ArgumentParser) -> list[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def _register_demo(sub: Any, common: Common) -> None:
    verbs = common.group(sub, "demo", "a feature's group")
    common.command(verbs, "ping", lambda args, api, out: out.emit(api.get("/v1/demo"), str) or 0, "ping it")


def test_feature_groups_are_registered_from_the_registry(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert _commands(cli.build_parser()) == ["status", "topology", "events", "subnet", "personality",
                                             "interface", "operation", "persona", "alerts",
                                             "shard-pool", "shard", "appliance", "shadow",
                                             "remediation", "category", "address-set", "learn",
                                             "policy", "profile", "review", "override", "audit"]
    demo = Plugin(name="demo", cli=f"{__name__}:_register_demo")
    monkeypatch.setattr(cli, "FEATURES", (*FEATURES, demo, Plugin(name="no-cli")))
    assert _commands(cli.build_parser())[-1] == "demo"
    transport = httpx.MockTransport(lambda req: httpx.Response(200, json={"path": req.url.path}))
    assert cli.main(["demo", "ping", "-o", "json"], transport=transport) == 0
    assert json.loads(capsys.readouterr().out) == {"path": "/v1/demo"}


def test_the_cli_package_imports_no_feature() -> None:
    """Features import the shared parts of hubctl, never the other way round (no cycle)."""
    package = Path(cli.__file__).parent
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not {m for m in imported if m.startswith("controller.features")}, path.name
