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


def reaches(lab, src: str, dst: str, port: int) -> bool:
    target = lab.host(dst).IP()
    return f":{port} hello" in lab.host(src).cmd(f"{NETCHECK} connect {target} {port} -t 2")


def test_a_new_member_before_any_policy_fails_closed(lab):
    """h2_2 becomes new-web, mirrored from db, which has no policy yet: default deny and the
    infrastructure only, never open access; without the profile it is open again."""
    h2_2 = interface_of(lab, "h2_2")
    api(lab, "PATCH", f"/v1/interfaces/{h2_2}", {"categories": ["new-web"]}, expect=200)
    assert reaches(lab, "h2_2", "ext", 80)
    profile = api(lab, "POST", "/v1/mirroring-profiles",
                  {"source_category": "db", "target_category": "new-web", "strength": 100},
                  expect=201)
    lab.controller.wait_in_sync(lab.dpids)
    assert not reaches(lab, "h2_2", "ext", 80) and not reaches(lab, "h2_2", "h2_1", 5432)
    gateway = lab.host("h2_2").IP().rsplit(".", 1)[0] + ".254"
    assert " 0% packet loss" in lab.host("h2_2").cmd(f"ping -c 2 -W 1 {gateway}"), \
        "the gateway is infrastructure"
    api(lab, "DELETE", f"/v1/mirroring-profiles/{profile['id']}", expect=200)
    lab.controller.wait_in_sync(lab.dpids)
    assert reaches(lab, "h2_2", "ext", 80)


def test_full_strength_mirrors_every_rule_with_default_deny(lab):
    lab.bg(lab.host("ext"), f"{NETCHECK} serve 22 --name ext22")
    wait_for("ext:22", lambda: ":22 " in lab.host("ext").cmd("ss -ltn"), 10)
    assert reaches(lab, "h2_2", "ext", 22), "open before the profile"
    profile = api(lab, "POST", "/v1/mirroring-profiles",
                  {"source_category": "web", "target_category": "new-web", "strength": 100},
                  expect=201)
    lab.controller.wait_in_sync(lab.dpids)
    assert reaches(lab, "h2_2", "ext", 80) and reaches(lab, "h2_2", "h2_1", 5432)
    assert reaches(lab, "h2_2", "ext", 8080)
    assert not reaches(lab, "h2_2", "ext", 22), "default deny"
    h2_2 = interface_of(lab, "h2_2")
    wait_for("the interface names its profile and version", lambda: (api(
        lab, "GET", f"/v1/interfaces/{h2_2}").get("policy") or {}).get("profile_id")
        == profile["id"], 10)


def test_half_strength_keeps_the_two_most_supported_rules(lab):
    (profile,) = api(lab, "GET", "/v1/mirroring-profiles", expect=200)
    api(lab, "PATCH", f"/v1/mirroring-profiles/{profile['id']}", {"strength": 50}, expect=200)
    rows = api(lab, "GET", f"/v1/mirroring-profiles/{profile['id']}/preview", expect=200)
    shown = {r["port"]: r["included"] for r in rows["rows"]}
    assert shown == {80: True, 5432: True, 8080: False}, rows
    lab.controller.wait_in_sync(lab.dpids)
    assert reaches(lab, "h2_2", "ext", 80) and reaches(lab, "h2_2", "h2_1", 5432)
    assert not reaches(lab, "h2_2", "ext", 8080)


def test_an_unseen_connection_waits_for_review_and_an_approval_opens_it(lab):
    for _ in range(10):
        assert not reaches(lab, "h2_2", "ext", 22)
    review = wait_for("one pending review", lambda: [
        r for r in api(lab, "GET", "/v1/policy-reviews", expect=200)
        if r["port"] == 22 and r["state"] == "pending"], 10)
    assert len(review) == 1, review
    api(lab, "POST", f"/v1/policy-reviews/{review[0]['id']}/approve", {}, expect=200)
    wait_for("ext:22 open for new-web", lambda: reaches(lab, "h2_2", "ext", 22), 4)
