"""Shadow instances on a real hub: two instances split the sampled connections, a
sampled long connection outlives a percentage change, a killed agent's instance is
replaced from a free slot, and bad manifests are refused naming the field.

Mininet hub with one segment (h1_1 production, h1_2 a spare segment host), three
spare hosts sp1..sp3 as shadow slots s1..s3 running the real `hub-shadow-agent`,
and ext as the client.  What reached a shadow is counted by a capture on its
interface.  Every test also checks that production answered every connection
byte for byte.  Names start with ``lx`` (scripts/test cleans that prefix).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from controller.features.shadow.mirror import COPY, IN_RANGE
from controller.features.shadow.mirror_net import below
from controller.pipeline import tables
from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import sh, wait_for
from tests.lab.shadowlab import (NETCHECK, Capture, add_slot, guard_drops, interface_ids,
                                 whole)

pytestmark = pytest.mark.lab
LAB_PREFIX = "lx"
SLOTS = 3
CONNECTIONS = 200
APP = "/v1/appliances/web"
REPLACED_WITHIN = 10.0           # s from the kill to a new instance ready on another slot


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=1, hosts=2, spares=SLOTS)
    try:
        lab.net.pingAll(timeout=2)
        prod = lab.host("h1_1")
        lab.bg(prod, f"{NETCHECK} serve 80 --name prod")
        wait_for("production serving", lambda: ":80" in prod.cmd("ss -ltn"), 10)
        spares = [f"sp{n}" for n in range(1, SLOTS + 1)]
        lab.iid = interface_ids(lab, ["h1_1", "h1_2", *spares])
        lab.agents = {f"s{h[2:]}": add_slot(lab, lab.host(h), f"s{h[2:]}", lab.iid[h])
                      for h in spares}
        manifest = {"name": "web", "interfaces": [lab.iid["h1_1"]],
                    "service": [{"protocol": "tcp", "port": 80}],
                    "appliance_image": f"{NETCHECK} serve 80 --name shadow",
                    "shadowing": {"shadow_instance_count": 2, "shadow_traffic_percentage": 100.0,
                                  "shadow_analysis_profiles": []}}
        api(lab, "POST", "/v1/appliances", manifest, expect=201)
        shape(lab, count=2, percentage=100.0)
        yield lab
    finally:
        stop_lab(lab)


# ---------------------------------------------------------------- helpers
def instances(lab, state: str | None = None) -> list[dict]:
    found = api(lab, "GET", APP, expect=200)["instances"]
    return [i for i in found if state is None or i["state"] == state]


def shadow_host(lab, instance: dict):
    """The host of an instance's slot (slot sN is host spN)."""
    return lab.host("sp" + instance["slot_id"][1:])


def decide_flows(lab, priority: int, table: int) -> int:
    out = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", lab.switch("a1").name,
             f"table={table}")
    return sum(f"priority={priority}," in line for line in out.splitlines())


def in_force(lab, count: int, percentage: float) -> bool:
    """The switch of production copies to `count` instances and samples `percentage`:
    a copy flow per instance and hook, and its sampled ranges in both decide tables."""
    ranges = len(below(int(round(percentage * 10))))
    return (all(decide_flows(lab, COPY, t.id) == count
                for t in (tables.SHADOW_FROM, tables.SHADOW_TO))
            and all(decide_flows(lab, IN_RANGE, t.id) == count * ranges
                    for t in (tables.SHADOW_FROM_DECIDE, tables.SHADOW_TO_DECIDE)))


def shape(lab, count: int, percentage: float) -> list[dict]:
    """The appliance at `count` instances and `percentage`, in force in the switch; the
    ready instances."""
    api(lab, "PATCH", APP, {"shadowing": {"shadow_instance_count": count,
                                          "shadow_traffic_percentage": percentage}}, expect=200)

    def settled():
        found = instances(lab)
        ready = [i for i in found if i["state"] == "ready"]
        return ready if len(ready) == count and not any(
            i["state"] == "launching" for i in found) else None
    ready = wait_for(f"{count} instance(s) ready", settled, 45)
    wait_for(f"{count} receiver(s) at {percentage}% in the switch",
             lambda: in_force(lab, count, percentage), 20)
    lab.controller.wait_in_sync(lab.dpids)
    return ready


