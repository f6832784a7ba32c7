"""Trace tier: a real Open vSwitch bridge (userspace datapath, no hosts) and a
real hub-controller process programming it.

Packets are never sent: `ovs-appctl ofproto/trace` walks the installed flows
and reports what the datapath would do.  Everything created here has a unique
name and is removed by that name at the end; the controller is stopped by PID.

Needs root and Open vSwitch; without them the tier fails (it never skips).
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import yaml

from controller.store import open_store
from controller.core.topology import Host, Subnet, dpid_str

REPO = Path(__file__).resolve().parents[2]
OVS_SCRIPT = REPO / "scripts" / "ovs"
SYNC_TIMEOUT = 30.0

_names = itertools.count(1)


# --------------------------------------------------------------------- helpers
def run(*cmd: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05, diagnose: Callable[[], str] | None = None):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # keep polling; report the last error on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{diagnose()}" if diagnose else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_flow_text(text: str) -> dict[str, str]:
    """`arp,in_port=1,dl_src=..` -> {"arp": "", "in_port": "1", "dl_src": ".."}."""
    out = {}
    for token in split_top(text):
        key, _, value = token.partition("=")
        out[key] = value
    return out


# ----------------------------------------------------------------------- trace
@dataclass
class Trace:
    """The parsed answer of `ovs-appctl ofproto/trace`."""
    text: str
    flow: dict[str, str]
    final_flow: dict[str, str]
    megaflow: str
    datapath_actions: str
    dp_to_ofport: dict[int, int]

    @property
    def actions(self) -> list[str]:
        return split_top(self.datapath_actions)

    @property
    def out_ports(self) -> list[int]:
        """OpenFlow port numbers the packet leaves by, in order."""
        return [self.dp_to_ofport.get(int(a), -int(a)) for a in self.actions if a.isdigit()]

    @property
    def to_controller(self) -> bool:
        return any(a.startswith("userspace(") and "controller(" in a for a in self.actions)

    @property
    def dropped(self) -> bool:
        return self.datapath_actions.strip() == "drop"

    def __str__(self) -> str:
        return self.text


def _line(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise AssertionError(f"no {prefix!r} line in trace:\n{text}")


# ---------------------------------------------------------------------- bridge
@dataclass
class Bridge:
    name: str
    dpid: int
    ports: dict[int, str]  # ofport -> interface name

    def ofctl(self, *args: str, input: str | None = None) -> str:
        return run("ovs-ofctl", "-O", "OpenFlow14", *args, input=input)

    def dump_flows(self) -> list[str]:
        """Installed flows, one normalized line each, sorted."""
        out = self.ofctl("dump-flows", self.name, "--no-stats")
        lines = [" ".join(line.split()) for line in out.splitlines()]
        return sorted(l for l in lines if l and not l.startswith(("OFPST_FLOW", "NXST_FLOW")))

    def add_flows(self, text: str) -> None:
        self.ofctl("--bundle", "add-flows", self.name, "-", input=text)

    def dp_ports(self) -> dict[int, int]:
        """Datapath port number -> OpenFlow port number, for this bridge."""
        out = run("ovs-appctl", "dpif/show")
        mapping, inside = {}, False
        for line in out.splitlines():
            if re.match(r"^  \S+:$", line):
                inside = line.strip()[:-1] == self.name
            elif inside:
                m = re.match(r"^\s+(\S+) (\d+)/(\d+):", line)
                if m:
                    mapping[int(m.group(3))] = int(m.group(2))
        return mapping

    def trace(self, packet: str, *options: str) -> Trace:
        """`options`: more arguments of ofproto/trace, e.g. "--ct-next", "trk,new"."""
        text = run("ovs-appctl", "ofproto/trace", self.name, packet, *options)
        flow = parse_flow_text(_line(text, "Flow:"))
        final = _line(text, "Final flow:")
        return Trace(text=text, flow=flow,
                     final_flow=dict(flow) if final == "unchanged" else parse_flow_text(final),
                     megaflow=_line(text, "Megaflow:"),
                     datapath_actions=_line(text, "Datapath actions:"),
                     dp_to_ofport=self.dp_ports())


@pytest.fixture(scope="session")
def ovs() -> None:
    """Open vSwitch answers (started if needed).  Fails, never skips, without root."""
    if os.geteuid() != 0:
        pytest.fail("the trace tier needs root (it creates Open vSwitch bridges); "
                    "run it as root: sudo .venv/bin/pytest -m trace tests/trace")
    if not shutil.which("ovs-vsctl") or not shutil.which("ovs-appctl"):
        pytest.fail("the trace tier needs Open vSwitch (ovs-vsctl, ovs-ofctl, ovs-appctl) "
                    "on PATH; see scripts/install")
    proc = subprocess.run([str(OVS_SCRIPT), "start"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"scripts/ovs start failed: {proc.stderr.strip() or proc.stdout.strip()}")


@pytest.fixture(scope="module")
def make_bridge(ovs) -> Iterator[Callable[..., Bridge]]:
    """Factory: a netdev bridge with internal ports at fixed ofports, removed afterwards.

    Bridges are in fail-mode secure (no flows but the ones loaded), OpenFlow
    1.3/1.4, in-band control off, and their ports stay administratively down,
    so the host kernel never sends anything through them.
    """
    created: list[str] = []

    def make(ports: int | list[int] = 4, dpid: int | None = None) -> Bridge:
        n = next(_names)
        name = f"tr{os.getpid() % 100000}x{n}"
        dpid = dpid if dpid is not None else (0xB5 << 40) | (os.getpid() << 8) | n
        ofports = list(range(1, ports + 1)) if isinstance(ports, int) else list(ports)
        cmd = ["ovs-vsctl", "--timeout=20", "add-br", name,
               "--", "set", "bridge", name, "datapath_type=netdev", "fail_mode=secure",
               "protocols=OpenFlow13,OpenFlow14",
               f"other-config:datapath-id={dpid:016x}",
               "other-config:disable-in-band=true"]
        names = {}
        for p in ofports:
            port = f"{name}p{p}"
            names[p] = port
            cmd += ["--", "add-port", name, port,
                    "--", "set", "interface", port, "type=internal", f"ofport_request={p}"]
        created.append(name)
        run(*cmd)
        bridge = Bridge(name, dpid, names)
        actual = run("ovs-vsctl", "get", "bridge", name, "datapath_id").strip().strip('"')
        assert int(actual, 16) == dpid, f"{name}: datapath id {actual}, wanted {dpid:016x}"
        for p, port in names.items():
            got = run("ovs-vsctl", "get", "interface", port, "ofport").strip()
            assert got == str(p), f"{port}: ofport {got}, wanted {p}"
        return bridge

    yield make
    for name in reversed(created):
        run("ovs-vsctl", "--timeout=20", "--if-exists", "del-br", name, check=False)


# ------------------------------------------------------------------ controller
@dataclass
class Controller:
    proc: subprocess.Popen
    api: str
    of_port: int
    db: str
    log: Path
    subnets: tuple[Subnet, ...] = ()
    hosts: tuple[Host, ...] = ()
    bridges: list[Bridge] = field(default_factory=list)

    def get(self, path: str):
        resp = httpx.get(f"{self.api}{path}", timeout=5)
        resp.raise_for_status()
        return resp.json()

    def datapath(self, dpid: int) -> dict | None:
        return next((d for d in self.get("/v1/datapaths") if d["id"] == dpid_str(dpid)), None)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "hub-controller log (tail):\n" + "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def attach(self, bridge: Bridge) -> dict:
        """Point the bridge at this controller; wait until its flows are in sync."""
        run("ovs-vsctl", "set-controller", bridge.name, f"tcp:127.0.0.1:{self.of_port}",
            "--", "set", "controller", bridge.name, "max_backoff=1000",
            "connection_mode=out-of-band")
        self.bridges.append(bridge)
        return self.wait_in_sync(bridge)

    def wait_in_sync(self, bridge: Bridge, timeout: float = SYNC_TIMEOUT) -> dict:
        def synced():
            if not self.alive():
                pytest.fail(f"hub-controller exited ({self.proc.returncode})\n{self.log_tail()}")
            dp = self.datapath(bridge.dpid)
            if dp and dp["connected"] and dp["flows"]["in_sync"] and dp["flows"]["desired"] \
                    and dp["flows"]["desired"] == dp["flows"]["installed"]:
                return dp
            return None
        return wait_until(synced, timeout, f"{bridge.name} in sync (GET /v1/datapaths)",
                          diagnose=self.log_tail)

    def stop(self) -> None:
        for bridge in self.bridges:
            run("ovs-vsctl", "--if-exists", "del-controller", bridge.name, check=False)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def hub_controller_bin() -> str:
    local = Path(sys.executable).parent / "hub-controller"
    if local.exists():
        return str(local)
    found = shutil.which("hub-controller") or str(REPO / ".venv" / "bin" / "hub-controller")
    if not Path(found).exists():
        pytest.fail("hub-controller is not installed (pip install -e . in the venv)")
    return found


@pytest.fixture(scope="module")
def start_controller(tmp_path_factory, ovs) -> Iterator[Callable[..., Controller]]:
    """Factory: a real hub-controller process with a seeded store, stopped by PID afterwards.

    `subnets` are {id, cidr, gateway} dicts (given in the config file and seeded
    into the store), `hosts` are `Host` records written to the store before the
    process starts, exactly as the hub persists discovered hosts.
    """
    started: list[Controller] = []

    def start(subnets: list[dict], hosts: list[Host], settle: float = 0.2) -> Controller:
        tmp = tmp_path_factory.mktemp("hub")
        db = str(tmp / "hub.db")
        store = open_store(db)
        try:
            with store.transaction():
                for s in subnets:
                    store.put("subnet", s["id"], {"cidr": s["cidr"], "gateway": s["gateway"]})
                for h in hosts:
                    store.put("host", h.mac, h.to_body())
            seeded_subnets = tuple(Subnet.from_body(d.id, d.body, d.revision)
                                   for d in store.list("subnet"))
            seeded_hosts = tuple(Host.from_body(d.body) for d in store.list("host"))
        finally:
            store.close()
        config = tmp / "hub.yaml"
        config.write_text(yaml.safe_dump({"settle_seconds": settle, "log_level": "info",
                                          "subnets": subnets}))
        of_port, api_port = free_port(), free_port()
        while api_port == of_port:
            api_port = free_port()
        log = tmp / "hub-controller.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [hub_controller_bin(), "--config", str(config), "--of-port", str(of_port),
                 "--api", f"127.0.0.1:{api_port}", "--db", db],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
        ctl = Controller(proc, f"http://127.0.0.1:{api_port}", of_port, db, log,
                         seeded_subnets, seeded_hosts)
        started.append(ctl)

        def api_up():
            if not ctl.alive():
                pytest.fail(f"hub-controller exited ({proc.returncode})\n{ctl.log_tail()}")
            return ctl.get("/v1/health")
        wait_until(api_up, SYNC_TIMEOUT, "the hub-controller API", diagnose=ctl.log_tail)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()
