"""Ephemeral shards on a real hub: hub-rap leases, translation, rotations under traffic,
probes, forged RAP, expiry, and a controller killed and restarted.

Mininet hub with one segment (h1_1, h1_2 are the resources) and ext.  Both
resources run the real `hub-rap` client; ext talks to their external
addresses only.  Names start with ``ls`` (scripts/test cleans that prefix).
"""
from __future__ import annotations

import re
import time

import pytest

from tests.lab.conftest import api, start_lab, stop_lab
from tests.lab.harness import ROOT, sh, wait_for

pytestmark = pytest.mark.lab
LAB_PREFIX = "ls"
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
HUB_RAP = ROOT / ".venv" / "bin" / "hub-rap"
PYTHON = ROOT / ".venv" / "bin" / "python"
GATEWAY = "10.0.1.254"
LEASE = 20
POOL = {"name": "lab", "pool": "10.200.0.0/16", "external_range": "203.0.113.0/24",
        "lifespan": {"min": "1h", "max": "2h"}, "rotation_interval": "1h",
        "rap": {"lease": f"{LEASE}s"}, "quarantine": "60s"}
PATH = "/v1/shard-pools/lab"


def resource(lab, rid: str) -> dict:
    return api(lab, "GET", f"{PATH}/resources/{rid}", expect=200)


def leased_address(lab, rid: str, other_than: str | None = None) -> str:
    def ready():
        r = resource(lab, rid)
        ok = r["lease"]["state"] == "leased" and r["address"] and r["address"] != other_than
        return r["address"] if ok and not r.get("move") else None
    return wait_for(f"{rid} leased", ready, 30)


def addresses(host) -> set[str]:
    return set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", host.cmd(f"ip -4 addr show {host.intf()}")))


def who(host, ip: str, port: int = 80, udp: bool = False, text: str = "hi") -> dict[str, str]:
    if udp:
        out = host.cmd(f"{NETCHECK} udpask {ip} {port} {text} -t 2")
    else:
        out = host.cmd(f"{NETCHECK} connect {ip} {port} -t 2")
    return dict(re.findall(r"(local|peer)=(\S+)", out))


