"""Leak-free churn: personas come and go, and the gateway ends exactly as it began.

Fifty personas with a bandwidth (two meters each) are created; two of them get
a member with real traffic (conntrack entries in their zones).  Half are
deleted, half expire.  Afterwards the gateway bridge holds exactly the flows
and meters it held before the first one, and no persona zone keeps a
connection.  (Tunnel ports after personality changes: tests/lab/test_vpn.py.)
"""
from __future__ import annotations

import re
import time

import pytest

from controller.features.persona.net import ZONES
from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, sh, wait_for
from tests.lab.test_personas import connects, join, leave, seed

pytestmark = pytest.mark.lab
LAB_PREFIX = "lc"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
EXT = "198.51.100.1"
PERSONAS = 50
SHORT = 8.0          # seconds the expiring half lives


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=2, spares=0)
    try:
        lab.net.pingAll(timeout=2)
        lab.bg(lab.host("ext"), f"{NETCHECK} serve 80 --name ext")
        wait_for("ext serving", lambda: ":80" in lab.host("ext").cmd("ss -ltn"), 10)
        lab.homes = {}
        yield lab
    finally:
        stop_lab(lab)


def gateway_state(lab) -> tuple[list[str], list[str]]:
    """The gateway's flows (without counters) and meters, one normalized line each."""
    bridge = lab.switch("gw1").name
    flows = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", bridge, "--no-stats")
    meters = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-meters", bridge)
    return (sorted(" ".join(l.split()) for l in flows.splitlines() if "cookie=" in l),
            sorted(" ".join(l.split()) for l in meters.splitlines() if "meter=" in l))


def zone_entries(zone: int) -> list[str]:
    out = sh("ovs-appctl", "dpctl/dump-conntrack", f"zone={zone}")
    return [line for line in out.splitlines() if re.search(rf"\bzone={zone}\b", line)]


def in_sync(lab) -> None:
    lab.controller.wait_in_sync(lab.dpids)


def test_fifty_personas_come_and_go_without_a_trace_on_the_gateway(lab):
    in_sync(lab)
    before = gateway_state(lab)
    created = []
    for i in range(PERSONAS):
        expires = SHORT if i % 2 else 3600.0
        body = seed(f"churn{i}", ip_range=f"10.{120 + i // 200}.{i % 200}.0/24",
                    expires_in=expires, qos={"bandwidth": "20Mbps"})
        created.append(api(lab, "POST", "/v1/personas", body, 201))
    wait_for("two meters a persona on the gateway", lambda: len(gateway_state(lab)[1])
             == len(before[1]) + 2 * PERSONAS, 20)
    members = {"h1_2": created[0], "h2_2": created[1]}         # one kept, one expiring
    zones = []
    for host, persona in members.items():
        join(lab, persona, host, persona["gateway"].rsplit(".", 1)[0] + ".10")
        wait_for(f"{host} through its persona", lambda h=host: connects(lab, h, EXT, 80), 10)
        zones.append(ZONES.first + persona["index"] - 1)
    assert all(zone_entries(z) for z in zones)                 # real connection state
    leave(lab, created[0], "h1_2")
    for persona in created[::2]:
        api(lab, "DELETE", f"/v1/personas/{persona['id']}", expect=200)
    deadline = time.time() + SHORT + 20
    for persona in created[1::2]:
        wait_for(f"{persona['id']} expired", lambda p=persona: api(
            lab, "GET", f"/v1/personas/{p['id']}")["state"] == "expired",
            max(1.0, deadline - time.time()))
    lab.homes.pop("h2_2", None)
    in_sync(lab)
    wait_for("the gateway as it was", lambda: gateway_state(lab) == before, 10)
    assert [z for z in zones if zone_entries(z)] == []
    torn = [e for e in lab.controller.events("persona") if "torn down" in e["message"]]
    assert len(torn) == PERSONAS
