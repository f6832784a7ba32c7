"""`benchmarks/policy.py`'s rig: one netdev bridge, 54 network namespaces on veth pairs,
and the real hub-controller (through `policy_driver`, its timers) programming it.

    ports 1..N     members m1..mN   10.0.1.1..N      subnet seg1 (gateway 10.0.1.254)
    ports 201,202  db1, db2         10.0.2.1, .2     subnet db   (gateway 10.0.2.254)
    ports 211,212  ext1, ext2       198.51.100.1, .2 subnet ext  (gateway 198.51.100.254)

No Mininet: each host is a named namespace (`bpq<pid>h<port>`) with the inner end of
a veth, TX checksum offload off at both ends (TCP through a netdev bridge needs it),
IPv6 off, a default route to its subnet's gateway.  Every host is seeded in the
controller's store before it starts (a ``host`` record, as expiry.py does), so the
hub knows them all from the first flow and nothing needs to be discovered; the
fabric answers ARP for the gateways from flows.  The controller's configuration is
the harness's (tests/lab/harness.py `Controller`) at log level info, with the three
subnets.  `close` removes the bridge, the namespaces (their veths go with them)
and the controller (by PID), also after a start that failed half way.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import yaml

from benchmarks.labtools import sh
from benchmarks.persona_common import PYTHON, REPO, Api
from controller.core.interfaces import interface_id
from controller.core.topology import Host, dpid_str
from controller.store import open_store
from tests.lab.harness import Controller, wait_for

TAG = "bpq"                            # every name starts with it (scripts/clean bp)
SUBNETS = [{"id": "seg1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.254"},
           {"id": "db", "cidr": "10.0.2.0/24", "gateway": "10.0.2.254"},
           {"id": "ext", "cidr": "198.51.100.0/24", "gateway": "198.51.100.254"}]
PEERS = {"db1": (201, "10.0.2.1", "10.0.2.254"), "db2": (202, "10.0.2.2", "10.0.2.254"),
         "ext1": (211, "198.51.100.1", "198.51.100.254"),
         "ext2": (212, "198.51.100.2", "198.51.100.254")}
ENTRY = REPO / "benchmarks" / "policy.py"


class Node(NamedTuple):
    """One namespace plugged into the bridge."""
    name: str                # m1.., db1, ext1
    ns: str
    port: int
    ip: str
    gateway: str
    mac: str

    def interface(self, dpid: int) -> str:
        return interface_id(dpid, self.port)


def mac_of(port: int) -> str:
    return f"02:b9:00:00:{port >> 8:02x}:{port & 0xFF:02x}"


class DrivenController(Controller):
    """The harness's controller, started through `policy.py --controller-driver`."""

    def __init__(self, workdir: Path, driver_dir: Path, profile: bool) -> None:
        super().__init__(workdir, SUBNETS)
        self.driver_dir, self.profile = driver_dir, profile

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"controller-{self.starts}.log", "wb")
        cmd = [str(PYTHON), str(ENTRY), "--controller-driver", str(self.driver_dir)]
        if self.profile:
            cmd.append("--profile")
        cmd += ["--", "--config", str(self.config), "--of-port", str(self.of_port),
                "--api", f"127.0.0.1:{self.api_port}", "--db", str(self.db)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        wait_for("the hub API", lambda: self.get("/v1/health"), 30)


class Rig:
    def __init__(self, tmp: Path, members: int, log_level: str, profile: bool) -> None:
        self.tmp = tmp
        tag = f"{TAG}{os.getpid() % 1000}"
        self.bridge = f"{tag}br"
        self.dpid = 0xB9_0000_0000 + os.getpid()
        self.members = [self._node(tag, f"m{i}", i, f"10.0.1.{i}", "10.0.1.254")
                        for i in range(1, members + 1)]
        self.peers = {name: self._node(tag, name, port, ip, gw)
                      for name, (port, ip, gw) in PEERS.items()}
        self.made_ns: list[str] = []
        self.made_bridge = False
        driver, workdir = tmp / "driver", tmp / "controller"
        driver.mkdir(exist_ok=True)
        workdir.mkdir(exist_ok=True)
        self.ctl = DrivenController(workdir, driver, profile)
        self.ctl.config.write_text(yaml.safe_dump({"subnets": SUBNETS, "settle_seconds": 0.5,
                                                   "log_level": log_level}))
        self.rest: Api | None = None

    @staticmethod
    def _node(tag: str, name: str, port: int, ip: str, gateway: str) -> Node:
        return Node(name, f"{tag}h{port}", port, ip, gateway, mac_of(port))

    @property
    def nodes(self) -> list[Node]:
        return [*self.members, *self.peers.values()]

    # ------------------------------------------------------------ setup
    def open(self) -> None:
        sh(str(REPO / "scripts" / "ovs"), "start", timeout=120)
        leftovers()
        sh("ovs-vsctl", "--timeout=20", "add-br", self.bridge, "--", "set", "bridge", self.bridge,
           "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14",
           f"other-config:datapath-id={self.dpid:016x}", "other-config:disable-in-band=true")
        self.made_bridge = True
        ports: list[str] = []
        for node in self.nodes:
            self._plug(node)
            outer = f"{node.ns}o"
            ports += ["--", "add-port", self.bridge, outer, "--", "set", "interface", outer,
                      f"ofport_request={node.port}"]
        sh("ovs-vsctl", "--timeout=60", *ports)
        self._seed()
        self.ctl.start()
        sh("ovs-vsctl", "set-controller", self.bridge, f"tcp:127.0.0.1:{self.ctl.of_port}",
           "--", "set", "controller", self.bridge, "max_backoff=1000",
           "connection_mode=out-of-band")
        self.ctl.wait_in_sync([dpid_str(self.dpid)], timeout=60)
        self.rest = Api(self.ctl.api_port)

    def _plug(self, node: Node) -> None:
        outer, inner = f"{node.ns}o", f"{node.ns}i"
        sh("ip", "netns", "add", node.ns)
        self.made_ns.append(node.ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", node.ns)
        script = "; ".join([
            "set -e", "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 "
            "net.ipv6.conf.default.disable_ipv6=1",
            f"ip link set {inner} address {node.mac}",
            f"ip addr add {node.ip}/24 dev {inner}", f"ip link set {inner} up",
            "ip link set lo up", f"ethtool -K {inner} tx off >/dev/null",
            f"ip route add default via {node.gateway}"])
        sh("ip", "netns", "exec", node.ns, "sh", "-c", script)
        sh("sh", "-c", f"set -e; sysctl -q -w net.ipv6.conf.{outer}.disable_ipv6=1; "
                       f"ip link set {outer} up; ethtool -K {outer} tx off >/dev/null")

    def _seed(self) -> None:
        """Every host known before the controller starts (its interface record follows)."""
        store = open_store(str(self.ctl.db))
        try:
            with store.transaction():
                for s in SUBNETS:
                    store.put("subnet", s["id"], {"cidr": s["cidr"], "gateway": s["gateway"]})
                for n in self.nodes:
                    store.put("host", n.mac,
                              Host(n.mac, (n.ip,), self.dpid, n.port, time.time()).to_body())
        finally:
            store.close()

    # ------------------------------------------------------------ use
    def api(self, method: str, path: str, body=None, expect: int | None = 200):
        assert self.rest is not None
        status, data, _ = self.rest.call(method, path, body, expect=expect)
        return data

    def timed(self, method: str, path: str, body=None, expect: int | None = 200):
        """(answer, seconds) of one REST call."""
        assert self.rest is not None
        _, data, seconds = self.rest.call(method, path, body, expect=expect)
        return data, seconds

    def store(self):
        """The controller's store, opened beside it (SQLite WAL: the controller's writes
        and ours are serialized by SQLite; the controller caches no document)."""
        return open_store(str(self.ctl.db))

    def packet_ins(self) -> dict[str, float]:
        """The controller's packet-in counter (hub_packet_in_total), by table."""
        out: dict[str, float] = {}
        for line in self.ctl.get("/metrics").splitlines():
            if line.startswith("hub_packet_in_total{"):
                labels, value = line.rsplit(" ", 1)
                table = labels.split('table="', 1)[1].split('"', 1)[0] \
                    if 'table="' in labels else "?"
                out[table] = out.get(table, 0.0) + float(value)
        return out

    def datapath(self) -> dict:
        return self.api("GET", f"/v1/datapaths/{dpid_str(self.dpid)}")

    def in_sync(self) -> bool:
        return bool(self.datapath()["flows"]["in_sync"])

    def ofctl(self, *args: str) -> str:
        return sh("ovs-ofctl", "-O", "OpenFlow14", *args)

    def flow_count(self, match: str) -> int:
        out = self.ofctl("dump-aggregate", self.bridge, match)
        return int(out.split("flow_count=", 1)[1].split()[0])

    def last_event(self) -> int:
        """The journal's last sequence number."""
        items = self.api("GET", "/v1/events?newest=true&limit=1")["items"]
        return items[-1]["seq"] if items else 0

    def reconciles(self, after: int) -> list[dict]:
        """The switch's reconcile events (applied: add, delete, ms) after `after`."""
        return [e for e in self.ctl.events("reconcile", after=after)
                if e["message"] == "applied" and e["subject"] == dpid_str(self.dpid)]

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        try:
            if self.rest is not None:
                self.rest.close()
            self.ctl.stop()
        finally:
            if self.made_bridge:
                subprocess.run(["ovs-vsctl", "--timeout=20", "--if-exists", "del-br",
                                self.bridge], capture_output=True, timeout=120)
                self.made_bridge = False
            for ns in self.made_ns:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            for node in self.nodes:            # a veth whose namespace was never made
                subprocess.run(["ip", "link", "del", f"{node.ns}o"], capture_output=True,
                               timeout=30)
            self.made_ns = []


def leftovers() -> None:
    """What an earlier run of this benchmark that was killed left behind: its bridges and
    namespaces (names `bpq<n>...` only), removed before a new rig is built."""
    subprocess.run([str(REPO / "scripts" / "clean"), TAG], capture_output=True, timeout=120)
    for path in glob.glob(f"/var/run/netns/{TAG}*"):
        subprocess.run(["ip", "netns", "del", os.path.basename(path)], capture_output=True,
                       timeout=30)
    left = glob.glob(f"/var/run/netns/{TAG}*")
    if left:
        print(f"policy rig: namespaces still there: {left}", file=sys.stderr)
