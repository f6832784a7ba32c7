"""Policy mirroring on a real hub: audit mode, overrides, denials, approvals, restarts, bad input.

A short learning session gives "web" (h1_1, h1_2) its policy: tcp/80 to ext and
tcp/5432 to "db" (h2_1).  "new-web" has two members on two switches, h1_3 and
h2_2, and mirrors web at full strength; ext serves 22, 23, 80 and 8080, of
which only 80 is in the policy.  The tests run in order on one lab:

1. bad input is refused with a problem naming the field;
2. audit mode: a connection outside the policy passes, is counted and listed;
3. an override on h2_2 alone opens ext:8080 for h2_2 and nobody else (audit trail);
4. a denied review stays refused and leaves the pending queue (the policy's deny rule);
5. an approval reaches both members within 2 s (measured per member: a probe on each
   attempts ext:22 with a 0.3 s timeout, one process, each attempt logged);
6. kill -9 and a restart keep categories, policies, profiles, reviews, the audit
   trail and enforcement (checked before and after the switches resync).

Names start with ``lr`` (scripts/test cleans that prefix).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, wait_for
from tests.lab.test_policy_learning import connect, interface_of, reaches

pytestmark = pytest.mark.lab
LAB_PREFIX = "lr"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
TARGETS = ("h1_3", "h2_2")             # new-web, on switches a1 and a2
PROFILE = "web-to-new-web"
APPROVAL_DEADLINE = 2.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=3, spares=0)
    try:
        lab.net.pingAll(timeout=2)
        lab.bg(lab.host("ext"), f"{NETCHECK} serve 22 23 80 8080 --name ext")
        lab.bg(lab.host("h2_1"), f"{NETCHECK} serve 5432 --name db")
        wait_for("the servers", lambda: all(f":{p} " in lab.host("ext").cmd("ss -ltn")
                                            for p in (22, 23, 80, 8080))
                 and ":5432" in lab.host("h2_1").cmd("ss -ltn"), 10)
        lab.iface = {h: interface_of(lab, h) for h in ("h1_1", "h1_2", "h2_1") + TARGETS}
        learn_web(lab)
        for host in TARGETS:
            api(lab, "PATCH", f"/v1/interfaces/{lab.iface[host]}", {"categories": ["new-web"]},
                expect=200)
        yield lab
    finally:
        stop_lab(lab)


def learn_web(lab) -> None:
    """web's policy from a short session: tcp/80 to ext and tcp/5432 to db, both 2/2."""
    for host, category in (("h1_1", "web"), ("h1_2", "web"), ("h2_1", "db")):
        api(lab, "PATCH", f"/v1/interfaces/{lab.iface[host]}", {"categories": [category]},
            expect=200)
    session = api(lab, "POST", "/v1/learning-sessions", {"category": "web"}, expect=201)
    lab.controller.wait_in_sync(lab.dpids)
    for web in ("h1_1", "h1_2"):
        connect(lab, web, "ext", 80, times=1)
        connect(lab, web, "h2_1", 5432, times=1)
    wait_for("the connections counted", lambda: api(
        lab, "GET", f"/v1/learning-sessions/{session['id']}")["progress"]["connections"] >= 4, 15)
    api(lab, "POST", f"/v1/learning-sessions/{session['id']}/stop", expect=200)
    policy = wait_for("the policy", lambda: (
        answer := lab.controller.request("GET", "/v1/policies/web"))[0] == 200 and answer[1], 15)
    assert {(r["port"], r["peer"]) for r in policy["rules"]} == {
        (80, "subnet:ext"), (5432, "category:db")}, policy


def refused(lab, src: str, dst: str, port: int) -> bool:
    """No answer within a second (a TCP SYN retransmits only after one)."""
    target = lab.host(dst).IP()
    return "hello" not in lab.host(src).cmd(f"{NETCHECK} connect {target} {port} -t 1")


def in_sync(lab) -> None:
    lab.controller.wait_in_sync(lab.dpids)


def reviews(lab, **query) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return api(lab, "GET", "/v1/policy-reviews" + (f"?{q}" if q else ""), expect=200)