def metric(lab, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in lab.controller.get("/metrics").splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not want and line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def oks(host, log: str) -> int:
    """The lines a `netcheck stream` got answered so far (0 before its log exists)."""
    return int(host.cmd(f"cat {log} 2>/dev/null | grep -c '^ok'").strip() or 0)


def fails(host, log: str) -> str:
    return host.cmd(f"grep '^fail' {log} 2>/dev/null").strip()


def rotate(lab, rid: str) -> dict:
    started = api(lab, "POST", f"{PATH}/rotate", {"resources": [rid]}, expect=202)

    def over():
        r = api(lab, "GET", f"{PATH}/rotations/{started['id']}", expect=200)
        return r if r["state"] != "running" else None
    return wait_for("the rotation round", over, 30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory, LAB_PREFIX, segments=1, hosts=2, spares=0)
    try:
        lab.net.pingAll(timeout=2)
        api(lab, "POST", "/v1/shard-pools", POOL, expect=201)
        interfaces = lab.controller.get("/v1/interfaces")
        lab.res = {}
        for name in ("h1_1", "h1_2"):
            host = lab.host(name)
            iid = next(i["id"] for i in interfaces if host.IP() in i["ips"])
            enrolled = api(lab, "POST", f"{PATH}/resources", {"interface_id": iid, "id": name},
                           expect=201)
            assert enrolled["rap"] == {"server": GATEWAY, "port": 6699}, enrolled
            lab.res[name] = enrolled
            lab.bg(host, f"bash -c 'exec {HUB_RAP} --server {GATEWAY} --port 6699 --resource {name} "
                         f"--key {enrolled['key']} --interface {host.intf()} "
                         f"--log-level debug 2>>/tmp/{LAB_PREFIX}-rap-{name}.log'")
            for port in (80, 7777, 7778):
                lab.bg(host, f"{NETCHECK} whoami {port}")
        for name in lab.res:
            leased_address(lab, name)
        yield lab
    finally:
        stop_lab(lab)


def test_resources_get_shard_addresses_and_ext_reaches_them_at_their_external_ones(lab):
    ext = lab.host("ext")
    for name, enrolled in lab.res.items():
        address = leased_address(lab, name)
        assert addresses(lab.host(name)) == {address}       # only its shard address
        assert "key" not in resource(lab, name)
        for udp in (False, True):
            seen = who(ext, enrolled["external_ip"], udp=udp)
            assert seen == {"local": address, "peer": ext.IP()}, (name, udp, seen)


def test_shard_addresses_are_unreachable_from_ext_and_probes_are_counted(lab):
    ext = lab.host("ext")
    before = metric(lab, "hub_shard_probes_total", pool="lab")
    address = leased_address(lab, "h1_2")
    assert who(ext, address) == {}
    assert " 100% packet loss" in ext.cmd(f"ping -c 2 -i 0.2 -W 1 {address}")
    wait_for("probes counted", lambda: metric(lab, "hub_shard_probes_total", pool="lab")
             >= before + 3, 15)


def test_a_resources_own_connection_shows_its_external_address(lab):
    ext, res = lab.host("ext"), lab.host("h1_2")
    lab.bg(ext, f"{NETCHECK} whoami 81")
    wait_for("ext serving", lambda: ":81" in ext.cmd("ss -ltn"), 10)
    seen = who(res, ext.IP(), 81)
    assert seen["peer"] == lab.res["h1_2"]["external_ip"], seen


def test_a_connection_survives_five_rotations_and_new_ones_land_on_the_new_address(lab):
    ext = lab.host("ext")
    external = lab.res["h1_1"]["external_ip"]
    log = f"/tmp/{LAB_PREFIX}-stream.log"
    ext.cmd(f"rm -f {log}")
    lab.bg(ext, f"{NETCHECK} stream {external} 80 {log}")
    wait_for("the stream flowing", lambda: oks(ext, log) >= 3, 10)
    # A one-way UDP flow alongside: 20 datagrams a second for 12 s into a sink.
    sink, res = f"/tmp/{LAB_PREFIX}-udpsink.log", lab.host("h1_1")
    res.cmd(f"rm -f {sink}")
    lab.bg(res, f"{NETCHECK} udpsink 9000 {sink}")
    wait_for("the sink listening", lambda: ":9000" in res.cmd("ss -lun"), 10)
    lab.bg(ext, f"{NETCHECK} udpstream {external} 9000 12 20")
    started = time.monotonic()
    seen = [leased_address(lab, "h1_1")]
    for n in range(5):
        done = rotate(lab, "h1_1")
        assert done["state"] == "done", done
        new = leased_address(lab, "h1_1", other_than=seen[-1])
        assert new not in seen
        seen.append(new)
        assert who(ext, external)["local"] == new           # a new connection: the new address
        time.sleep(1.0)
    assert fails(ext, log) == "" and oks(ext, log) > 50
    time.sleep(max(0.0, started + 13.0 - time.monotonic()))     # the UDP flow is over
    received, top = map(int, re.findall(r"received (\d+) max (\d+)", res.cmd(f"cat {sink}"))[0])
    assert top >= 235 and received >= top - 5, (received, top)  # at most one lost a rotation
    r = resource(lab, "h1_1")
    assert seen[0] in {d["address"] for d in r["deprecated"]}   # the stream still holds it
    for host, pid in [b for b in lab.background if b[0] in (ext, res)][-3:]:
        host.cmd(f"kill {pid}")                                 # the stream, sink, UDP flow

    def released():
        left = {d["address"] for d in resource(lab, "h1_1")["deprecated"]}
        return not left and addresses(lab.host("h1_1")) == {seen[-1]}
    wait_for("every deprecated address released", released, 40)


def test_forged_and_replayed_rap_is_ignored_and_counted(lab):
    host = lab.host("h1_2")
    key = lab.res["h1_2"]["key"]
    before = {r: metric(lab, "hub_rap_rejected_total", reason=r) for r in ("bad_mac", "replay")}
    script = ("import socket,sys;from controller.rap import protocol as rap;"
              "from ipaddress import IPv4Address as A;"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1.5);"
              f"m=lambda c:rap.Message(rap.Type.REGISTER,'h1_2',c,rap.new_nonce(),0);"
              f"s.sendto(rap.encode(m(10**17),b'forged'),('{GATEWAY}',6699));"
              f"s.sendto(rap.encode(m(5),rap.key_bytes('{key}')),('{GATEWAY}',6699));"
              "\ntry:\n s.recvfrom(2048);print('answered')\nexcept OSError:\n print('silent')")
    assert host.cmd(f"cd {ROOT} && {PYTHON} -c \"{script}\"").strip().endswith("silent")
    wait_for("rejections counted", lambda: all(
        metric(lab, "hub_rap_rejected_total", reason=r) >= before[r] + 1 for r in before), 10)