def production_answers(lab, count: int) -> None:
    """`count` client connections, each answered by production byte for byte."""
    out = lab.host("ext").cmd(f"{NETCHECK} many {lab.host('h1_1').IP()} 80 {count} prod:80")
    assert out.strip().splitlines()[-1] == f"ok {count} bad 0 failed 0", out


def stream_lines(host, log: str) -> dict[str, int]:
    """How many of a `netcheck stream`'s lines were answered ("ok") and not ("fail")."""
    lines = host.cmd(f"cat {log}").splitlines()
    return {kind: sum(line.startswith(kind) for line in lines) for kind in ("ok", "fail")}


def problem(lab, method: str, path: str, body: object) -> tuple[int, str, dict]:
    """(status, content type, decoded body) of a call that should be refused."""
    req = urllib.request.Request(lab.controller.api + path, data=json.dumps(body).encode(),
                                 method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("content-type", ""), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), json.loads(err.read())


# ---------------------------------------------------------------- tests
def test_two_instances_split_the_sampled_connections_each_whole_to_one(lab):
    ready = shape(lab, count=2, percentage=100.0)
    ext = lab.host("ext").IP()
    captures = {i["slot_id"]: Capture(lab, shadow_host(lab, i), f"split-{i['slot_id']}")
                for i in ready}
    dropped = guard_drops(lab)
    production_answers(lab, CONNECTIONS)

    def every_connection_seen():
        seen = {slot: c.connections(ext) for slot, c in captures.items()}
        done = sum(sum(whole(f) for f in s.values()) for s in seen.values()) >= CONNECTIONS
        return seen if done else None
    seen = wait_for("every connection whole at a shadow", every_connection_seen, 15)
    for c in captures.values():
        c.stop()
    (a, b) = seen.values()
    assert not set(a) & set(b), "no connection reached both instances"
    assert len(a) + len(b) == CONNECTIONS, "at 100% every connection is sampled"
    for slot, connections in seen.items():
        assert all(whole(f) for f in connections.values()), f"{slot} saw half connections"
        assert 0.3 <= len(connections) / CONNECTIONS <= 0.7, (slot, len(connections))
    print("split:", {slot: len(c) for slot, c in seen.items()})
    assert guard_drops(lab) > dropped, "the shadows answered; their answers were dropped"


def test_a_sampled_long_connection_stays_mirrored_across_a_percentage_change(lab):
    (instance,) = shape(lab, count=1, percentage=100.0)
    ext, prod = lab.host("ext"), lab.host("h1_1")
    capture = Capture(lab, shadow_host(lab, instance), "long")
    log = f"/tmp/{LAB_PREFIX}-stream.log"
    ext.cmd(f"rm -f {log}")
    lab.bg(ext, f"{NETCHECK} stream {prod.IP()} 80 {log}")
    stream = lab.background[-1]
    try:
        port = wait_for("the long connection at the shadow", lambda: next(
            (p for p, f in capture.connections(ext.IP()).items() if "S" in f), None), 10)
        wait_for("the long connection mirrored", lambda: capture.packets(ext.IP(), port) >= 10, 10)
        patched = api(lab, "PATCH", APP, {"shadowing": {"shadow_traffic_percentage": 0.1}},
                      expect=200)
        assert patched["percentage"] == {"current": 0.1, "reason": "as configured"}, patched
        wait_for("0.1% in the switch", lambda: in_force(lab, 1, 0.1), 20)
        lab.controller.wait_in_sync(lab.dpids)
        mark, served = capture.packets(ext.IP(), port), stream_lines(ext, log)
        production_answers(lab, CONNECTIONS)
        wait_for("the long connection's new packets still mirrored",
                 lambda: capture.packets(ext.IP(), port) >= mark + 20, 10)
        others = {p: f for p, f in capture.connections(ext.IP()).items() if p != port}
        assert len(others) <= 2, f"{len(others)} of {CONNECTIONS} new connections mirrored at 0.1%"
        assert all(whole(f) for f in others.values()), others
        after = stream_lines(ext, log)
        assert after["fail"] == 0 and after["ok"] >= served["ok"] + 10, (served, after)
    finally:
        ext.cmd(f"kill {stream[1]}")
        lab.background.remove(stream)
        capture.stop()


