"""A second hub site for VPN labs: its own Open vSwitch, an underlay to it, a host behind it.

    hub site (the lab's Open vSwitch)              second site (network namespace vpsite)
    vpa1 --tunnel port (made by the hub)           vpr --tunnel ports (one per type)
                 | encapsulated                      |        --- vprh ~ vprhost: 172.16.5.10
    vpu1 198.18.71.1/24 --vpu1x ~~~~ vpu2x-- vpu2 198.18.71.2/24
         (underlay bridge, NORMAL)  veth (MTU 1600)   (underlay bridge, NORMAL)

Why a second Open vSwitch: the userspace datapath terminates a tunnel where
the route to the remote endpoint says, and in one ovs-vswitchd every endpoint
address is local, so a kernel "local" route (priority above any
`ovs/route/add`) would send the tunnel to the remote end's own bridge.  A
second ovsdb-server + ovs-vswitchd in their own network namespace (own
routes, own addresses, own datapath) are a real second endpoint; both run
as children of the test (stopped by PID) with their sockets and database in
the test's directory, and never touch the lab's Open vSwitch.

The second site stands for "another site" rather than being a second
datapath of the hub controller: a bridge with static flows (what comes out
of a tunnel goes to the host, with the host's MAC; what the host sends goes
into the tunnel in use), so the lab tests the hub's side of the VPN and
nothing else.  Its host routes everything via 172.16.5.254, whose MAC is the
hub's router MAC (static neighbour entry), as a hubshift site would answer.

Names start with "vp" (bridges, veths, namespaces vpsite and vprhost).
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.lab.harness import ROOT, wait_for

NS, HOST_NS = "vpsite", "vprhost"
HUB_UNDERLAY, SITE_UNDERLAY = "vpu1", "vpu2"
HUB_ENDPOINT, SITE_ENDPOINT = "198.18.71.1", "198.18.71.2"
UNDERLAY_PREFIX = 24
UNDERLAY_MTU = 1600          # room for the outer headers (vxlan/geneve 50 bytes, gre 38)
SITE_BRIDGE = "vpr"
HOST_IP, HOST_MAC, HOST_GATEWAY = "172.16.5.10", "02:00:ac:10:05:0a", "172.16.5.254"
REMOTE_PREFIX = "172.16.5.0/24"
HOST_PORT = 1
TUNNEL_OFPORT = {"vxlan": 10, "gre": 11, "geneve": 12}
NETCHECK = ROOT / "tests" / "lab" / "netcheck.py"


def sh(*cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def in_ns(ns: str, *cmd: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


class RemoteSite:
    def __init__(self, workdir: Path, router_mac: str) -> None:
        self.dir = workdir
        self.router_mac = router_mac
        self.db = f"unix:{workdir}/db.sock"
        self.procs: list[subprocess.Popen] = []
        self.tunnels: dict[str, int] = {}     # type -> key

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.remove_leftovers()
        sh("ip", "netns", "add", NS)
        sh("ip", "netns", "add", HOST_NS)
        in_ns(NS, "ip", "link", "set", "lo", "up")
        in_ns(HOST_NS, "ip", "link", "set", "lo", "up")
        self._start_ovs()
        self._underlay()
        self._site_bridge()
        self._host()
        # Both endpoints resolve each other (Open vSwitch snoops the ARP replies
        # into its tunnel neighbour table): no packet is lost to a first lookup.
        wait_for("underlay hub -> site", lambda: self._ping(None, SITE_ENDPOINT), 10)
        wait_for("underlay site -> hub", lambda: self._ping(NS, HUB_ENDPOINT), 10)
        self._serve()

    def _start_ovs(self) -> None:
        env = {**os.environ, "OVS_RUNDIR": str(self.dir), "OVS_LOGDIR": str(self.dir),
               "OVS_DBDIR": str(self.dir)}
        sh("ovsdb-tool", "create", f"{self.dir}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        for cmd in (["ovsdb-server", f"{self.dir}/conf.db", f"--remote=punix:{self.dir}/db.sock",
                     f"--unixctl={self.dir}/ovsdb.ctl", f"--log-file={self.dir}/ovsdb.log"],
                    ["ovs-vswitchd", self.db, f"--unixctl={self.dir}/vswitchd.ctl",
                     f"--log-file={self.dir}/vswitchd.log"]):
            out = open(self.dir / f"{cmd[0]}.out", "wb")
            self.procs.append(subprocess.Popen(["ip", "netns", "exec", NS, *cmd], env=env,
                                               stdout=out, stderr=subprocess.STDOUT))
            if cmd[0] == "ovsdb-server":
                wait_for("the second site's ovsdb-server", lambda: (self.dir / "db.sock").exists(),
                         10)
                self.vsctl("--no-wait", "init")
        wait_for("the second site's ovs-vswitchd", lambda: (self.dir / "vswitchd.ctl").exists(), 10)

    def _underlay(self) -> None:
        sh("ip", "link", "add", "vpu1x", "mtu", str(UNDERLAY_MTU), "type", "veth", "peer", "name",
           "vpu2x", "mtu", str(UNDERLAY_MTU))
        sh("ip", "link", "set", "vpu2x", "netns", NS)
        for ns, intf in ((None, "vpu1x"), (NS, "vpu2x")):
            run = sh if ns is None else (lambda *c, ns=ns: in_ns(ns, *c))
            run("ip", "link", "set", intf, "up")
            run("ethtool", "-K", intf, "tx", "off")
        sh("ovs-vsctl", "--timeout=10", "add-br", HUB_UNDERLAY, "--", "set", "bridge", HUB_UNDERLAY,
           "datapath_type=netdev", "fail_mode=standalone", "--", "add-port", HUB_UNDERLAY, "vpu1x",
           "--", "set", "interface", "vpu1x", f"mtu_request={UNDERLAY_MTU}")
        self.vsctl("add-br", SITE_UNDERLAY, "--", "set", "bridge", SITE_UNDERLAY,
                   "datapath_type=netdev", "fail_mode=standalone", "--", "add-port",
                   SITE_UNDERLAY, "vpu2x", "--", "set", "interface", "vpu2x",
                   f"mtu_request={UNDERLAY_MTU}")
        sh("ip", "addr", "add", f"{HUB_ENDPOINT}/{UNDERLAY_PREFIX}", "dev", HUB_UNDERLAY)
        sh("ip", "link", "set", HUB_UNDERLAY, "up")
        in_ns(NS, "ip", "addr", "add", f"{SITE_ENDPOINT}/{UNDERLAY_PREFIX}", "dev", SITE_UNDERLAY)
        in_ns(NS, "ip", "link", "set", SITE_UNDERLAY, "up")

    def _site_bridge(self) -> None:
        self.vsctl("add-br", SITE_BRIDGE, "--", "set", "bridge", SITE_BRIDGE,
                   "datapath_type=netdev", "fail_mode=secure")

    def _host(self) -> None:
        sh("ip", "link", "add", "vprh", "type", "veth", "peer", "name", "vprhi")
        sh("ip", "link", "set", "vprh", "netns", NS)
        sh("ip", "link", "set", "vprhi", "netns", HOST_NS)
        in_ns(NS, "ip", "link", "set", "vprh", "up")
        in_ns(NS, "ethtool", "-K", "vprh", "tx", "off")
        for cmd in (["ip", "link", "set", "vprhi", "address", HOST_MAC],
                    ["ip", "addr", "add", f"{HOST_IP}/24", "dev", "vprhi"],
                    ["ip", "link", "set", "vprhi", "up"],
                    ["ethtool", "-K", "vprhi", "tx", "off"],
                    ["ip", "route", "add", "default", "via", HOST_GATEWAY],
                    ["ip", "neigh", "replace", HOST_GATEWAY, "lladdr", self.router_mac,
                     "dev", "vprhi"]):
            in_ns(HOST_NS, *cmd)
        self.vsctl("add-port", SITE_BRIDGE, "vprh", "--", "set", "interface", "vprh",
                   f"ofport_request={HOST_PORT}")

    def _serve(self) -> None:
        out = open(self.dir / "netcheck.out", "wb")
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", HOST_NS, "python3", str(NETCHECK), "serve", "8080",
             "--name", "remote"], stdout=out, stderr=subprocess.STDOUT))
        wait_for("the remote host's server", lambda: ":8080" in in_ns(HOST_NS, "ss", "-ltn"), 10)

    def _ping(self, ns: str | None, ip: str) -> bool:
        cmd = ["ping", "-c", "1", "-W", "1", ip]
        return (sh(*cmd, check=False) if ns is None else in_ns(ns, *cmd, check=False)).find(
            " 0% packet loss") >= 0

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()
        self.remove_leftovers()

    @staticmethod
    def remove_leftovers() -> None:
        """What an earlier run left: its namespaces (and their processes, by PID), links, bridges."""
        for ns in (NS, HOST_NS):
            if ns in sh("ip", "netns", "list").split():
                for pid in sh("ip", "netns", "pids", ns).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                sh("ip", "netns", "del", ns, check=False)
        sh("ovs-vsctl", "--timeout=10", "--if-exists", "del-br", HUB_UNDERLAY, check=False)
        for link in ("vpu1x", "vprh", "vprhi"):
            sh("ip", "link", "del", link, check=False)

    # ----------------------------------------------------------------- tools
    def vsctl(self, *args: str) -> str:
        return sh("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args)

    def ofctl(self, *args: str) -> str:
        return sh("ovs-ofctl", "-O", "OpenFlow13", *args)

    @property
    def mgmt(self) -> str:
        return f"unix:{self.dir}/{SITE_BRIDGE}.mgmt"

    def host(self, *cmd: str, check: bool = False) -> str:
        return in_ns(HOST_NS, *cmd, check=check)

    # --------------------------------------------------------------- tunnels
    def use(self, kind: str, key: int) -> None:
        """A tunnel of `kind` back to the hub site exists; the host's traffic goes into it."""
        ofport = TUNNEL_OFPORT[kind]
        name = f"vprt{kind[0]}"
        if self.tunnels.get(kind) != key:
            self.vsctl("--may-exist", "add-port", SITE_BRIDGE, name, "--", "set", "interface",
                       name, f"type={kind}", f"options:remote_ip={HUB_ENDPOINT}",
                       f"options:key={key}", f"ofport_request={ofport}")
            self.tunnels[kind] = key
            wait_for(f"site tunnel port {name}", lambda: self.vsctl(
                "get", "interface", name, "ofport").strip() == str(ofport), 10)
        # From any tunnel: routed to the host.  From the host: into the tunnel in use.
        self.ofctl("add-flow", self.mgmt,
                   f"table=0,priority=100,in_port={ofport},ip,actions=mod_dl_src:{self.router_mac},"
                   f"mod_dl_dst:{HOST_MAC},dec_ttl,output:{HOST_PORT}")
        self.ofctl("add-flow", self.mgmt,
                   f"table=0,priority=100,in_port={HOST_PORT},ip,actions=output:{ofport}")

    def from_tunnel(self, kind: str) -> int:
        """Packets the site received through its tunnel of `kind` (its flow's counter).

        Flow counters of cached flows are updated by the revalidators; waiting
        for one revalidation first makes the count include every packet so far.
        """
        sh("ovs-appctl", "-t", f"{self.dir}/vswitchd.ctl", "revalidator/wait")
        out = self.ofctl("dump-flows", self.mgmt, f"in_port={TUNNEL_OFPORT[kind]},ip")
        total = 0
        for line in out.splitlines():
            for field in line.split(","):
                if field.strip().startswith("n_packets="):
                    total += int(field.split("=")[1])
        return total
