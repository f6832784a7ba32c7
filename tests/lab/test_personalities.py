"""Live personality switches with the real controller, a Mininet hub and real traffic.

Hosts (10.0.s.i): h2_1 is a web server (tcp/80 and tcp/443); h1_2 and h1_3
are two "sites" that both answer for 203.0.113.1 (a routed service); h2_2 and
h2_3 are the primary and backup DNS servers; h1_1, h1_4 and h2_4 get
personalities in the scenarios.
"""
from __future__ import annotations

import time

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, flow_durations, ping_loss, wait_for

pytestmark = pytest.mark.lab
LAB_PREFIX = "lp"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
DNSD = f"python3 {ROOT}/topologies/dnsd.py"
SERVICE = "203.0.113.1"
# Expiry correctness, not speed (benchmarks/expiry.py measures that): a temporary
# personality is reverted within this many seconds of its deadline, never before it.
EXPIRY_BOUND = 5.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=4, spares=0)
    try:
        lab.net.pingAll(timeout=2)          # every host (and interface) discovered
        lab.bg(lab.host("h2_1"), f"{NETCHECK} serve 80 443")
        for name in ("h1_2", "h1_3"):
            h = lab.host(name)
            h.cmd(f"ip addr add {SERVICE}/32 dev lo")
            lab.bg(h, f"{NETCHECK} serve 8080 --name {name}")
        lab.bg(lab.host("h2_2"), f"{DNSD} --listen 10.0.2.2 --answer 192.0.2.2")
        lab.bg(lab.host("h2_3"), f"{DNSD} --listen 10.0.2.3 --answer 192.0.2.3")
        wait_for("servers", lambda: "443" in lab.host("h2_1").cmd("ss -ltn")
                 and ":53" in lab.host("h2_3").cmd("ss -lun"), 10)
        yield lab
    finally:
        stop_lab(lab)


# ---------------------------------------------------------------- helpers
def personality(lab, id, **body):
    api(lab, "DELETE", f"/v1/personalities/{id}")
    return api(lab, "POST", "/v1/personalities", {"id": id, "name": id, **body}, 201)


def iface(lab, host_name) -> dict:
    ip = lab.host(host_name).IP()
    return wait_for(f"interface of {host_name}", lambda: next(
        (i for i in api(lab, "GET", "/v1/interfaces") if ip in i["ips"]), None))


def switch(lab, host_name, pid, expect=202, **request) -> dict:
    return api(lab, "POST", f"/v1/interfaces/{iface(lab, host_name)['id']}/switch",
               {"personality_id": pid, **request}, expect)


def operation(lab, op_id) -> dict:
    return api(lab, "GET", f"/v1/operations/{op_id}", expect=200)


def wait_op(lab, op_id, states=("succeeded", "rolled_back", "failed"), timeout=30.0) -> dict:
    def done():
        op = operation(lab, op_id)
        return op if op["state"] in states else None
    try:
        return wait_for(f"operation {op_id} in {states}", done, timeout)
    except AssertionError:
        raise AssertionError(f"{operation(lab, op_id)}\n{lab.controller.log()}") from None


def connects(lab, src, dst_ip, port, timeout=1.0) -> bool:
    out = lab.host(src).cmd(f"{NETCHECK} connect {dst_ip} {port} -t {timeout}; echo rc=$?")
    return "rc=0" in out


def baseline(lab, host_name, pid="open"):
    """Give a host an allow-all personality (no drain) and wait for it."""
    ip = lab.host(host_name).IP()
    personality(lab, f"{pid}-{host_name}", ip_addresses=[ip], default_action="allow")
    op = switch(lab, host_name, f"{pid}-{host_name}", drain={"max_seconds": 0})
    assert wait_op(lab, op["id"])["state"] == "succeeded"


