"""Personas with the real controller, a Mininet hub and real traffic.

The lab's gateway bridge gw1 is the persona gateway; ext (198.51.100.1, on
gw1) is the outside server: TCP on 80 and 22, DNS (UDP) on 53, iperf3.
Segment hosts join personas and are readdressed into the persona's range
(statically, or by the hub's DHCP).
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, wait_for

pytestmark = pytest.mark.lab
LAB_PREFIX = "pz"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
DNSD = f"python3 {ROOT}/topologies/dnsd.py"
EXT = "198.51.100.1"
# Expiry correctness, not speed (benchmarks/expiry.py measures that): a persona is
# torn down within this many seconds of its deadline, never before it.
EXPIRY_BOUND = 5.0
CLOCK_SLACK = 0.01      # the journal's wall-clock ts less a duration timed on the monotonic clock


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=2, hosts=2, spares=0)
    try:
        lab.net.pingAll(timeout=2)          # every host (and interface) discovered
        ext = lab.host("ext")
        lab.bg(ext, f"{NETCHECK} serve 80 22 --name ext")
        lab.bg(ext, f"{DNSD} --listen {EXT} --answer 192.0.2.80")
        lab.bg(ext, "iperf3 -s")
        lab.bg(lab.host("h1_1"), f"{NETCHECK} serve 80 2222 --name h1_1")
        lab.bg(lab.host("h2_1"), f"{NETCHECK} serve 80 --name h2_1")
        wait_for("servers", lambda: ":22" in ext.cmd("ss -ltn") and ":53" in ext.cmd("ss -lun")
                 and ":5201" in ext.cmd("ss -ltn"), 10)
        lab.homes = {}
        yield lab
    finally:
        stop_lab(lab)


# ---------------------------------------------------------------- helpers
def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed(name, ip_range="10.100.0.0/24", expires_in=3600.0, **extra) -> dict:
    """The issue's example request, with a future expiration."""
    body = {"name": name, "ip_range": ip_range, "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
            "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                  {"protocol": "tcp", "port": 22, "action": "deny"}],
            "expiration": rfc3339(time.time() + expires_in)}
    body.update(extra)
    return body


def create(lab, body) -> dict:
    return api(lab, "POST", "/v1/personas", body, 201)


def iface_id(lab, host_name) -> str:
    mac = lab.host(host_name).MAC()
    return wait_for(f"interface of {host_name}", lambda: next(
        (i["id"] for i in api(lab, "GET", "/v1/interfaces") if i["mac"] == mac), None))


def join(lab, persona, host_name, ip) -> None:
    """Attach a host's interface and readdress the host into the persona's range."""
    api(lab, "POST", f"/v1/personas/{persona['id']}/attachments",
        {"interface_id": iface_id(lab, host_name), "ip": ip}, 201)
    h = lab.host(host_name)
    intf = h.defaultIntf()
    lab.homes.setdefault(host_name, (h.IP(), h.cmd("ip route show default").split()[2]))
    h.cmd(f"ip addr flush dev {intf}; ip neigh flush dev {intf}")
    h.cmd(f"ip addr add {ip}/{persona_prefix(persona)} dev {intf}")
    h.cmd(f"ip route add default via {persona['gateway']}")


def persona_prefix(persona) -> int:
    return int(persona["document"]["ip_range"].split("/")[1])


def leave(lab, persona, host_name) -> None:
    api(lab, "DELETE", f"/v1/personas/{persona['id']}/attachments/{iface_id(lab, host_name)}")
    h = lab.host(host_name)
    ip, gw = lab.homes.pop(host_name)
    intf = h.defaultIntf()
    h.cmd(f"ip addr flush dev {intf}; ip neigh flush dev {intf}")
    h.cmd(f"ip addr add {ip}/24 dev {intf}; ip route add default via {gw}")


def delete(lab, persona) -> None:
    api(lab, "DELETE", f"/v1/personas/{persona['id']}")


def connects(lab, src, dst_ip, port, timeout=1.0) -> str | None:
    out = lab.host(src).cmd(f"{NETCHECK} connect {dst_ip} {port} -t {timeout}; echo rc=$?")
    return out if "rc=0" in out else None


def dns_answers(lab, src, server=EXT) -> bool:
    out = lab.host(src).cmd(f"{DNSD} --query www.example.com --server {server} --timeout 1;"
                            " echo rc=$?")
    return "rc=0" in out and "192.0.2.80" in out


def pings(lab, src, dst, count=2) -> bool:
    return " 0% packet loss" in lab.host(src).cmd(f"ping -c {count} -W 1 -i 0.2 {dst}")


def in_sync(lab):
    lab.controller.wait_in_sync(lab.dpids)