def review_of(lab, port: int) -> dict | None:
    return next((r for r in reviews(lab, category="new-web") if r["port"] == port), None)


def problem(lab, method: str, path: str, body: object) -> tuple[int, str, dict]:
    """(status, content type, body) of a refused request."""
    req = urllib.request.Request(lab.controller.api + path, data=json.dumps(body).encode(),
                                 method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("content-type", ""), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), json.loads(err.read())


# -- 1. bad input ------------------------------------------------------------------------------

def test_bad_input_is_refused_with_a_problem_naming_the_field(lab):
    profiles = api(lab, "GET", "/v1/mirroring-profiles", expect=200)
    trail = api(lab, "GET", "/v1/audit", expect=200)
    override_path = f"/v1/interfaces/{lab.iface['h2_2']}/policy-overrides"
    cases = [
        ("/v1/mirroring-profiles", {"source_category": "web", "target_category": "new-web",
                                    "strength": 101}, "body.strength"),
        ("/v1/mirroring-profiles", {"source_category": "no-such-category",
                                    "target_category": "new-web", "strength": 50},
         "body.source_category"),
        ("/v1/mirroring-profiles", {"source_category": "web", "target_category": "web",
                                    "strength": 50}, "body.target_category"),
        (override_path, {"action": "allow", "protocol": "tcp", "port": 70000,
                         "peer": "subnet:ext", "reason": "out of range"}, "body.port"),
    ]
    for path, body, field in cases:
        status, kind, doc = problem(lab, "POST", path, body)
        assert status == 422, (body, status, doc)
        assert kind.startswith("application/problem+json"), (body, kind)
        assert field in [e["field"] for e in doc["errors"]], (body, doc)
    assert api(lab, "GET", "/v1/mirroring-profiles", expect=200) == profiles
    assert api(lab, "GET", override_path, expect=200) == []
    assert api(lab, "GET", "/v1/audit", expect=200) == trail, "a refused write leaves no entry"


# -- 2. audit mode -----------------------------------------------------------------------------

def test_audit_mode_passes_would_deny_connections_and_counts_them(lab):
    api(lab, "POST", "/v1/mirroring-profiles",
        {"source_category": "web", "target_category": "new-web", "strength": 100,
         "mode": "audit"}, expect=201)
    in_sync(lab)
    wait_for("the members name the audit profile", lambda: all(
        (api(lab, "GET", f"/v1/interfaces/{lab.iface[h]}").get("policy") or {}).get("mode")
        == "audit" for h in TARGETS), 10)
    for attempts in (3, 6):
        for _ in range(3):
            assert reaches(lab, "h2_2", "ext", 22), "audit mode lets it pass"
        review = wait_for(f"{attempts} would-deny connections counted", lambda: (
            r := review_of(lab, 22)) and r["count"] >= attempts and r, 10)
        assert review["count"] == attempts, review
    assert review["state"] == "pending" and review["peer"] == "subnet:ext"
    assert review["members"] == [lab.iface["h2_2"]], review
    assert review["id"] in [r["id"] for r in reviews(lab, state="pending")]
    assert reaches(lab, "h1_3", "ext", 80) and reaches(lab, "h2_2", "h2_1", 5432)
    time.sleep(2.5)                                           # one more reading
    assert review_of(lab, 80) is None and review_of(lab, 5432) is None, "inside the policy"


# -- 3. override -------------------------------------------------------------------------------

