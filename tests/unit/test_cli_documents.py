"""hubctl subnet / personality against the real API app (TestClient, in-memory store)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from controller.cli import main as cli
from controller.cli.documents import content_type_for
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub
from controller.store import Store, open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


run = run_cli


@pytest.fixture
def seg1(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, _, err = run(capsys, http, "subnet", "create", "-f", str(EXAMPLES / "subnet-seg1.yaml"))
    assert code == 0, err


def test_subnet_commands(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                         hub: FakeHub) -> None:
    code, out, err = run(capsys, http, "subnet", "create", "-f", str(EXAMPLES / "subnet-seg1.yaml"))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CIDR", "GATEWAY", "REVISION", "DESCRIPTION"]
    assert lines[1].split()[:4] == ["seg1", "10.0.1.0/24", "10.0.1.254", "1"]
    assert store.get("subnet", "seg1").body["gateway"] == "10.0.1.254" and hub.reloads == 1

    code, out, _ = run(capsys, http, "subnet", "list")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["seg1", "10.0.1.0/24", "10.0.1.254", "1"]

    code, out, _ = run(capsys, http, "-o", "json", "subnet", "get", "seg1")
    assert code == 0
    doc = json.loads(out)
    assert doc["id"] == "seg1" and doc["cidr"] == "10.0.1.0/24" and "body" not in doc

    code, out, _ = run(capsys, http, "subnet", "delete", "seg1")
    assert code == 0 and out.strip() == "deleted subnet seg1 (revision 1)"
    assert store.list("subnet") == []

    code, out, _ = run(capsys, http, "subnet", "list")
    assert code == 0 and out.strip() == "(no subnets)"


def test_personality_commands(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                              seg1: None) -> None:
    code, out, err = run(capsys, http, "personality", "create", "-f",
                         str(EXAMPLES / "personality-lockdown.yaml"))
    assert code == 0, err
    assert "lockdown" in out and "FIREWALL RULES" in out
    rule = next(line for line in out.splitlines() if line.startswith("0 "))
    assert rule.split() == ["0", "ingress", "tcp", "0.0.0.0/0", "0.0.0.0/0", "443", "allow"]
    assert store.get("personality", "lockdown").body["default_action"] == "deny"

    # Creating it again is a conflict on the id taken from the name.
    code, out, err = run(capsys, http, "personality", "create", "-f",
                         str(EXAMPLES / "personality-lockdown.yaml"))
    assert code == 1 and out == "" and "Conflict (HTTP 409)" in err


def test_personality_list_get_delete(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                     seg1: None) -> None:
    for name in ("personality-lockdown.yaml", "personality-open.yaml"):
        code, _, err = run(capsys, http, "personality", "create", "-f", str(EXAMPLES / name))
        assert code == 0, err

    code, out, _ = run(capsys, http, "personality", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SUBNET", "ADDRESSES", "RULES", "DEFAULT", "REVISION"]
    assert lines[1].split() == ["lockdown", "lockdown", "seg1", "10.0.1.1", "1", "deny", "1"]
    assert lines[2].split() == ["open", "open", "seg1", "10.0.1.1", "0", "allow", "1"]

    code, out, _ = run(capsys, http, "personality", "get", "open", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert code == 0 and doc["default_action"] == "allow" and doc["revision"] == 1

    code, out, _ = run(capsys, http, "personality", "get", "open")
    assert code == 0
    assert any(line.split() == ["firewall", "0", "rules,", "default", "allow"] for line in out.splitlines())

    code, out, _ = run(capsys, http, "personality", "delete", "open")
    assert code == 0 and out.strip() == "deleted personality open (revision 1)"
    assert [d.id for d in store.list("personality")] == ["lockdown"]

    code, _, err = run(capsys, http, "personality", "get", "open")
    assert code == 1 and "Not Found (HTTP 404)" in err


def test_create_from_stdin_json(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                seg1: None, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"id": "web", "name": "web", "subnet_id": "seg1", "ip_addresses": ["10.0.1.7"]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(doc)))
    code, out, err = run(capsys, http, "-o", "json", "personality", "create", "-f", "-")
    assert code == 0, err
    assert json.loads(out)["id"] == "web"
    assert store.get("personality", "web").body["ip_addresses"] == ["10.0.1.7"]


def test_create_from_stdin_yaml(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("cidr: 10.0.5.0/24\ngateway: 10.0.5.1\n"))
    code, out, err = run(capsys, http, "subnet", "create", "-f", "-")
    assert code == 0, err
    assert store.get("subnet", "10-0-5-0-24").body == {"cidr": "10.0.5.0/24", "gateway": "10.0.5.1"}


def test_invalid_document_reports_fields(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                         seg1: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "subnet_id": "seg1",
                               "firewall_rules": [{"protocol": "tcp", "port": 70000, "action": "allow"}],
                               "routing_table": [{"destination": "0.0.0.0/0", "next_hop": "10.9.9.9"}]}))
    code, out, err = run(capsys, http, "personality", "create", "-f", str(bad))
    assert code == 1 and out == ""
    assert "Unprocessable Entity (HTTP 422)" in err
    assert "body.firewall_rules[0].port: port 70000 is out of range" in err
    assert store.list("personality") == []


def test_unreadable_file(capsys: pytest.CaptureFixture[str], http: TestClient, tmp_path: Path) -> None:
    code, out, err = run(capsys, http, "personality", "create", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and out == ""
    assert "cannot read" in err and "missing.yaml" in err


def test_usage(capsys: pytest.CaptureFixture[str], http: TestClient) -> None:
    code, _, err = run(capsys, http, "personality", "create")
    assert code == 2 and "-f" in err
    code, _, _ = run(capsys, http, "subnet")
    assert code == 2
    code, out, _ = run(capsys, http, "personality", "--help")
    assert code == 0 and "create" in out and "delete" in out


def test_content_type_for() -> None:
    assert content_type_for("a.json", b"name: x") == "application/json"
    assert content_type_for("a.YML", b"{}") == "application/yaml"
    assert content_type_for("a.yaml", b"{}") == "application/yaml"
    assert content_type_for("-", b'{"name": "x"}') == "application/json"
    assert content_type_for("-", b"name: x") == "application/yaml"
    assert content_type_for("doc.txt", b"[1, 2]") == "application/yaml"


STORED = {"id": "lockdown", "revision": 2, "created_at": 1.7e9, "updated_at": 1.7e9 + 60}
LOCKDOWN = {"name": "lockdown", "subnet_id": "seg1", "ip_addresses": ["10.0.1.1"], "default_action": "deny",
            "firewall_rules": [{"direction": "ingress", "protocol": "tcp", "port": 443, "action": "allow"}],
            "routing_table": [{"destination": "10.9.0.0/16", "next_hop": "10.0.1.254"}]}
SEG1 = {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254", "description": "lab"}


def _tables(capsys: pytest.CaptureFixture[str], nested: bool) -> list[str]:
    """The tables of subnet/personality get and list, the hub answering flat or (older) nested documents."""
    def stored(id: str, fields: dict[str, object]) -> dict[str, object]:
        return {**STORED, "id": id, **({"body": fields} if nested else fields)}

    answers = {"/v1/subnets/seg1": stored("seg1", SEG1), "/v1/subnets": [stored("seg1", SEG1)],
               "/v1/personalities/lockdown": stored("lockdown", LOCKDOWN),
               "/v1/personalities": [stored("lockdown", LOCKDOWN)]}
    transport = httpx.MockTransport(lambda req: httpx.Response(200, json=answers[req.url.path]))
    outs = []
    for argv in (["subnet", "get", "seg1"], ["subnet", "list"], ["personality", "get", "lockdown"],
                 ["personality", "list"]):
        assert cli.main(argv, transport=transport) == 0
        outs.append(capsys.readouterr().out)
    return outs


def test_flat_and_nested_documents_read_alike(capsys: pytest.CaptureFixture[str]) -> None:
    flat = _tables(capsys, nested=False)
    assert flat == _tables(capsys, nested=True)
    subnet, subnets, personality, personalities = (out.splitlines() for out in flat)
    assert subnet[1].split() == ["seg1", "10.0.1.0/24", "10.0.1.254", "2", "lab"] and subnets[1] == subnet[1]
    fields = {line.split()[0]: line.split()[1:] for line in personality[1:13]}
    assert fields["subnet"] == ["seg1"] and fields["firewall"] == ["1", "rule,", "default", "deny"]
    assert "ROUTES" in personality and personality[-1].split() == ["10.9.0.0/16", "10.0.1.254"]
    assert personalities[1].split() == ["lockdown", "lockdown", "seg1", "10.0.1.1", "1", "deny", "2"]