def alerts(lab, persona, kind=None) -> list[dict]:
    q = f"?persona_id={persona['id']}" + (f"&kind={kind}" if kind else "")
    return api(lab, "GET", f"/v1/alerts{q}", expect=200)


# ---------------------------------------------------------------- scenarios
def test_seed_persona_policy(lab):
    p = create(lab, seed("seed"))
    assert p["gateway"] == "10.100.0.1" and p["nat"] is None, p
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_1", EXT, 80), 10)
        assert not connects(lab, "h1_1", EXT, 22)
        assert dns_answers(lab, "h1_1")                        # udp is listed
        assert not pings(lab, "h1_1", EXT)                     # icmp is not
        assert pings(lab, "h1_1", "10.100.0.1")                # its gateway answers
        # ext reaches the persona on tcp/80 only (ingress needs an allowing policy)
        assert connects(lab, "ext", "10.100.0.5", 80)
        assert not connects(lab, "ext", "10.100.0.5", 2222)
        # and the hub counted it
        usage = wait_for("usage", lambda: (lambda u: u if u["denied"] >= 3 and
                                           u["bytes"]["out"] > 0 else None)(
            api(lab, "GET", f"/v1/personas/{p['id']}/usage", expect=200)), 10)
        assert usage["connections"] >= 3 and usage["packets"]["in"] > 0, usage
    finally:
        leave(lab, p, "h1_1")
        delete(lab, p)


def test_isolation_from_the_fabric(lab):
    """A member is reached only through the gateway; its old neighbours cannot reach it."""
    p = create(lab, seed("isolated"))
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_1", EXT, 80), 10)
        assert not pings(lab, "h1_2", "10.100.0.5")            # icmp not in protocols
        assert not connects(lab, "h1_2", "10.100.0.5", 22)
    finally:
        leave(lab, p, "h1_1")
        delete(lab, p)


def test_bandwidth_limit_holds(lab):
    p = create(lab, seed("metered", qos={"bandwidth": "20Mbps"},
                         security_policies=[{"protocol": "tcp", "port": 5201,
                                             "action": "allow"}]))
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_1", EXT, 80), 10)
        out = lab.host("h1_1").cmd(f"iperf3 -c {EXT} -t 4 -O 1 -J")
        bps = float(re.search(r'"sum_received":\s*{[^}]*"bits_per_second":\s*([0-9.e+]+)',
                              out).group(1))
        assert abs(bps - 20e6) / 20e6 <= 0.15, f"{bps / 1e6:.1f} Mbit/s against 20"
    finally:
        leave(lab, p, "h1_1")
        delete(lab, p)


def test_overlapping_personas_work_through_nat_and_stay_apart(lab):
    a = create(lab, seed("overlap-a", expires_in=3000))
    b = create(lab, seed("overlap-b", expires_in=3600))
    try:
        a, b = (api(lab, "GET", f"/v1/personas/{x['id']}", expect=200) for x in (a, b))
        assert a["nat"] and b["nat"] and a["nat"]["hub_range"] != b["nat"]["hub_range"], (a, b)
        join(lab, a, "h1_1", "10.100.0.5")
        join(lab, b, "h2_1", "10.100.0.5")
        in_sync(lab)
        answer_a = wait_for("a to ext", lambda: connects(lab, "h1_1", EXT, 80), 10)
        answer_b = wait_for("b to ext", lambda: connects(lab, "h2_1", EXT, 80), 10)
        assert answer_a and answer_b
        b_visible = b["nat"]["hub_range"].split("/")[0].rsplit(".", 1)[0] + ".5"
        a_visible = a["nat"]["hub_range"].split("/")[0].rsplit(".", 1)[0] + ".5"
        assert not connects(lab, "h1_1", b_visible, 80)       # personas stay apart
        assert not connects(lab, "h2_1", a_visible, 80)
        # ext reaches each at its NAT address, and a (expires first) at its real one too
        assert "h1_1:80" in connects(lab, "ext", a_visible, 80)
        assert "h2_1:80" in connects(lab, "ext", b_visible, 80)
        assert "h1_1:80" in connects(lab, "ext", "10.100.0.5", 80)
    finally:
        for host, persona in (("h1_1", a), ("h2_1", b)):
            if host in lab.homes:
                leave(lab, persona, host)
        delete(lab, a)
        delete(lab, b)