def test_a_killed_agent_is_replaced_from_a_free_slot(lab):
    (old,) = shape(lab, count=1, percentage=100.0)
    host, pid = next((h, p) for h, p in lab.background if p == lab.agents[old["slot_id"]])
    host.cmd(f"kill -9 {pid}")
    lab.background.remove((host, pid))
    killed = time.monotonic()

    def replaced():
        found = {i["id"]: i for i in instances(lab)}
        new = [i for i in found.values() if i["state"] == "ready"]
        return new if found[old["id"]]["state"] == "failed" and new else None
    (new,) = wait_for("a new instance ready", replaced, REPLACED_WITHIN)
    took = time.monotonic() - killed
    assert new["slot_id"] != old["slot_id"], (old, new)
    assert api(lab, "GET", f"/v1/shadow-slots/{old['slot_id']}", expect=200)["state"] == "failed"
    wait_for("the new instance in the switch", lambda: in_force(lab, 1, 100.0), 20)
    lab.controller.wait_in_sync(lab.dpids)
    ext = lab.host("ext").IP()
    fresh, gone = Capture(lab, shadow_host(lab, new), "fresh"), Capture(lab, host, "gone")
    production_answers(lab, 50)
    seen = wait_for("mirrored to the new slot", lambda: (c := fresh.connections(ext))
                    and sum(whole(f) for f in c.values()) == 50 and c, 15)
    fresh.stop()
    gone.stop()
    assert all(whole(f) for f in seen.values())
    assert gone.connections(ext) == {}, "the failed slot gets no copies"
    print(f"replaced in {took:.1f} s: {old['id']} on {old['slot_id']} -> "
          f"{new['id']} on {new['slot_id']}")


def test_bad_manifests_are_refused_naming_the_field(lab):
    expiration = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    persona = api(lab, "POST", "/v1/personas",
                  {"name": "lxdev", "ip_range": "10.100.0.0/24", "protocols": ["tcp"],
                   "expiration": expiration}, expect=201)
    api(lab, "POST", f"/v1/personas/{persona['id']}/attachments",
        {"interface_id": lab.iid["h1_2"]}, expect=201)
    good = {"name": "other", "interfaces": [lab.iid["h1_2"]], "appliance_image": "true",
            "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 10.0}}
    free = SLOTS - 1                                     # web holds one
    cases = [
        ("POST", "/v1/appliances", {**good, "shadowing": {**good["shadowing"],
                                                          "shadow_traffic_percentage": 120}},
         422, "body.shadowing.shadow_traffic_percentage"),
        ("POST", "/v1/appliances", {**good, "shadowing": {**good["shadowing"],
                                                          "shadow_analysis_profiles": ["Telepathy"]}},
         422, "body.shadowing.shadow_analysis_profiles[0]"),
        ("POST", "/v1/appliances", {**good, "interfaces": [lab.iid["h1_1"]],
                                    "shadowing": {**good["shadowing"],
                                                  "shadow_instance_count": free + 1}},
         422, "body.shadowing.shadow_instance_count"),
        ("POST", "/v1/appliances", good, 409, "body.interfaces[0]"),
        ("PATCH", APP, {"shadowing": {"shadow_traffic_percentage": 120}},
         422, "body.shadowing.shadow_traffic_percentage"),
    ]
    try:
        for method, path, body, status, field in cases:
            got, kind, answer = problem(lab, method, path, body)
            assert (got, kind) == (status, "application/problem+json"), (field, got, answer)
            assert field in [e["field"] for e in answer["errors"]], (field, answer)
            if status == 409:                            # the holder is named too
                assert answer["owner"] == f"persona {persona['id']}", answer
            else:
                assert field in answer["detail"], answer
        assert [a["id"] for a in api(lab, "GET", "/v1/appliances", expect=200)] == ["web"]
        assert api(lab, "GET", APP)["shadowing"]["shadow_traffic_percentage"] == 100.0
        assert [i["state"] for i in instances(lab, "ready")] == ["ready"]
        production_answers(lab, 50)
    finally:
        api(lab, "DELETE", f"/v1/personas/{persona['id']}")