def test_an_override_on_one_member_changes_that_member_only(lab):
    api(lab, "PATCH", f"/v1/mirroring-profiles/{PROFILE}", {"mode": "enforce"}, expect=200)
    in_sync(lab)
    assert all(refused(lab, h, "ext", 8080) for h in TARGETS), "enforced: default deny"
    assert all(reaches(lab, h, "ext", 80) for h in TARGETS)
    h2_2 = lab.iface["h2_2"]
    override = api(lab, "POST", f"/v1/interfaces/{h2_2}/policy-overrides",
                   {"action": "allow", "protocol": "tcp", "port": 8080, "peer": "subnet:ext",
                    "reason": "lab: h2_2 alone reaches ext:8080"}, expect=201)
    in_sync(lab)
    assert reaches(lab, "h2_2", "ext", 8080), "the override opens it for h2_2"
    assert refused(lab, "h1_3", "ext", 8080), "and for nobody else"
    assert refused(lab, "h2_2", "ext", 22) and reaches(lab, "h1_3", "ext", 80)
    assert [o["id"] for o in api(lab, "GET", f"/v1/interfaces/{h2_2}/policy-overrides")] \
        == [override["id"]]
    assert api(lab, "GET", f"/v1/interfaces/{lab.iface['h1_3']}/policy-overrides") == []
    (entry,) = [e for e in api(lab, "GET", "/v1/audit?what=policy-override", expect=200)
                if e["subject"] == override["id"]]
    assert entry["what"] == "policy-override.created" and entry["before"] is None
    assert entry["why"] == "lab: h2_2 alone reaches ext:8080"
    assert entry["after"]["interface_id"] == h2_2 and entry["after"]["port"] == 8080


# -- 4. deny -----------------------------------------------------------------------------------

def test_a_denied_review_stays_refused_and_leaves_the_queue(lab):
    for _ in range(3):
        assert refused(lab, "h1_3", "ext", 23)
    review = wait_for("a pending review of ext:23", lambda: (
        r := review_of(lab, 23)) and r["state"] == "pending" and r, 10)
    before = api(lab, "GET", "/v1/policies/web", expect=200)["version"]
    decided = api(lab, "POST", f"/v1/policy-reviews/{review['id']}/deny",
                  {"reason": "lab: no telnet"}, expect=200)
    assert decided["state"] == "denied"
    assert review["id"] not in [r["id"] for r in reviews(lab, state="pending")]
    policy = wait_for("the deny rule in web's next version", lambda: (
        p := api(lab, "GET", "/v1/policies/web")) and p["version"] > before and p, 10)
    (rule,) = [r for r in policy["rules"] if r["port"] == 23]
    assert rule["action"] == "deny" and rule["peer"] == "subnet:ext", rule
    in_sync(lab)
    assert all(refused(lab, h, "ext", 23) for h in TARGETS), "still refused, for every member"
    time.sleep(2.5)                                           # one more reading
    assert review["id"] not in [r["id"] for r in reviews(lab, state="pending")]
    assert api(lab, "GET", f"/v1/policy-reviews/{review['id']}")["state"] == "denied"


# -- 5. approval -------------------------------------------------------------------------------

PROBE = """
import socket, sys, time
host, port, timeout, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
with open(sys.argv[5], "w", buffering=1) as log:
    while time.time() < until:
        began = time.time()
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout)
                local = s.getsockname()[1]
                s.sendall(b"hello\\n")
                answered = b"hello" in s.recv(200)
        except OSError as exc:
            log.write(f"{began:.3f} {time.time():.3f} fail {exc}\\n")
            continue
        log.write(f"{began:.3f} {time.time():.3f} {'ok' if answered else 'bad'} {local}\\n")
        if answered:
            break
"""


def probe(lab, host: str, port: int, log, timeout: float = 0.3, seconds: float = 8.0) -> None:
    """In the background on `host`: attempt ext:`port` (each attempt waits `timeout` at most)
    until one is answered; `log` gets a line per attempt: "began ended ok|fail ..."."""
    script = lab.controller.workdir / "probe.py"
    script.write_text(PROBE)
    lab.bg(lab.host(host), f"python3 {script} {lab.host('ext').IP()} {port} {timeout} "
                           f"{time.time() + seconds} {log}")


def answered_at(lab, host: str, log) -> float | None:
    """When `host`'s probe got its first answer (Unix time), or None."""
    lines = lab.host(host).cmd(f"cat {log} 2>/dev/null").splitlines()
    return next((float(line.split()[1]) for line in lines if " ok " in line), None)


