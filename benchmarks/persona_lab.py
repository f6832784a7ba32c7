"""The lab part of ``benchmarks/personas.py``: a hub lab, the controller, the timed phases.

``Bench`` drives one small hub lab (tests/lab/conftest.py ``start_lab``) and the
hub-controller (through ``persona_driver``); ``measure`` runs the three phases
(1 persona, N, back to 1) and returns a ``LabRun``, which ``persona_report``
prints.  Needs root, Open vSwitch and Mininet.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.labtools import TmpFactory, ofctl, sh
from benchmarks.persona_common import (PYTHON, REPO, Api, cpu_seconds, filler_body, fmt_bps,
                                       member_body, pc)

ENTRY = REPO / "benchmarks" / "personas.py"
LAB_PREFIX = "bz"
EXT = "198.51.100.1"
MEMBER_HOST, FABRIC_HOST = "h1_1", "h1_2"
MEMBER_IP = "10.100.0.5"
OVS_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")


class Bench:
    def __init__(self, tmp: Path, args) -> None:
        from mininet.log import setLogLevel
        setLogLevel("warning")
        self.tmp, self.args = tmp, args
        self.lab = None
        self.pids: list[tuple[object, str]] = []
        self.drv = tmp / "driver"
        self.drv.mkdir()
        self.created: list[str] = []
        self.member_id: str | None = None

    # ------------------------------------------------------------- lab
    def start(self) -> None:
        import yaml

        from tests.lab.conftest import start_lab
        from tests.lab.harness import wait_for
        self.lab = start_lab(TmpFactory(self.tmp), LAB_PREFIX, segments=1, hosts=2, spares=0)
        self.ctl = self.lab.controller
        # Restart on the same store and ports through the driver (timers, optional
        # cProfile) at the requested log level (the harness starts it at debug).
        config = yaml.safe_load(self.ctl.config.read_text())
        config["log_level"] = self.args.log_level
        self.ctl.stop()
        self.ctl.config.write_text(yaml.safe_dump(config))
        self.ctl.start = self._start_controller
        self.ctl.start()
        self.ctl.wait_in_sync(self.lab.dpids)
        self.api = Api(self.ctl.api_port)
        loss = self.lab.net.pingAll(timeout=2)
        if loss:
            print(f"  pingAll lost {loss}% (hosts may not all be known yet)", flush=True)
        ext = self.lab.host("ext")
        self.bg(ext, "iperf3 -s")
        wait_for("iperf3 server", lambda: ":5201" in ext.cmd("ss -ltn"), 10)
        self.bridges = {s.dpid: s.name for s in self.lab.net.switches}

    def _start_controller(self) -> None:
        from tests.lab.harness import wait_for
        ctl = self.ctl
        ctl.starts += 1
        log = open(ctl.workdir / f"controller-{ctl.starts}.log", "wb")
        cmd = [str(PYTHON), str(ENTRY), "--controller-driver", str(self.drv)]
        if self.args.profile:
            cmd.append("--profile")
        cmd += ["--", "--config", str(ctl.config), "--of-port", str(ctl.of_port),
                "--api", f"127.0.0.1:{ctl.api_port}", "--db", str(ctl.db)]
        ctl.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        wait_for("the hub API", lambda: ctl.get("/v1/health"))

    def bg(self, host, cmd: str) -> None:
        host.cmd(f"{cmd} >/dev/null 2>&1 &")
        self.pids.append((host, host.cmd("echo $!").strip()))

    def stop(self) -> None:
        for host, pid in self.pids:
            if pid.isdigit():
                host.cmd(f"kill {pid}")
        self.pids = []
        if getattr(self, "api", None) is not None:
            self.api.close()
        if self.lab is not None:
            from tests.lab.conftest import stop_lab
            stop_lab(self.lab)
            self.lab = None

    # ---------------------------------------------------------- personas
    def create_member(self) -> None:
        from tests.lab.harness import wait_for
        expires = time.time() + self.args.lifetime
        _, p, _ = self.api.call("POST", "/v1/personas", member_body(expires), expect=201)
        self.member_id = p["id"]
        mac = self.lab.host(MEMBER_HOST).MAC()
        iid = wait_for(f"interface of {MEMBER_HOST}", lambda: next(
            (i["id"] for i in self.api.call("GET", "/v1/interfaces")[1] if i["mac"] == mac), None))
        self.api.call("POST", f"/v1/personas/{p['id']}/attachments",
                      {"interface_id": iid, "ip": MEMBER_IP}, expect=201)
        h = self.lab.host(MEMBER_HOST)
        intf = h.defaultIntf()
        h.cmd(f"ip addr flush dev {intf}; ip neigh flush dev {intf}")
        h.cmd(f"ip addr add {MEMBER_IP}/24 dev {intf}")
        h.cmd(f"ip route add default via {p['gateway']}")
        self.wait_synced([self.member_id], 60)
        wait_for("iperf3 through the persona",
                 lambda: self.iperf(MEMBER_HOST, 1, retry=False), 30, 0.5)

    def create_many(self, n: int) -> dict:
        """POST n-1 personas one after another; returns the timings."""
        expires = time.time() + self.args.lifetime
        latencies: list[float] = []
        t0 = pc()
        for i in range(1, n):
            _, p, took = self.api.call("POST", "/v1/personas", filler_body(i, expires),
                                       expect=201)
            latencies.append(took)
            self.created.append(p["id"])
            if i % max(1, n // 10) == 0:
                print(f"  created {i:,}/{n - 1:,} ({i / (pc() - t0):.1f}/s, last POST "
                      f"{took * 1000:.1f} ms)", flush=True)
        wall = pc() - t0
        return {"latencies": latencies, "wall": wall}

    def delete_many(self) -> dict:
        latencies = []
        t0 = pc()
        for i, id in enumerate(self.created, 1):
            _, _, took = self.api.call("DELETE", f"/v1/personas/{id}", expect=200)
            latencies.append(took)
            if i % max(1, len(self.created) // 10) == 0:
                print(f"  deleted {i:,}/{len(self.created):,} ({i / (pc() - t0):.1f}/s)",
                      flush=True)
        wall = pc() - t0
        self.created = []
        return {"latencies": latencies, "wall": wall}

    def persona_flows(self, bridge: str) -> int:
        from controller.pipeline import cookies
        cookie, mask = cookies.feature_mask(cookies.Feature.PERSONA)
        out = ofctl("dump-aggregate", bridge, f"cookie=0x{cookie:x}/0x{mask:x}")
        return int(re.search(r"flow_count=(\d+)", out).group(1))

    def all_flows(self, bridge: str) -> int:
        out = ofctl("dump-aggregate", bridge)
        return int(re.search(r"flow_count=(\d+)", out).group(1))

    def has_persona(self, bridge: str, id: str) -> bool:
        from controller.features.persona.compile import persona_cookie
        return "cookie=" in ofctl("dump-flows", bridge, f"cookie=0x{persona_cookie(id):x}/-1")

    def in_sync(self) -> dict | None:
        _, dps, _ = self.api.call("GET", "/v1/datapaths")
        dps = {d["id"]: d for d in dps}
        ok = all(d in dps and dps[d]["connected"] and dps[d]["flows"]["in_sync"]
                 and dps[d]["flows"]["desired"] == dps[d]["flows"]["installed"]
                 for d in self.lab.dpids)
        return dps if ok else None

    def wait_synced(self, present: list[str], timeout: float,
                    persona_flows: dict[str, int] | None = None) -> float:
        """Seconds until every bridge holds the flows of `present` (the route of each
        persona is on every switch) or exactly `persona_flows` persona flows, and the
        hub reports every datapath in sync."""
        t0 = pc()
        deadline = t0 + timeout
        while True:
            done = True
            for dpid, br in self.bridges.items():
                if persona_flows is not None and self.persona_flows(br) != persona_flows[br]:
                    done = False
                    break
                if any(not self.has_persona(br, id) for id in present):
                    done = False
                    break
            if done and self.in_sync():
                return pc() - t0
            if pc() > deadline:
                raise RuntimeError(f"not in sync after {timeout:g} s")
            time.sleep(0.2)

    def meters(self, bridge: str) -> int:
        return len(re.findall(r"meter=\d+", ofctl("dump-meters", bridge)))

    # ----------------------------------------------------------- traffic
    def iperf(self, host_name: str, seconds: float, retry: bool = True) -> float | None:
        """bits/s received by ext from one iperf3 run (None when it failed)."""
        h = self.lab.host(host_name)
        for _ in range(3 if retry else 1):
            out = h.cmd(f"iperf3 -c {EXT} -t {seconds:g} -O 1 -J")
            try:
                data = json.loads(out[out.index("{"):])
                return float(data["end"]["sum_received"]["bits_per_second"])
            except (ValueError, KeyError):
                time.sleep(1)
        return None

    def throughput(self, label: str) -> dict:
        persona, fabric = [], []
        for r in range(self.args.runs):
            persona.append(self.iperf(MEMBER_HOST, self.args.seconds))
            fabric.append(self.iperf(FABRIC_HOST, self.args.seconds))
            print(f"  {label} run {r + 1}: persona {fmt_bps(persona[-1])}, "
                  f"fabric {fmt_bps(fabric[-1])}", flush=True)
        return {"persona": persona, "fabric": fabric}

    # ------------------------------------------------------------- costs
    def timings(self, since: float | None = None) -> list[dict]:
        path = self.drv / "timings.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if since is None or r["at"] >= since]

    def idle_cost(self, label: str) -> dict:
        """CPU of the controller and of ovs-vswitchd, and the polls, over a quiet window."""
        ovs_pid = int(OVS_PIDFILE.read_text().strip())
        pid = self.ctl.proc.pid
        time.sleep(1.0)
        start = time.time()
        c0, o0, t0 = cpu_seconds(pid), cpu_seconds(ovs_pid), pc()
        time.sleep(self.args.idle)
        c1, o1, t1 = cpu_seconds(pid), cpu_seconds(ovs_pid), pc()
        polls = [r for r in self.timings(start) if r["what"] == "poll"]
        dump_t0 = pc()
        from controller.features.persona.compile import usage_mask
        cookie, mask = usage_mask()
        gw = self.bridges[next(d for d in self.bridges if d.endswith("b01"))]
        dumped = ofctl("dump-flows", gw, f"cookie=0x{cookie:x}/0x{mask:x}").count("cookie=")
        dump_s = pc() - dump_t0
        return {"label": label, "controller_cpu": (c1 - c0) / (t1 - t0),
                "ovs_cpu": (o1 - o0) / (t1 - t0), "polls": polls,
                "ofctl_dump_s": dump_s, "ofctl_dump_flows": dumped}

    def converges(self, since: float, until: float | None = None) -> list[dict]:
        return [r for r in self.timings(since) if r["what"] == "converge"
                and (until is None or r["at"] <= until)]


@dataclass
class LabRun:
    """What one run measured, for ``persona_report.report``."""

    n: int
    one_flows: dict[str, int]
    idle1: dict
    tp1: dict
    created: dict
    sync_s: float
    t_create: float
    t_synced: float
    dps: dict
    flows: dict[str, tuple[int, int]]
    gw_name: str
    meters: int
    conv_create: list[dict]
    reads: list[dict]
    gets: list[float]
    lists: list[float]
    listed: list
    idle_n: dict
    tpn: dict
    deleted: dict | None = None
    tp_again: dict | None = None
    conv_delete: list[dict] = field(default_factory=list)
    teardowns: list[dict] = field(default_factory=list)


def measure(bench: Bench, args) -> LabRun:
    """The three phases: 1 persona, N personas, back to 1 (unless --keep-personas)."""
    n = args.personas
    # ---- 1 persona
    bench.create_member()
    one_flows = {br: bench.persona_flows(br) for br in bench.bridges.values()}
    print(f"1 persona: {bench.member_id}, {MEMBER_HOST} as {MEMBER_IP}; persona flows "
          f"{one_flows}", flush=True)
    idle1 = bench.idle_cost("1 persona")
    tp1 = bench.throughput("1 persona")

    # ---- N personas
    print(f"creating {n - 1:,} personas ...", flush=True)
    t_create = time.time()
    created = bench.create_many(n)
    sync_s = bench.wait_synced([bench.created[-1]], max(120.0, n * 1.0))
    t_synced = time.time()
    dps = bench.in_sync() or {}
    flows = {br: (bench.persona_flows(br), bench.all_flows(br))
             for br in bench.bridges.values()}
    gw_name = next(br for d, br in bench.bridges.items() if d.endswith("b01"))
    meters = bench.meters(gw_name)
    conv_create = bench.converges(t_create, t_synced)
    reads = [r for r in bench.timings(t_create) if r["what"] == "records"
             and r["at"] <= t_synced]
    print(f"  in sync {sync_s:.1f} s after the last POST", flush=True)
    ids = [bench.member_id, *bench.created]
    gets = [bench.api.call("GET", f"/v1/personas/{id}", expect=200)[2] for id in ids]
    lists = [bench.api.call("GET", "/v1/personas", expect=200)[2] for _ in range(5)]
    _, listed, _ = bench.api.call("GET", "/v1/personas", expect=200)
    idle_n = bench.idle_cost(f"{n:,} personas")
    tpn = bench.throughput(f"{n:,} personas")

    # ---- back to 1
    deleted = None
    tp_again = None
    conv_delete: list[dict] = []
    teardowns: list[dict] = []
    if not args.keep_personas:
        print(f"deleting {n - 1:,} personas ...", flush=True)
        t_del = time.time()
        deleted = bench.delete_many()
        deleted["sync_s"] = bench.wait_synced([bench.member_id], max(300.0, n * 3.0),
                                              persona_flows=one_flows)
        t_del_done = time.time()
        tp_again = bench.throughput("1 persona again")
        # read now: a teardown's bookkeeping (records, alerts, journal) ends after its flows
        teardowns = [r for r in bench.timings(t_del) if r["what"] == "teardown"]
        conv_delete = bench.converges(t_del, max([t_del_done, *(r["at"] for r in teardowns)]))
    return LabRun(n=n, one_flows=one_flows, idle1=idle1, tp1=tp1, created=created, sync_s=sync_s,
                  t_create=t_create, t_synced=t_synced, dps=dps, flows=flows, gw_name=gw_name,
                  meters=meters, conv_create=conv_create, reads=reads, gets=gets, lists=lists,
                  listed=listed, idle_n=idle_n, tpn=tpn, deleted=deleted, tp_again=tp_again,
                  conv_delete=conv_delete, teardowns=teardowns)


def run(args) -> int:
    """The lab benchmark: start, measure, report, and remove what it made (also on error)."""
    from benchmarks.persona_report import report
    if os.geteuid() != 0:
        print("personas: needs root (Mininet, Open vSwitch)", file=sys.stderr)
        return 2
    sh(str(REPO / "scripts" / "ovs"), "start", timeout=120)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    tmp = Path(tempfile.mkdtemp(prefix="personas-bench-"))
    bench = Bench(tmp, args)
    failed = False
    try:
        print(f"ovs-vswitchd {sh('ovs-vsctl', 'get', 'open_vswitch', '.', 'ovs_version').strip()}, "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, work dir {tmp}", flush=True)
        bench.start()
        print(f"lab up: {', '.join(sorted(bench.bridges.values()))}; controller pid "
              f"{bench.ctl.proc.pid}", flush=True)
        report(measure(bench, args), bench, args)
    except KeyboardInterrupt:
        print("personas: interrupted", file=sys.stderr)
        failed = True
        return 130
    except Exception:
        failed = True
        raise
    finally:
        if failed and bench.lab is not None:
            print("--- controller log (tail) ---\n" + bench.ctl.log(), file=sys.stderr)
        started = bench.lab is not None
        bench.stop()   # the personas go with the lab's store
        if not started:   # start_lab may have failed half way
            subprocess.run([str(REPO / "scripts" / "clean"), LAB_PREFIX], capture_output=True)
        if failed:
            print(f"personas: work dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0