def test_expiry_removes_reachability_on_time_after_a_warning(lab):
    """Judged by the controller's own timestamps, never the test's clock: the warning
    inside its window before the deadline, the teardown started no earlier than the
    deadline and done within EXPIRY_BOUND of it.  How soon after is a benchmark
    (benchmarks/expiry.py)."""
    p = create(lab, seed("short", expires_in=8.0,
                         alert_thresholds={"expiry_warning": "5s"}))
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_1", EXT, 80), 5)
        deadline = p["expires_at"]
        warning = wait_for("expiry warning", lambda: alerts(lab, p, "expiry_warning"), 10)
        expired = wait_for("expired", lambda: (lambda r: r if r["state"] == "expired" else None)(
            api(lab, "GET", f"/v1/personas/{p['id']}")),
            max(0.0, deadline - time.time()) + EXPIRY_BOUND + 10)
        assert not connects(lab, "h1_1", EXT, 80)
        raised = datetime.fromisoformat(warning[0]["at"].replace("Z", "+00:00")).timestamp()
        assert deadline - 5 - 0.001 <= raised < deadline, (raised, deadline)   # ms precision
        events = [e for e in lab.controller.events("persona") if e["subject"] == p["id"]
                  and "torn down" in e["message"]]
        assert len(events) == 1, events
        done = events[0]["ts"]
        started = done - events[0]["data"].get("ms", 0) / 1000
        assert deadline <= started + CLOCK_SLACK and done <= deadline + EXPIRY_BOUND, \
            (events, deadline)
        assert deadline <= expired["expired_at"] <= deadline + EXPIRY_BOUND, (expired, deadline)
    finally:
        lab.homes.pop("h1_1", None)
        h = lab.host("h1_1")
        h.cmd(f"ip addr flush dev {h.defaultIntf()}; ip addr add 10.0.1.1/24 dev {h.defaultIntf()};"
              " ip route add default via 10.0.1.254")
        delete(lab, p)


def test_thresholds_raise_alerts(lab):
    p = create(lab, seed("watched", alert_thresholds={"security_events": 3,
                                                       "bandwidth": "1Mbps"},
                         security_policies=[{"protocol": "tcp", "port": 5201,
                                             "action": "allow"},
                                            {"protocol": "tcp", "port": 22, "action": "deny"}]))
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        for _ in range(4):
            connects(lab, "h1_1", EXT, 22, timeout=0.3)
        assert wait_for("security alert", lambda: alerts(lab, p, "security_events"), 10)
        lab.host("h1_1").cmd(f"iperf3 -c {EXT} -t 3 -b 5M")
        assert wait_for("bandwidth alert", lambda: alerts(lab, p, "bandwidth"), 10)
    finally:
        leave(lab, p, "h1_1")
        delete(lab, p)


def test_restart_keeps_personas_and_deadlines(lab):
    p = create(lab, seed("durable"))
    gone = create(lab, seed("gone-while-down", ip_range="10.101.0.0/24", expires_in=4.0))
    join(lab, p, "h1_1", "10.100.0.5")
    try:
        in_sync(lab)
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_1", EXT, 80), 10)
        lab.controller.kill9()
        assert connects(lab, "h1_1", EXT, 80)                  # flows stay in the switches
        time.sleep(max(0.0, gone["expires_at"] - time.time()) + 0.5)
        lab.controller.start()
        in_sync(lab)
        again = api(lab, "GET", f"/v1/personas/{p['id']}", expect=200)
        assert again["expires_at"] == p["expires_at"] and again["state"] == "active"
        assert connects(lab, "h1_1", EXT, 80)
        assert wait_for("expired at start-up", lambda: api(
            lab, "GET", f"/v1/personas/{gone['id']}")["state"] == "expired", 5)
    finally:
        leave(lab, p, "h1_1")
        delete(lab, p)
        delete(lab, gone)


def test_dhcp_configures_a_stock_client(lab):
    p = create(lab, seed("dhcp"))
    api(lab, "POST", f"/v1/personas/{p['id']}/attachments",
        {"interface_id": iface_id(lab, "h1_2")}, 201)
    h = lab.host("h1_2")
    intf = h.defaultIntf()
    try:
        in_sync(lab)
        h.cmd(f"ip addr flush dev {intf}")
        out = h.cmd(f"timeout 20 dhclient -1 -v -pf /tmp/pz-dhclient.pid -lf /tmp/pz-dhclient.lease"
                    f" {intf} 2>&1")
        addr = h.cmd(f"ip -4 addr show dev {intf}")
        assert "10.100.0.2/24" in addr, out + addr
        assert wait_for("tcp/80 to ext", lambda: connects(lab, "h1_2", EXT, 80), 10)
    finally:
        pid = h.cmd("cat /tmp/pz-dhclient.pid 2>/dev/null").strip()
        if pid.isdigit():
            h.cmd(f"kill {pid}")
        h.cmd(f"ip addr flush dev {intf}; ip addr add 10.0.1.2/24 dev {intf};"
              " ip route add default via 10.0.1.254")
        api(lab, "DELETE", f"/v1/personas/{p['id']}/attachments/{iface_id(lab, 'h1_2')}")
        delete(lab, p)
