"""hubctl persona / alerts against the real API app (TestClient, in-memory store, fake hub)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.features.persona import cli as cli_personas
from controller.core import interfaces
from controller.cli.output import format_time
from controller.features.persona.document import parse_expiration
from controller.store import Store, open_store
from controller.core.topology import Host
from tests.unit.conftest import run_cli
from tests.unit.fakes import FakeHub

IF1 = "0000000000000a01:2"
EXPIRATION = "2099-12-31T23:59:59Z"
DEADLINE = parse_expiration(EXPIRATION)
SEED_YAML = f"""\
name: TempDevNetwork
ip_range: 10.100.0.0/24
protocols: [tcp, udp]
qos: {{bandwidth: 100Mbps, latency: 50ms}}
security_policies:
  - {{protocol: tcp, port: 80, action: allow}}
  - {{protocol: tcp, port: 22, action: deny}}
expiration: {EXPIRATION}
"""

run = run_cli


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    interfaces.record_host(s, Host("02:00:00:00:00:01", ("10.0.1.1",), 0xA01, 2))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """"expires in" is computed against this time: 2h05m before the deadline."""
    monkeypatch.setattr(cli_personas, "_now", lambda: DEADLINE - 7500)


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(SEED_YAML)
    return path


@pytest.fixture
def seeded(capsys: pytest.CaptureFixture[str], http: TestClient, seed_file: Path) -> None:
    code, _, err = run(capsys, http, "persona", "create", "-f", str(seed_file))
    assert code == 0, err


def test_create_list_get(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                         hub: FakeHub, seed_file: Path) -> None:
    code, out, err = run(capsys, http, "persona", "create", "-f", str(seed_file))
    assert code == 0 and err == ""
    table = dict(line.split(None, 1) for line in out.splitlines()[1:] if line and line[0] != " "
                 and len(line.split(None, 1)) == 2)
    assert table["id"] == "tempdevnetwork" and table["gateway"] == "10.100.0.1"
    assert table["state"] == "active" and table["nat"] == "-" and table["bandwidth"] == "100Mbps"
    assert "(in 2h05m)" in table["expires"]
    assert "SECURITY POLICIES" in out and hub.persona_notices == 1
    assert store.get("persona", "tempdevnetwork").body["index"] == 1

    code, out, _ = run(capsys, http, "persona", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "NAME", "RANGE", "GATEWAY", "NAT", "STATE", "EXPIRES",
                                              "IN", "ATTACHED"]
    assert lines[1].split() == ["tempdevnetwork", "TempDevNetwork", "10.100.0.0/24", "10.100.0.1", "-",
                                "active", "2h05m", "0"]

    code, out, _ = run(capsys, http, "-o", "json", "persona", "get", "tempdevnetwork")
    assert code == 0 and json.loads(out)["document"]["expiration"] == EXPIRATION


def test_overlapping_create_reports_the_nat_mapping(capsys: pytest.CaptureFixture[str], http: TestClient,
                                                   seeded: None, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(SEED_YAML.replace("TempDevNetwork", "Other"))
    code, out, _ = run(capsys, http, "persona", "create", "-f", str(other))
    assert code == 0
    assert "NAT: persona tempdevnetwork is now reached at 100.64.0.0/24" in out
    assert any(line.split() == ["nat", "100.64.1.0/24"] for line in out.splitlines())
    code, out, _ = run(capsys, http, "persona", "list", "--state", "active")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[4]) for r in rows] == [("other", "100.64.1.0/24"), ("tempdevnetwork", "100.64.0.0/24")]


def test_dry_run(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store, hub: FakeHub,
                 seed_file: Path) -> None:
    code, out, _ = run(capsys, http, "persona", "create", "-f", str(seed_file), "--dry-run")
    assert code == 0
    assert out.startswith("dry run: persona tempdevnetwork would get index 1, gateway 10.100.0.1, NAT none")
    assert "0000000000000001: 1 flow" in out and "nw_dst=10.100.0.0/24" in out
    assert store.list("persona") == [] and hub.persona_notices == 0


# What the hub answers to a dry run of the seed persona on a two-switch lab (the
# persona compiler's flows, rendered one per item, in its order): 19 on the
# gateway, 1 on an edge switch.
def _firewall(t: int) -> list[str]:
    head = f"table={t},priority="
    return [f"{head}65000,cookie=0xb5032054b3f50000,eth_type=0x0800,ct_state=+inv+trk,reg6=1,actions=drop",
            *(f"{head}64000,cookie=0xb5032054b3f50000,eth_type=0x0800,ct_state=+{s}+trk,reg6=1,"
              f"actions=goto_table:{t + 2}" for s in ("est", "rel")),
            f"{head}1,cookie=0xb503a89db1a20001,eth_type=0x0800,ct_state=+new+trk,reg6=1,actions=drop",
            f"{head}50000,cookie=0xb5030a0de0d80001,eth_type=0x0800,ip_proto=6,ct_state=+new+trk,reg6=1,"
            f"tcp_dst=80,actions=ct(commit,zone=32769),goto_table:{t + 2}",
            f"{head}49998,cookie=0xb503a89db1a20001,eth_type=0x0800,ip_proto=6,ct_state=+new+trk,reg6=1,"
            "tcp_dst=22,actions=drop"]


GATEWAY_FLOWS = [
    "table=40,priority=174,cookie=0xb5032054b3f50000,eth_type=0x0800,eth_dst=02:00:00:00:00:fe,"
    "ip_dst=10.100.0.0/255.255.255.0,actions=set_field:02:00:00:00:0b:01->eth_dst,goto_table:50",
    *_firewall(71), *_firewall(72),
    *(f"table=71,priority={prio},cookie=0xb5030a0de0d80001,eth_type=0x0800,ip_proto={p},ct_state=+new+trk,"
      + ("ip_dst=10.100.0.0/255.255.255.0," if prio == 61000 else "")
      + "reg6=1,actions=ct(commit,zone=32769),goto_table:73" for p in (6, 17) for prio in (61000, 100)),
    "table=71,priority=60000,cookie=0xb503a89db1a20001,eth_type=0x0800,ct_state=+new+trk,"
    "ip_dst=10.100.0.0/255.255.255.0,actions=drop",
    "table=72,priority=60000,cookie=0xb503a89db1a20001,eth_type=0x0800,ct_state=+new+trk,"
    "ip_src=10.100.0.0/255.255.255.0,actions=drop",
]
METERS = [{"meter_id": 65538, "rate_kbps": 100000, "burst_kbits": 20000},
          {"meter_id": 65539, "rate_kbps": 100000, "burst_kbits": 20000}]


class PreviewHub(FakeHub):
    """A fake hub whose persona preview answers ``flows`` (and METERS)."""

    def __init__(self, flows: dict[str, Any]) -> None:
        super().__init__()
        self.flows = flows

    def query(self, feature: str, name: str, **args: Any) -> Any:
        answer = super().query(feature, name, **args)
        return {"flows": self.flows, "meters": METERS} if (feature, name) == ("persona", "preview") else answer


@pytest.mark.parametrize("hub", [PreviewHub({"0000000000000b01": GATEWAY_FLOWS,
                                             "0000000000000a01": GATEWAY_FLOWS[:1]})])
def test_dry_run_prints_every_flow_once_per_line(capsys: pytest.CaptureFixture[str], http: TestClient,
                                                 store: Store, hub: PreviewHub, seed_file: Path) -> None:
    code, out, err = run(capsys, http, "persona", "create", "-f", str(seed_file), "--dry-run")
    assert code == 0 and err == ""
    assert [b["document"]["name"] for b in hub.persona_previews] == ["TempDevNetwork"]
    sections = out.rstrip("\n").split("\n\n")
    assert sections[0] == ("dry run: persona tempdevnetwork would get index 1, gateway 10.100.0.1, NAT none "
                           "(nothing was stored)")
    assert sections[1].splitlines() == ["0000000000000a01: 1 flow", f"  {GATEWAY_FLOWS[0]}"]
    assert sections[2].splitlines() == ["0000000000000b01: 19 flows", *(f"  {f}" for f in GATEWAY_FLOWS)]
    assert sections[3].splitlines()[0] == "meters: 2" and len(sections) == 4
    assert store.list("persona") == []


@pytest.mark.parametrize("hub", [PreviewHub({"0000000000000b01": "".join(f + "\n" for f in GATEWAY_FLOWS)})])
def test_dry_run_refuses_flows_not_given_as_lists(capsys: pytest.CaptureFixture[str], http: TestClient,
                                                  hub: PreviewHub, seed_file: Path) -> None:
    """The shape of the old bug: one rendered string per datapath is not read as flows."""
    code, out, err = run(capsys, http, "persona", "create", "-f", str(seed_file), "--dry-run")
    assert code == 1 and out == ""
    assert err.splitlines() == ["hubctl: Invalid response (HTTP 200)",
                                "  the dry run's flows are not a list of flows per datapath"]


def test_refused_documents_name_the_field(capsys: pytest.CaptureFixture[str], http: TestClient,
                                         store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED_YAML.replace("100Mbps", "fast").replace("2099", "2024"))
    code, out, err = run(capsys, http, "persona", "create", "-f", str(bad))
    assert code == 1 and out == ""
    assert "HTTP 422" in err and "body.qos.bandwidth: 'fast' is not a rate" in err
    assert "body.expiration: 2024-12-31T23:59:59Z is in the past" in err
    assert store.list("persona") == []
    code, _, err = run(capsys, http, "persona", "create", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err


def test_extend(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store, seeded: None) -> None:
    code, out, _ = run(capsys, http, "persona", "extend", "tempdevnetwork", "--by", "1h")
    assert code == 0
    assert out.strip() == "persona tempdevnetwork now expires at 2100-01-01T00:59:59Z (in 3h05m)"
    assert store.get("persona", "tempdevnetwork").body["expires_at"] == DEADLINE + 3600
    code, out, _ = run(capsys, http, "persona", "extend", "tempdevnetwork", "--to", "2099-12-31T23:59:59+00:00")
    assert code == 0 and store.get("persona", "tempdevnetwork").body["expires_at"] == DEADLINE
    code, _, err = run(capsys, http, "persona", "extend", "tempdevnetwork", "--to", "2020-01-01T00:00:00Z")
    assert code == 1 and "body.expiration" in err
    code, _, err = run(capsys, http, "persona", "extend", "tempdevnetwork", "--by", "soon")
    assert code == 2 and "is not a duration" in err
    code, _, err = run(capsys, http, "persona", "extend", "tempdevnetwork")
    assert code == 2 and "one of the arguments --to --by is required" in err


def test_attach_usage_detach_delete(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store,
                                    hub: FakeHub, seeded: None) -> None:
    code, out, _ = run(capsys, http, "persona", "attach", "tempdevnetwork", IF1, "--ip", "10.100.0.20")
    assert code == 0
    assert out.strip() == f"attached {IF1} to persona tempdevnetwork as 10.100.0.20/24 (gateway 10.100.0.1)"
    code, out, _ = run(capsys, http, "persona", "get", "tempdevnetwork")
    assert f"{IF1}  10.100.0.20  02:00:00:00:00:01" in out

    hub.usage["tempdevnetwork"] = {"bytes": {"in": 1_500_000, "out": 250}, "packets": {"in": 1000, "out": 5},
                                   "connections": 7, "denied": 3, "rate_bps": {"in": 8_000_000, "out": 640},
                                   "updated_at": None, "latency_ms": 0.42}
    code, out, _ = run(capsys, http, "persona", "usage", "tempdevnetwork")
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1].split("  ") for line in out.splitlines()[3:6]}
    assert code == 0 and out.startswith("persona tempdevnetwork (active)")
    assert [c.strip() for c in rows["bytes"] if c.strip()] == ["1.5 MB", "250 B"]
    assert [c.strip() for c in rows["rate"] if c.strip()] == ["8.0 Mbit/s", "640 bit/s"]
    assert "connections: 7" in out and "denied attempts: 3" in out and "updated: never" in out
    assert "latency: 0.42 ms" in out

    code, out, _ = run(capsys, http, "persona", "detach", "tempdevnetwork", IF1)
    assert code == 0 and out.strip() == f"detached {IF1} from persona tempdevnetwork (was 10.100.0.20)"
    code, _, err = run(capsys, http, "persona", "detach", "tempdevnetwork", IF1)
    assert code == 1 and "HTTP 404" in err

    code, out, _ = run(capsys, http, "persona", "delete", "tempdevnetwork")
    assert code == 0 and out.strip() == "deleted persona tempdevnetwork (revision 3)"
    assert store.list("persona") == []
    code, out, _ = run(capsys, http, "persona", "list")
    assert out.strip() == "(no personas)"


def test_alerts(capsys: pytest.CaptureFixture[str], http: TestClient, store: Store) -> None:
    code, out, _ = run(capsys, http, "alerts")
    assert code == 0 and out.strip() == "(no alerts)"
    for id, at, persona in (("al-1", 100.0, "a"), ("al-2", "1970-01-01T00:03:20Z", "b")):
        store.create("alert", id, {"kind": "bandwidth", "severity": "warning", "subject": f"persona/{persona}",
                                   "persona_id": persona, "message": f"rate over limit on {persona}",
                                   "value": 120, "threshold": 100, "at": at})
    code, out, _ = run(capsys, http, "alerts")
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "SEVERITY", "KIND", "SUBJECT", "VALUE", "THRESHOLD", "MESSAGE"]
    assert [line.split()[4] for line in lines[1:]] == ["b", "a"]  # newest first
    assert lines[1].split()[:2] == format_time(200.0).split()  # RFC 3339 shown as local time
    code, out, _ = run(capsys, http, "alerts", "--persona", "a")
    assert len(out.splitlines()) == 2 and out.splitlines()[1].endswith("rate over limit on a")
    code, out, _ = run(capsys, http, "-o", "json", "alerts", "--kind", "latency")
    assert json.loads(out) == []


def test_human_units() -> None:
    assert [cli_personas.human_bytes(n) for n in (0, 999, 1000, 1_234_567, 5e12)] == [
        "0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 TB"]
    assert [cli_personas.human_rate(n) for n in (12, 1500, 100e6, 2.5e9)] == [
        "12 bit/s", "1.5 kbit/s", "100.0 Mbit/s", "2.5 Gbit/s"]
    assert cli_personas.expires_in({"state": "active", "expires_at": 100.0}, 160.0) == "due"
    assert cli_personas.expires_in({"state": "expired", "expires_at": 100.0}, 0.0) == "expired"