def test_an_approval_reaches_every_member_within_two_seconds(lab):
    for host in TARGETS:
        assert refused(lab, host, "ext", 22)
    review = wait_for("the pending review of ext:22 from both members", lambda: (
        r := review_of(lab, 22)) and r["state"] == "pending"
        and set(r["members"]) == {lab.iface[h] for h in TARGETS} and r, 10)
    logs = {h: lab.controller.workdir / f"approval-{h}.log" for h in TARGETS}
    for host, log in logs.items():
        probe(lab, host, 22, log)
    time.sleep(1.0)                                       # both probes are refused meanwhile
    assert all(answered_at(lab, h, log) is None and " fail " in lab.host(h).cmd(f"cat {log}")
               for h, log in logs.items()), "refused until the approval"
    posted = time.time()
    api(lab, "POST", f"/v1/policy-reviews/{review['id']}/approve",
        {"reason": "lab: ssh for new-web"}, expect=200)
    answers = wait_for("both members answered", lambda: (
        a := {h: answered_at(lab, h, log) for h, log in logs.items()})
        and all(a.values()) and a, 10)
    latency = {h: at - posted for h, at in answers.items()}
    for h, log in logs.items():
        print(f"{h} (approved at {posted:.3f}):", *lab.host(h).cmd(f"cat {log}").splitlines()[-3:],
              sep="\n  ")
    print("approval -> first connection: " +
          ", ".join(f"{h} {latency[h]:.3f}s" for h in TARGETS))
    assert all(0 < s < APPROVAL_DEADLINE for s in latency.values()), (
        latency, {h: lab.host(h).cmd(f"cat {log}") for h, log in logs.items()})
    policy = api(lab, "GET", "/v1/policies/web", expect=200)
    (rule,) = [r for r in policy["rules"] if r["port"] == 22]
    assert rule["action"] == "allow" and rule["origin"] == "approved", rule


# -- 6. restart --------------------------------------------------------------------------------

def state(lab) -> dict:
    """What a restart must keep, without counters that traffic may still move."""
    policy = api(lab, "GET", "/v1/policies/web", expect=200)
    return {
        "categories": api(lab, "GET", "/v1/categories", expect=200),
        "policy": (policy["version"], sorted((r["id"], r["action"]) for r in policy["rules"])),
        "versions": api(lab, "GET", "/v1/policies/web/versions", expect=200),
        "profiles": api(lab, "GET", "/v1/mirroring-profiles", expect=200),
        "reviews": sorted((r["id"], r["state"], r["decided_at"]) for r in reviews(lab)),
        "overrides": api(lab, "GET", f"/v1/interfaces/{lab.iface['h2_2']}/policy-overrides"),
        "audit": api(lab, "GET", "/v1/audit?limit=1000", expect=200),
        "running": {h: api(lab, "GET", f"/v1/interfaces/{lab.iface[h]}").get("policy")
                    for h in TARGETS},
    }


def enforcement_holds(lab) -> None:
    assert reaches(lab, "h1_3", "ext", 80) and reaches(lab, "h2_2", "h2_1", 5432), "learned"
    assert reaches(lab, "h1_3", "ext", 22) and reaches(lab, "h2_2", "ext", 22), "approved"
    assert reaches(lab, "h2_2", "ext", 8080), "h2_2's override"
    assert refused(lab, "h1_3", "ext", 8080), "default deny"
    assert refused(lab, "h2_2", "ext", 23), "denied"


def test_kill9_and_a_restart_keep_the_policy_and_its_enforcement(lab):
    before = state(lab)
    assert before["running"]["h2_2"]["version"] == before["policy"][0]
    assert {e["what"] for e in before["audit"]} >= {
        "learning-session.started", "learning-session.stopped", "mirroring-profile.created",
        "mirroring-profile.updated", "policy-override.created", "policy-review.denied",
        "policy-review.approved"}
    lab.controller.kill9()
    lab.controller.start()
    assert state(lab) == before
    enforcement_holds(lab)                     # right after the restart
    in_sync(lab)
    enforcement_holds(lab)                     # and once the switches are resynced
    assert state(lab) == before
