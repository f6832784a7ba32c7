"""Policy learning on a real hub: what the members of a category do becomes its rules.

h1_1 and h1_2 are "web", h2_1 is "db".  During a learning session both web hosts
open tcp/80 to ext and tcp/5432 to h2_1, and only h1_1 opens tcp/8080 to ext.
Stopping the session gives exactly three rules, with supports 2/2, 2/2 and 1/2,
no ephemeral port anywhere, and no packet reached the controller meanwhile.
Names start with ``lq`` (scripts/test cleans that prefix).
"""
from __future__ import annotations

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, wait_for

pytestmark = pytest.mark.lab
LAB_PREFIX = "lq"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=2, spares=0)
    try:
        lab.net.pingAll(timeout=2)
        lab.bg(lab.host("ext"), f"{NETCHECK} serve 80 8080 --name ext")
        lab.bg(lab.host("h2_1"), f"{NETCHECK} serve 5432 --name db")
        wait_for("the servers", lambda: ":8080" in lab.host("ext").cmd("ss -ltn")
                 and ":5432" in lab.host("h2_1").cmd("ss -ltn"), 10)
        yield lab
    finally:
        stop_lab(lab)


def interface_of(lab, host: str) -> str:
    ip = lab.host(host).IP()
    return next(i["id"] for i in api(lab, "GET", "/v1/interfaces", expect=200) if ip in i["ips"])


def connect(lab, src: str, dst: str, port: int, times: int = 3) -> None:
    target = lab.host(dst).IP()
    for _ in range(times):
        out = lab.host(src).cmd(f"{NETCHECK} connect {target} {port} -t 2")
        assert f":{port} hello" in out, (src, dst, port, out)


def test_a_session_learns_three_rules_with_their_support(lab):
    for host, category in (("h1_1", "web"), ("h1_2", "web"), ("h2_1", "db")):
        api(lab, "PATCH", f"/v1/interfaces/{interface_of(lab, host)}",
            {"categories": [category]}, expect=200)
    session = api(lab, "POST", "/v1/learning-sessions", {"category": "web"}, expect=201)
    assert session["state"] == "learning"
    lab.controller.wait_in_sync(lab.dpids)
    before = lab.controller.packet_ins()
    for web in ("h1_1", "h1_2"):
        connect(lab, web, "ext", 80)
        connect(lab, web, "h2_1", 5432)
    connect(lab, "h1_1", "ext", 8080)
    wait_for("the connections counted", lambda: api(
        lab, "GET", f"/v1/learning-sessions/{session['id']}")["progress"]["connections"] >= 15, 15)
    assert lab.controller.packet_ins() == before, "no packet-in while observing"
    api(lab, "POST", f"/v1/learning-sessions/{session['id']}/stop", expect=200)
    policy = wait_for("the policy", lambda: (
        answer := lab.controller.request("GET", "/v1/policies/web"))[0] == 200 and answer[1], 15)
    rules = {(r["direction"], r["protocol"], r["port"], r["peer"]): r for r in policy["rules"]}
    assert set(rules) == {("egress", "tcp", 80, "subnet:ext"),
                          ("egress", "tcp", 5432, "category:db"),
                          ("egress", "tcp", 8080, "subnet:ext")}, rules
    assert [rules[k]["support"] for k in sorted(rules)] == ["2/2", "2/2", "1/2"]
    assert all(r["port"] in (80, 5432, 8080) for r in policy["rules"]), "no ephemeral port"