# ---------------------------------------------------------------- scenarios
def test_security_zoning_drains_then_locks_down(lab):
    """open -> lockdown (ingress tcp/443 only) on the web server, while a client streams on :80."""
    baseline(lab, "h2_1")
    assert connects(lab, "h1_1", "10.0.2.1", 80) and connects(lab, "h1_1", "10.0.2.1", 443)
    personality(lab, "lockdown", ip_addresses=["10.0.2.1"], firewall_rules=[
        {"protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"}])
    log = "/tmp/lp-stream.log"
    client = lab.host("h1_1")
    client.cmd(f"rm -f {log}")
    lab.bg(client, f"{NETCHECK} stream 10.0.2.1 80 {log}")
    wait_for("stream running", lambda: "ok 5" in client.cmd(f"cat {log}"), 10)

    op = switch(lab, "h2_1", "lockdown", drain={"max_seconds": 5, "until": "zero-connections"})
    wait_op(lab, op["id"], ("draining",), 5)
    draining = operation(lab, op["id"])
    assert draining["connections"] >= 1, draining
    # During the transition: the old connection keeps flowing, new ones are refused.
    before = client.cmd(f"grep -c ^ok {log}").strip()
    assert not connects(lab, "h1_1", "10.0.2.1", 80)
    assert not connects(lab, "h1_1", "10.0.2.1", 443)
    after = client.cmd(f"grep -c ^ok {log}").strip()
    assert int(after) > int(before), "the established connection stalled during the drain"
    assert "fail" not in client.cmd(f"cat {log}")

    done = wait_op(lab, op["id"])
    assert done["state"] == "succeeded", done
    assert any("still open are cut" in e["message"] for e in done["log"]), done["log"]
    assert connects(lab, "h1_1", "10.0.2.1", 443)
    assert not connects(lab, "h1_1", "10.0.2.1", 80)
    wait_for("the old connection cut", lambda: "fail" in client.cmd(f"cat {log}"), 5)
    record = iface(lab, "h2_1")
    assert record["personality_id"] == "lockdown" and record["personality_state"] == "active"
    history = api(lab, "GET", f"/v1/interfaces/{record['id']}/history", expect=200)
    assert [h["to"] for h in history][-2:] == ["open-h2_1", "lockdown"]


def test_anti_spoofing_drops_foreign_source_addresses(lab):
    baseline(lab, "h1_4")
    h = lab.host("h1_4")
    h.cmd("ip addr add 10.0.1.77/24 dev %s" % h.defaultIntf())
    try:
        assert ping_loss(h.cmd("ping -c 3 -i 0.2 -W 1 -I 10.0.1.4 10.0.2.2")) == 0.0
        assert ping_loss(h.cmd("ping -c 3 -i 0.2 -W 1 -I 10.0.1.77 10.0.2.2")) == 100.0
    finally:
        h.cmd("ip addr del 10.0.1.77/24 dev %s" % h.defaultIntf())


def _dns_answer(lab, host_name, server) -> str:
    return lab.host(host_name).cmd(f"{DNSD} --query www.example. --server {server} --timeout 2").strip()


def _service(lab, host_name) -> str:
    return lab.host(host_name).cmd(f"{NETCHECK} connect {SERVICE} 8080 -t 2").strip()


def test_disaster_recovery_moves_dns_and_routes(lab):
    routes = lambda hop: [{"destination": "203.0.113.0/24", "next_hop": hop}]  # noqa: E731
    personality(lab, "primary", subnet_id="seg1", ip_addresses=["10.0.1.1"], default_action="allow",
                dns_servers=["10.0.2.2"], routing_table=routes("10.0.1.2"))
    personality(lab, "dr", subnet_id="seg1", ip_addresses=["10.0.1.1"], default_action="allow",
                dns_servers=["10.0.2.3"], routing_table=routes("10.0.1.3"))
    assert wait_op(lab, switch(lab, "h1_1", "primary", drain={"max_seconds": 0})["id"])["state"] == "succeeded"
    assert _dns_answer(lab, "h1_1", "10.0.2.2") == "192.0.2.2"
    assert _dns_answer(lab, "h1_1", "10.0.9.9") == "192.0.2.2"      # redirected to its server
    assert _service(lab, "h1_1").startswith("h1_2:8080")
    op = switch(lab, "h1_1", "dr", drain={"max_seconds": 3},
                health_checks=[{"type": "dns"}, {"type": "gateway"}])
    done = wait_op(lab, op["id"])
    assert done["state"] == "succeeded", done
    assert _dns_answer(lab, "h1_1", "10.0.2.2") == "192.0.2.3"      # only the backup answers now
    assert _dns_answer(lab, "h1_1", "10.0.2.3") == "192.0.2.3"
    assert _service(lab, "h1_1").startswith("h1_3:8080")


