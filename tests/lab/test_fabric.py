"""The base fabric with the real controller, a Mininet hub and real traffic."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.lab.harness import flow_durations, free_port, ping_loss, sh, wait_for

pytestmark = pytest.mark.lab
LAB_PREFIX = "lf"


def test_every_host_reaches_every_other_host(hub_lab):
    # Across segments (routed) and within them (L2), plus ext and the spare.
    loss = hub_lab.net.pingAll(timeout=2)
    assert loss == 0.0, hub_lab.controller.log()
    topo = hub_lab.controller.get("/v1/topology")
    assert len(topo["hosts"]) == len(hub_lab.net.hosts)
    assert len(topo["links"]) == hub_lab.segments + 1  # each attachment + the gateway bridge


def test_gateway_answers_ping(hub_lab):
    h = hub_lab.host("h1_1")
    assert ping_loss(h.cmd("ping -c 3 -i 0.2 -W 1 10.0.1.254")) == 0.0


def test_tcp_crosses_the_hub(hub_lab):
    src, dst = hub_lab.host("h1_1"), hub_lab.host("h2_2")
    dst.cmd("iperf -s -p 5001 >/dev/null 2>&1 &")
    server_pid = dst.cmd("echo $!").strip()
    try:
        wait_for("iperf server", lambda: "5001" in dst.cmd("ss -ltn"), 10)
        out = src.cmd(f"iperf -c {dst.IP()} -p 5001 -t 2 -y C")
        fields = out.strip().splitlines()[-1].split(",")
        bits_per_second = float(fields[-1])
        assert bits_per_second > 10e6, out
    finally:
        dst.cmd(f"kill {server_pid}")


def test_steady_state_traffic_causes_no_packet_in(hub_lab):
    net = hub_lab.net
    net.pingAll(timeout=2)  # everyone known, ARP caches warm
    before = hub_lab.controller.packet_ins()
    a, b, c = hub_lab.host("h1_1"), hub_lab.host("h2_1"), hub_lab.host("ext")
    for src, dst in ((a, b), (b, c), (c, a), (a, hub_lab.host("h1_2"))):
        assert ping_loss(src.cmd(f"ping -c 20 -i 0.05 -W 1 {dst.IP()}")) == 0.0
    b.cmd("iperf -s -p 5002 >/dev/null 2>&1 &")
    pid = b.cmd("echo $!").strip()
    try:
        wait_for("iperf server", lambda: "5002" in b.cmd("ss -ltn"), 10)
        a.cmd(f"iperf -c {b.IP()} -p 5002 -t 1")
    finally:
        b.cmd(f"kill {pid}")
    assert hub_lab.controller.packet_ins() == before


def test_controller_kill9_restart_loses_no_ping_and_keeps_flows(hub_lab):
    ctl = hub_lab.controller
    src, dst = hub_lab.host("h1_1"), hub_lab.host("h2_2")
    src.cmd(f"ping -c 1 -W 1 {dst.IP()}")
    bridge = hub_lab.switch("a1").name
    before = flow_durations(bridge)
    t_before = time.monotonic()
    events_before = ctl.events()[-1]["seq"]
    pinger = src.popen(["ping", "-i", "0.02", "-c", "250", "-W", "1", dst.IP()],
                       stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let the stream run before the crash
    ctl.kill9()
    time.sleep(0.5)  # the hub is down while traffic flows
    ctl.start()
    ctl.wait_in_sync(hub_lab.dpids)
    out, _ = pinger.communicate(timeout=30)
    assert ping_loss(out) == 0.0, out
    after = flow_durations(bridge)
    elapsed = time.monotonic() - t_before
    assert set(after) == set(before)
    for flow, duration in before.items():
        assert after[flow] >= duration + elapsed - 1.0, f"flow was reinstalled: {flow}"
    applied = [e for e in ctl.events("reconcile", after=events_before) if e["message"] == "applied"]
    assert applied == [], applied


def test_switch_reconnect_is_resynced_by_diff(hub_lab):
    ctl = hub_lab.controller
    sw = hub_lab.switch("a2")
    bridge, dpid = sw.name, sw.dpid
    host = hub_lab.host("h2_1")
    hub_lab.host("h1_1").cmd(f"ping -c 1 -W 1 {host.IP()}")
    target = next(line for line in sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", bridge).splitlines()
                  if "table=50" in line and f"dl_dst={host.MAC()}" in line)
    cookie = re.search(r"cookie=(0x[0-9a-f]+)", target).group(1)
    seq = ctl.events()[-1]["seq"]
    # Point the switch at a port nobody listens on: it loses the hub but keeps
    # its flows (removing every controller would make OVS flush them).
    sh("ovs-vsctl", "set-controller", bridge, f"tcp:127.0.0.1:{free_port()}")
    wait_for("the switch to disconnect", lambda: not ctl.datapaths()[dpid]["connected"], 15)
    durations = flow_durations(bridge)
    # While it is away: one hub flow lost, one stray hub flow, one operator flow.
    sh("ovs-ofctl", "-O", "OpenFlow14", "del-flows", "--strict", bridge,
       f"table=50,priority=100,dl_dst={host.MAC()}")
    sh("ovs-ofctl", "-O", "OpenFlow14", "add-flow", bridge,
       "cookie=0xb501000000000000,table=50,priority=5,dl_dst=02:99:99:99:99:99,actions=drop")
    sh("ovs-ofctl", "-O", "OpenFlow14", "add-flow", bridge,
       "cookie=0x1,table=50,priority=6,dl_dst=02:88:88:88:88:88,actions=drop")
    sh("ovs-vsctl", "set-controller", bridge, f"tcp:127.0.0.1:{ctl.of_port}")
    ctl.wait_in_sync([dpid])
    applied = wait_for("the resync", lambda: [e for e in ctl.events("reconcile", after=seq)
                                              if e["subject"] == dpid and e["message"] == "applied"])
    assert applied[-1]["data"]["add"] == 1 and applied[-1]["data"]["delete"] == 1, applied
    flows = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", bridge)
    assert f"dl_dst={host.MAC()}" in flows and cookie in flows
    assert "02:99:99:99:99:99" not in flows
    assert "cookie=0x1," in flows and "02:88:88:88:88:88" in flows
    after = flow_durations(bridge)
    kept = [f for f in durations if f in after and f"dl_dst={host.MAC()}" not in f]
    assert kept and all(after[f] >= durations[f] for f in kept)
    assert ping_loss(hub_lab.host("h1_1").cmd(f"ping -c 3 -i 0.2 -W 1 {host.IP()}")) == 0.0