def test_a_udp_service_routes_sessions_and_spreads_clients_over_two_resources(lab):
    ext = lab.host("ext")
    patterned = api(lab, "POST", f"{PATH}/services",
                    {"external_ip": "203.0.113.80", "protocol": "udp", "port": 7777,
                     "resources": ["h1_1", "h1_2"], "metadata": {"pattern": r"session=(\w+)"}},
                    expect=201)
    hashed = api(lab, "POST", f"{PATH}/services",
                 {"external_ip": "203.0.113.81", "protocol": "udp", "port": 7778,
                  "resources": ["h1_1", "h1_2"]}, expect=201)
    api(lab, "POST", f"{PATH}/routes", {"service_id": patterned["id"], "session": "alice",
                                        "resource_id": "h1_2"}, expect=201)
    lab.controller.wait_in_sync(lab.dpids)
    home = {leased_address(lab, n): n for n in ("h1_1", "h1_2")}

    def landed(ip: str, port: int, text: str) -> str | None:
        return home.get(who(ext, ip, port, udp=True, text=text).get("local"))
    # A routed session reaches its resource, from any client port (each ask is a new one).
    assert [landed("203.0.113.80", 7777, "session=alice") for _ in range(4)] == ["h1_2"] * 4
    # Without metadata, 20 client ports spread over both resources.
    spread = [landed("203.0.113.81", 7778, f"n{n}") for n in range(20)]
    assert set(spread) == {"h1_1", "h1_2"}, spread
    # A route added over REST takes effect for new sessions.
    api(lab, "POST", f"{PATH}/routes", {"service_id": patterned["id"], "session": "carol",
                                        "resource_id": "h1_1"}, expect=201)
    assert [landed("203.0.113.80", 7777, "session=carol") for _ in range(3)] == ["h1_1"] * 3
    # A session without a route is learned where it first went, and stays there.
    first = landed("203.0.113.80", 7777, "session=dave")
    assert first in home.values()
    assert [landed("203.0.113.80", 7777, "session=dave") for _ in range(3)] == [first] * 3
    routes = api(lab, "GET", f"{PATH}/routes", expect=200)
    assert any(r["session"] == "dave" and r["learned"] for r in routes), routes
    for service in (patterned, hashed):
        api(lab, "DELETE", f"{PATH}/services/{service['id']}")


def test_a_restarted_controller_keeps_leases_addresses_and_connections(lab):
    ext = lab.host("ext")
    external = lab.res["h1_2"]["external_ip"]
    address = leased_address(lab, "h1_2")
    log = f"/tmp/{LAB_PREFIX}-restart.log"
    ext.cmd(f"rm -f {log}")
    lab.bg(ext, f"{NETCHECK} stream {external} 80 {log}")
    wait_for("the stream flowing", lambda: oks(ext, log) >= 3, 10)
    lab.controller.kill9()
    time.sleep(2)
    lab.controller.start()
    lab.controller.wait_in_sync(lab.dpids)
    ok_then = oks(ext, log)
    time.sleep(LEASE)                        # a renewal falls into the restarted hub's time
    assert oks(ext, log) > ok_then + 50 and fails(ext, log) == ""
    r = resource(lab, "h1_2")
    assert (r["address"], r["external_ip"], r["lease"]["state"]) == (address, external, "leased")
    host, pid = lab.background.pop()
    host.cmd(f"kill {pid}")


def test_a_lease_not_renewed_expires_and_its_flows_go(lab):
    host = lab.host("h1_2")
    address = leased_address(lab, "h1_2")
    rap_pid = next(pid for h, pid in lab.background if h is host)   # hub-rap started first
    host.cmd(f"kill -9 {rap_pid}")
    bridge = lab.switch("a1").name

    def gone():
        r = resource(lab, "h1_2")
        flows = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", bridge)
        return r["lease"]["state"] == "unleased" and address not in flows
    wait_for("the lease expired and its flows gone", gone, LEASE + 15)
