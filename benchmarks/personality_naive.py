"""The naive side of benchmarks/personality_switch.py: delete-then-add on a plain bridge.

A netdev bridge built here (no controller) with two network namespaces on veth
pairs (TX offload off, static ARP): sender on port 1, sink on port 2.  A
5-flow base stands in for the hub's fabric; the personality flows are what the
hub compiles for (bridge, port 2, sink MAC), rendered by
`controller.pipeline.ofctl.render_flows`; a switch is `del-flows` of the old
personality's cookie, then `add-flows` of the new one: two commands, no bundle.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from benchmarks.labtools import Procs, ofctl, sh
from benchmarks.udpstream import stream_once
from controller.features.personality.compile import (Interface, PersonalityPolicy,
                                                     compile_personality, interface_zone)
from controller.pipeline.ofctl import render_flows

BASE_COOKIE = 0x1
pc = time.perf_counter


class NaiveSide:
    # Not the lab's addresses: every netdev bridge shares one datapath and so one conntrack
    # table, and the naive sink's zones (port 2) are the lab sink's too.
    SENDER_IP, SINK_IP = "10.9.0.1", "10.9.0.2"
    SENDER_MAC, SINK_MAC = "02:b9:00:00:00:01", "02:b9:00:00:00:02"
    BYPASS_PORT = 3

    def __init__(self, tmp: Path, procs: Procs, args) -> None:
        self.args, self.procs, self.tmp = args, procs, tmp
        self.name = "naive"
        self.sink_ip, self.sender_ip = self.SINK_IP, self.SENDER_IP
        tag = f"bpx{os.getpid()}"
        self.br = tag
        self.ns = {"s": f"{tag}s", "r": f"{tag}r"}
        self.created_br = False
        self.created_ns: list[str] = []
        self.files: dict[str, Path] = {}
        self.cookies: dict[str, int] = {}
        self.nflows: dict[str, int] = {}

    def create(self) -> None:
        sh("ovs-vsctl", "--timeout=20", "add-br", self.br, "--", "set", "bridge", self.br,
           "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14",
           "other-config:disable-in-band=true")
        self.created_br = True
        self.dpid = int(sh("ovs-vsctl", "get", "bridge", self.br,
                           "datapath_id").strip().strip('"'), 16)
        for port, (role, ip, mac, peer_ip, peer_mac) in enumerate((
                ("s", self.SENDER_IP, self.SENDER_MAC, self.SINK_IP, self.SINK_MAC),
                ("r", self.SINK_IP, self.SINK_MAC, self.SENDER_IP, self.SENDER_MAC)), start=1):
            ns, outer, inner = self.ns[role], f"{self.br}{role}o", f"{self.br}{role}i"
            sh("ip", "netns", "add", ns)
            self.created_ns.append(ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "up")
            sh("ethtool", "-K", outer, "tx", "off")
            nx = ("ip", "netns", "exec", ns)
            sh(*nx, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh(*nx, "ip", "link", "set", inner, "address", mac)
            sh(*nx, "ip", "addr", "add", f"{ip}/24", "dev", inner)
            sh(*nx, "ip", "link", "set", inner, "up")
            sh(*nx, "ip", "link", "set", "lo", "up")
            sh(*nx, "ethtool", "-K", inner, "tx", "off")
            sh(*nx, "ip", "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", inner,
               "nud", "permanent")
            sh("ovs-vsctl", "--timeout=20", "add-port", self.br, outer, "--", "set",
               "interface", outer, f"ofport_request={port}")
        # The bypass counter: the base's plain forwarding to the sink is copied to this
        # internal port, whose tx counter (the netdev's own, exact) counts those packets.
        tap = f"{self.br}m"
        sh("ovs-vsctl", "--timeout=20", "add-port", self.br, tap, "--", "set", "interface",
           tap, "type=internal", f"ofport_request={self.BYPASS_PORT}")
        sh("sysctl", "-q", "-w", f"net.ipv6.conf.{tap}.disable_ipv6=1")
        sh("ip", "link", "set", tap, "up")

    def destroy(self) -> None:
        if self.created_br:
            subprocess.run(["ovs-vsctl", "--timeout=20", "--if-exists", "del-br", self.br],
                           capture_output=True, timeout=120)
            self.created_br = False
        for ns in self.created_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created_ns = []
        for role in self.ns:   # veths die with their namespace; this is only a safety net
            subprocess.run(["ip", "link", "del", f"{self.br}{role}o"], capture_output=True,
                           timeout=30)

    def setup(self, personalities: dict[str, dict]) -> None:
        """The base flows, then the first of `personalities` (name -> body), in one bundle."""
        base = [
            "table=0,priority=0,cookie=0x1,actions=goto_table:50",
            "table=5,priority=0,cookie=0x1,actions=goto_table:50",
            "table=10,priority=0,cookie=0x1,actions=goto_table:50",
            f"table=50,priority=100,cookie=0x1,dl_dst={self.SENDER_MAC},actions=output:1",
            f"table=50,priority=100,cookie=0x1,dl_dst={self.SINK_MAC},"
            f"actions=output:2,output:{self.BYPASS_PORT}",
        ]
        self.nbase = len(base)
        iface = Interface(self.dpid, 2, self.SINK_MAC)
        for epoch, (name, body) in enumerate(personalities.items()):
            policy = PersonalityPolicy.from_body(f"bench-{name}", {"name": name, **body}, 1)
            flows = compile_personality(iface, policy, interface_zone(iface, epoch))
            path = self.tmp / f"naive-{name}.flows"
            path.write_text(render_flows(flows))
            self.files[name], self.cookies[name] = path, policy.cookie
            self.nflows[name] = len(flows)
        first = next(iter(personalities))
        path = self.tmp / f"naive-base+{first}.flows"
        path.write_text("\n".join(base) + "\n" + self.files[first].read_text())
        ofctl("--bundle", "add-flows", self.br, str(path))
        self.current = first
        self.expect(first)

    def bypass_packets(self) -> int:
        """Packets the base's plain l2 flow delivered to the sink (copies sent to port 3)."""
        out = ofctl("dump-ports", self.br, str(self.BYPASS_PORT))
        m = re.search(r"tx pkts=(\d+), bytes=\d+, drop=(\d+)", out)
        if not m:
            raise RuntimeError(f"unexpected dump-ports output: {out!r}")
        return int(m.group(1)) + int(m.group(2))

    def count(self, cookie: int) -> int:
        out = ofctl("dump-aggregate", self.br, f"cookie=0x{cookie:x}/-1")
        return int(re.search(r"flow_count=(\d+)", out).group(1))

    def expect(self, name: str) -> None:
        got, want = self.count(self.cookies[name]), self.nflows[name]
        base = self.count(BASE_COOKIE)
        if got != want or base != self.nbase:
            raise RuntimeError(f"naive bridge: {got} flows of {name} (want {want}), "
                               f"{base} base flows (want {self.nbase})")

    # what stream_once needs of a side
    def sink_popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns["r"], *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def sender_popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns["s"], *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def sink_run(self, cmd: list[str]) -> str:
        return sh("ip", "netns", "exec", self.ns["r"], *cmd)

    def sender_run(self, cmd: list[str]) -> str:
        return sh("ip", "netns", "exec", self.ns["s"], *cmd)

    def switch(self, to: str) -> dict:
        old = self.current
        t0 = pc()
        ofctl("del-flows", self.br, f"cookie=0x{self.cookies[old]:x}/-1")
        t1 = pc()
        ofctl("add-flows", self.br, str(self.files[to]))
        t2 = pc()
        self.current = to
        return {"del_ms": (t1 - t0) * 1000, "add_ms": (t2 - t1) * 1000,
                "naive_ms": (t2 - t0) * 1000}

    def run(self, to: str | None) -> dict:
        before = self.bypass_packets()
        info = stream_once(self, self.procs, self.args, (lambda: self.switch(to)) if to else None)
        info["bypass"] = self.bypass_packets() - before
        if to:
            self.expect(to)
        return info
