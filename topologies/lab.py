"""Bring up the hub lab: a Mininet hub under an already running hub-controller.

Run by ``scripts/lab`` (which installs, starts OVS and the controller, and
cleans up).  ``--demo`` runs a short scripted scenario and exits 0 only if all
of it worked; otherwise, with a terminal, it opens the Mininet CLI, and
without one it keeps the lab up until SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from topologies.hub import build_net
from topologies.shadow_demo import shadow_demo
from topologies.shard_demo import shard_demo

HUBCTL = Path(sys.executable).with_name("hubctl")


def api_get(api: str, path: str):
    with urllib.request.urlopen(api + path, timeout=5) as resp:
        return json.loads(resp.read())


def wait_in_sync(api: str, dpids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dps = {d["id"]: d for d in api_get(api, "/v1/datapaths")}
            if all(d in dps and dps[d]["connected"] and dps[d]["flows"]["in_sync"] for d in dpids):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"lab: the switches did not all connect and sync within {timeout:.0f}s")


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def hubctl(api: str, *args: str, show: bool = True, check: bool = True) -> str:
    out = subprocess.run([str(HUBCTL), "--api", api, *args], capture_output=True, text=True)
    if show:
        print(out.stdout, end="", flush=True)
    if out.returncode != 0 and not check:
        return ""
    if out.returncode != 0:
        raise SystemExit(f"lab: hubctl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def personality_demo(net, api: str) -> bool:
    """h1_1 gets the open personality, then lockdown (tcp/443 in only), then reverts."""
    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    for name in ("open", "lockdown"):
        if subprocess.run([str(HUBCTL), "--api", api, "personality", "get", name],
                          capture_output=True).returncode != 0:
            hubctl(api, "personality", "create", "-f", str(examples / f"personality-{name}.yaml"))
    h1, h2 = net.get("h1_1"), net.get("h2_1")
    interfaces = json.loads(hubctl(api, "-o", "json", "interface", "list", show=False))
    iid = next(i["id"] for i in interfaces if h1.IP() in i["ips"])

    def pings() -> bool:
        return " 0% packet loss" in h2.cmd(f"ping -c 2 -i 0.2 -W 1 {h1.IP()}")

    step(f"personalities: {iid} (h1_1) -> open, then lockdown with a 2 s drain")
    hubctl(api, "interface", "switch", iid, "open", "--drain-max", "0", "--wait")
    ok = pings()
    hubctl(api, "interface", "switch", iid, "lockdown", "--drain-max", "2", "--wait")
    refused = not pings()
    print(f"ping h2_1 -> h1_1 under lockdown: {'refused' if refused else 'ANSWERED'}")
    ok &= refused
    step("back to open (hubctl personality apply on this one interface), then its history")
    hubctl(api, "personality", "apply", "open", "--interface", iid, "--drain-max", "0", "--wait")
    ok &= pings()
    hubctl(api, "interface", "history", iid)
    return ok


def persona_demo(net, api: str) -> bool:
    """h1_2 joins the example persona by DHCP; tcp/80 to ext passes, tcp/22 does not."""
    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    root = Path(__file__).resolve().parents[1]
    host, ext = net.get("h1_2"), net.get("ext")
    home_ip, intf = host.IP(), host.defaultIntf()
    step("personas: create the example persona, attach h1_2, configure it by DHCP")
    created = json.loads(hubctl(api, "-o", "json", "persona", "create", "-f",
                                str(examples / "persona-dev.yaml"), show=False))
    pid = created["id"]
    interfaces = json.loads(hubctl(api, "-o", "json", "interface", "list", show=False))
    iid = next(i["id"] for i in interfaces if i["mac"] == host.MAC())
    ext.cmd(f"python3 {root}/tests/lab/netcheck.py serve 80 22 --name ext >/dev/null 2>&1 &")
    server = ext.cmd("echo $!").strip()
    try:
        hubctl(api, "persona", "attach", pid, iid)
        host.cmd(f"ip addr flush dev {intf}")
        host.cmd(f"timeout 20 dhclient -1 -pf /tmp/hub-lab-dhclient.pid "
                 f"-lf /tmp/hub-lab-dhclient.lease {intf}")
        print(host.cmd(f"ip -4 -br addr show dev {intf}").strip())
        time.sleep(0.5)

        def connect(port: int) -> bool:
            out = host.cmd(f"python3 {root}/tests/lab/netcheck.py connect {ext.IP()} {port} "
                           "-t 1; echo rc=$?")
            return "rc=0" in out
        web, ssh = connect(80), connect(22)
        print(f"tcp/80 to ext: {'passes' if web else 'REFUSED'}; "
              f"tcp/22 to ext: {'refused' if not ssh else 'PASSES'}")
        for _ in range(3):
            connect(22)
        time.sleep(2.5)
        hubctl(api, "persona", "usage", pid)
        hubctl(api, "alerts", "--persona", pid)
        hubctl(api, "persona", "list")
        return web and not ssh
    finally:
        pid_file = host.cmd("cat /tmp/hub-lab-dhclient.pid 2>/dev/null").strip()
        if pid_file.isdigit():
            host.cmd(f"kill {pid_file}")
        ext.cmd(f"kill {server}")
        step("personas: delete it (ordered teardown), h1_2 back home")
        hubctl(api, "persona", "delete", pid)
        host.cmd(f"ip addr flush dev {intf}; ip addr add {home_ip}/24 dev {intf};"
                 f" ip route add default via {home_ip.rsplit('.', 1)[0]}.254")


def demo(net, api: str) -> bool:
    ok = True
    step("every host reaches every other host (L2 in a segment, routed across)")
    loss = net.pingAll(timeout=2)
    ok &= loss == 0
    step("TCP across the hub (iperf, 2 s)")
    a, b = net.hosts[1], net.hosts[-2]
    b.cmd("iperf -s -p 5001 >/dev/null 2>&1 &")
    pid = b.cmd("echo $!").strip()
    try:
        deadline = time.monotonic() + 10
        while ":5001 " not in b.cmd("ss -ltnH") and time.monotonic() < deadline:
            time.sleep(0.1)
        print(a.cmd(f"iperf -c {b.IP()} -p 5001 -t 2").strip().splitlines()[-1])
    finally:
        b.cmd(f"kill {pid}")
    ok &= personality_demo(net, api)
    ok &= persona_demo(net, api)
    ok &= shard_demo(net, api, hubctl, step)
    ok &= shadow_demo(net, api, hubctl, step)
    step("REST tour: hubctl status")
    hubctl(api, "status")
    step("hubctl topology")
    hubctl(api, "topology")
    step("hubctl events --limit 15")
    hubctl(api, "events", "--limit", "15")
    status = json.loads(hubctl(api, "-o", "json", "status", show=False))
    dps = status["datapaths"] if isinstance(status, dict) else status
    ok &= all(d["flows"]["in_sync"] for d in dps)
    print(f"\nlab demo: {'OK' if ok else 'FAILED'}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/lab")
    p.add_argument("--demo", action="store_true", help="run the scripted scenario and exit")
    p.add_argument("--segments", type=int, default=2)
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--spares", type=int, default=2)
    p.add_argument("--of-port", type=int, default=6653)
    p.add_argument("--api", default="http://127.0.0.1:8080")
    args = p.parse_args(argv)

    net = build_net(segments=args.segments, hosts=args.hosts, cores=args.cores,
                    spares=args.spares, controller_port=args.of_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        net.start()
        wait_in_sync(args.api, [s.dpid for s in net.switches])
        print(f"lab: {len(net.switches)} switches and {len(net.hosts)} hosts under the hub "
              f"(API {args.api})", flush=True)
        if args.demo:
            return 0 if demo(net, args.api) else 1
        if sys.stdin.isatty():
            from mininet.cli import CLI
            CLI(net)
        else:
            print("lab: no terminal; the lab stays up until SIGINT/SIGTERM", flush=True)
            while not stop.wait(1.0):
                pass
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        net.stop()


if __name__ == "__main__":
    sys.exit(main())
