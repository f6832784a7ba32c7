"""The shard part of ``scripts/lab --demo``: h2_2 becomes a resource of a shard pool.

It runs hub-rap and gets a shard address; ext reaches it at its external
address over a connection that keeps working through a forced rotation, and
a new connection lands on the new address.  Afterwards the resource is
released and h2_2 gets its subnet address back.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from topologies.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
HUB_RAP = Path(sys.executable).with_name("hub-rap")


def _shard_addresses(host) -> set[str]:
    out = host.cmd(f"ip -4 addr show dev {host.defaultIntf()}")
    return set(re.findall(r"inet (10\.200\.\d+\.\d+)/", out))


def shard_demo(net, api: str, hubctl, step) -> bool:
    host, ext = net.get("h2_2"), net.get("ext")
    home_ip, intf = host.IP(), host.defaultIntf()
    step("shards: a pool; h2_2 enrolled as a resource, running hub-rap")
    pool = json.loads(hubctl(api, "-o", "json", "shard-pool", "get", "demo", show=False,
                             check=False) or "null")
    if pool is None:
        hubctl(api, "shard-pool", "create", "-f", str(ROOT / "docs/examples/shard-pool.yaml"))
    interfaces = json.loads(hubctl(api, "-o", "json", "interface", "list", show=False))
    iid = next(i["id"] for i in interfaces if i["mac"] == host.MAC())
    enrolled = json.loads(hubctl(api, "-o", "json", "shard", "enroll", "demo", iid, show=False))
    rid, external, server = enrolled["id"], enrolled["external_ip"], enrolled["rap"]["server"]
    print(f"resource {rid}: external address {external}, RAP server {server}")
    host.cmd(f"{HUB_RAP} --server {server} --resource {rid} --key {enrolled['key']} "
             f"--interface {intf} 2>/tmp/hub-lab-rap.log &")
    rap = host.cmd("echo $!").strip()
    host.cmd(f"{NETCHECK} whoami 80 >/dev/null 2>&1 &")
    who = host.cmd("echo $!").strip()
    stream = None
    try:
        first = wait_until("a shard address on h2_2", lambda: _shard_addresses(host))
        print(f"h2_2 carries {', '.join(sorted(first))} (ip addr)")
        ext.cmd(f"rm -f /tmp/hub-lab-stream.log; {NETCHECK} stream {external} 80 "
                "/tmp/hub-lab-stream.log >/dev/null 2>&1 &")
        stream = ext.cmd("echo $!").strip()
        time.sleep(1.0)
        step(f"shards: rotate {rid} while ext streams to {external}")
        hubctl(api, "shard", "rotate", "demo", "--resource", rid, "--wait")
        time.sleep(1.0)
        hubctl(api, "shard", "resources", "demo")
        answer = ext.cmd(f"{NETCHECK} connect {external} 80 -t 2")
        now = dict(re.findall(r"(local|peer)=(\S+)", answer)).get("local")
        log = ext.cmd("cat /tmp/hub-lab-stream.log")
        oks, fails = log.count("ok "), log.count("fail ")
        print(f"new connection lands on {now}; the stream: {oks} answered, {fails} failed")
        return bool(now) and now not in first and oks > 10 and fails == 0
    finally:
        for pid, where in ((stream, ext), (who, host), (rap, host)):
            if pid:
                where.cmd(f"kill {pid}")
        step("shards: release the resource, h2_2 back home")
        hubctl(api, "shard", "release", "demo", rid)
        host.cmd(f"ip addr flush dev {intf}; ip addr add {home_ip}/24 dev {intf};"
                 f" ip route replace default via {home_ip.rsplit('.', 1)[0]}.254")