def test_broken_personality_rolls_back_by_itself(lab):
    baseline(lab, "h2_4")
    personality(lab, "broken", ip_addresses=["10.0.2.4"], default_action="allow",
                dns_servers=["10.0.2.99"])
    op = switch(lab, "h2_4", "broken", drain={"max_seconds": 0},
                health_checks=[{"type": "dns", "timeout_seconds": 2}])
    done = wait_op(lab, op["id"])
    assert done["state"] == "rolled_back", done
    assert "dns 10.0.2.99 failed" in done["reason"]
    record = iface(lab, "h2_4")
    assert record["personality_id"] == "open-h2_4" and record["personality_state"] == "fallback"
    history = api(lab, "GET", f"/v1/interfaces/{record['id']}/history", expect=200)
    assert history[-1]["result"] == "rolled_back" and "10.0.2.99" in history[-1]["reason"]
    assert ping_loss(lab.host("h2_4").cmd("ping -c 2 -i 0.2 -W 1 10.0.2.254")) == 0.0


def test_temporary_access_reverts_by_itself(lab):
    baseline(lab, "h1_4", "closed")   # allow-all baseline named differently
    personality(lab, "temp-web", ip_addresses=["10.0.1.4"], expires_after=3, firewall_rules=[
        {"protocol": "icmp", "action": "allow"}])
    record = iface(lab, "h1_4")
    op = switch(lab, "h1_4", "temp-web", drain={"max_seconds": 0})
    assert wait_op(lab, op["id"])["state"] == "succeeded"
    active = iface(lab, "h1_4")
    assert active["personality_id"] == "temp-web" and active["expires_to"] == "closed-h1_4"
    deadline = active["expires_at"]
    wait_for("expiry", lambda: iface(lab, "h1_4")["personality_id"] == "closed-h1_4",
             max(0.0, deadline - time.time()) + EXPIRY_BOUND + 10)
    # Judged by the controller's timestamps (how soon: benchmarks/expiry.py): the
    # deadline is 3 s after the switch, the revert starts at it, never before.
    history = api(lab, "GET", f"/v1/interfaces/{record['id']}/history", expect=200)
    switched, back = history[-2], history[-1]
    assert switched["operation"] == op["id"]
    assert deadline - 3 - 0.001 <= switched["finished_at"] <= deadline, (switched, deadline)
    assert back["kind"] == "expiry" and back["result"] == "succeeded", back
    assert deadline <= back["at"] and back["finished_at"] <= deadline + EXPIRY_BOUND, \
        (back, deadline)


def test_ab_apply_changes_only_the_chosen_interfaces(lab):
    baseline(lab, "h2_4", "ab-a")
    baseline(lab, "h1_4", "ab-a")
    personality(lab, "variant-b", ip_addresses=[], default_action="allow")
    chosen, other = iface(lab, "h2_4"), iface(lab, "h1_4")
    result = api(lab, "POST", "/v1/personalities/variant-b/apply",
                 {"interfaces": [chosen["id"]], "drain": {"max_seconds": 0}}, 202)
    assert len(result["operations"]) == 1
    wait_op(lab, result["operations"][0]["id"])
    assert iface(lab, "h2_4")["personality_id"] == "variant-b"
    after = iface(lab, "h1_4")
    assert after["personality_id"] == other["personality_id"] == "ab-a-h1_4"
    assert after["revision"] == other["revision"]


def test_restart_mid_switch_finishes_it(lab):
    baseline(lab, "h2_1", "restart")
    personality(lab, "after-restart", ip_addresses=["10.0.2.1"], firewall_rules=[
        {"protocol": "tcp", "port": 443, "direction": "ingress", "action": "allow"}])
    log = "/tmp/lp-restart.log"
    client = lab.host("h1_1")
    client.cmd(f"rm -f {log}")
    lab.bg(client, f"{NETCHECK} stream 10.0.2.1 443 {log}")
    wait_for("stream running", lambda: "ok 3" in client.cmd(f"cat {log}"), 10)
    op = switch(lab, "h2_1", "after-restart", drain={"max_seconds": 6})
    wait_op(lab, op["id"], ("draining",), 5)
    lab.controller.kill9()
    bridge = next(s.name for s in lab.net.switches if any(
        i.link and lab.host("h2_1") in (i.link.intf1.node, i.link.intf2.node) for i in s.intfList()))
    cookies_during = {k.split(",")[0] for k in flow_durations(bridge)}
    lab.controller.start()
    done = wait_op(lab, op["id"], timeout=30)
    assert done["state"] == "succeeded", done
    assert any("resumed" in e["message"] for e in done["log"]), done["log"]
    lab.controller.wait_in_sync(lab.dpids)
    assert connects(lab, "h1_1", "10.0.2.1", 443) and not connects(lab, "h1_1", "10.0.2.1", 80)
    assert cookies_during   # the switch kept its flows while the controller was down


def _iperf_mbps(lab, src, dst, port) -> float:
    server = lab.host(dst)
    lab.bg(server, f"iperf -s -p {port}")
    wait_for("iperf server", lambda: f":{port}" in server.cmd("ss -ltn"), 10)
    out = lab.host(src).cmd(f"iperf -c {server.IP()} -p {port} -t 3 -y C")
    return float(out.strip().splitlines()[-1].split(",")[-1]) / 1e6


def test_qos_rate_limit_holds(lab):
    personality(lab, "limited", ip_addresses=["10.0.1.2"], default_action="allow",
                qos_settings={"priority": 2, "egress_rate_kbps": 10000, "egress_burst_kb": 200})
    op = switch(lab, "h1_2", "limited", drain={"max_seconds": 0})
    assert wait_op(lab, op["id"])["state"] == "succeeded"
    limited = _iperf_mbps(lab, "h1_2", "h2_2", 5011)
    assert 5.0 <= limited <= 11.5, limited       # a 10 Mbit/s drop meter on what h1_2 sends
    unlimited = _iperf_mbps(lab, "h2_2", "h1_2", 5012)   # the other way is not limited
    assert unlimited > 2 * limited, (limited, unlimited)


def test_bad_documents_are_refused_and_nothing_is_stored(lab):
    before = api(lab, "GET", "/v1/personalities", expect=200)
    cases = [
        ({"firewall_rules": [{"protocol": "tcp", "destination": "10.0.0.0/33", "action": "allow"}]},
         "body.firewall_rules[0].destination"),
        ({"firewall_rules": [{"protocol": "sctp", "action": "allow"}]}, "body.firewall_rules[0].protocol"),
        ({"firewall_rules": [{"protocol": "tcp", "port": 70000, "action": "allow"}]},
         "body.firewall_rules[0].port"),
        ({"subnet_id": "seg1", "routing_table": [{"destination": "10.9.0.0/16", "next_hop": "10.0.2.1"}]},
         "body.routing_table[0].next_hop"),
        ({"subnet_id": "nope"}, "body.subnet_id"),
    ]
    for body, field in cases:
        status, problem = lab.controller.request("POST", "/v1/personalities", {"name": "bad", **body})
        assert status == 422, (body, status, problem)
        assert field in [e["field"] for e in problem["errors"]], problem
    assert api(lab, "GET", "/v1/personalities", expect=200) == before
