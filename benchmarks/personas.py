"""1,000 personas on one hub: creation rate, REST latency, flows, sync time, poll cost, throughput.

One small hub lab (tests/lab/conftest.py start_lab, prefix "bz", one segment
with two hosts, no spare) under the hub-controller, whose gateway bridge gw1 is
the persona gateway and ext (198.51.100.1) the outside server, as in
tests/lab/test_personas.py.  In one run:

  1 persona     "bench-member" (10.100.0.0/24, tcp and udp, tcp/5201 allowed, no
                bandwidth limit): h1_1 attached as 10.100.0.5 and readdressed.
                iperf3 h1_1 -> ext through the persona gateway, `--runs` times
                `--seconds` s; the same from h1_2 (in no persona, plain fabric
                routing) as a reference.  The controller's idle cost is sampled.
  + N-1         personas created over REST, one POST at a time on one keep-alive
                connection, each timed: distinct /24s of 10.128.0.0/9, the
                issue's example body (tcp+udp, 100Mbps, 50ms, allow tcp/80, deny
                tcp/22), no members.  Then: time until every datapath holds the
                last persona's flows and reports in sync, flows installed per
                switch, GET /v1/personas/{id} of every persona, the idle cost
                again, and iperf3 again (the ratio N vs 1 is the figure to watch).
  - N-1         every persona but the member's deleted, each DELETE timed, the
                teardown waited for; iperf3 a third time ("1 again": the bracket
                that shows how much the machine itself drifted during the run).

Idle cost, the usage poll: the runtime reads the gateway's counted flows every
`personas.poll_seconds` (1 s).  The controller runs through this file's small
driver (`--controller-driver`, see `drive_controller`): it is the real
hub-controller (controller.manager.main), with timers around the persona poll,
each converge, each teardown and the worker's reads of every persona record,
written to timings.jsonl (and, with `--profile`, cProfile of the hub worker and
of the REST handlers).  The
benchmark also reads the CPU time of the controller and of ovs-vswitchd over a
quiet window (/proc/PID/stat).

Measurements, not tests: figures and ratios are printed, nothing passes or fails.
Needs root, Open vSwitch (scripts/ovs start is called) and Mininet.

    sudo .venv/bin/python benchmarks/personas.py [--personas 1000] [--quick]
        [--runs 3] [--seconds 5] [--idle 10] [--log-level info] [--profile]
        [--keep-personas]

`--quick` is a smoke test: 50 personas, 2 runs of 3 s, a 4 s idle window.
It removes what it creates (the personas, the lab through stop_lab, iperf3 by
PID), also on error or Ctrl-C.  See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.labtools import TmpFactory, ofctl, sh  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
LAB_PREFIX = "bz"
EXT = "198.51.100.1"
MEMBER_HOST, FABRIC_HOST = "h1_1", "h1_2"
MEMBER_RANGE, MEMBER_IP = "10.100.0.0/24", "10.100.0.5"
FILL_POOL = IPv4Network("10.128.0.0/9")
OVS_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")
pc = time.perf_counter


# ------------------------------------------------------------------ helpers
def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def ms(values: list[float]) -> str:
    """p50 / p99 / max of durations in seconds, as milliseconds."""
    if not values:
        return "-"
    return (f"p50 {pct(values, 50) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms")


def member_body(expires: float) -> dict:
    return {"name": "bench-member", "ip_range": MEMBER_RANGE, "protocols": ["tcp", "udp"],
            "security_policies": [{"protocol": "tcp", "port": 5201, "action": "allow"}],
            "expiration": rfc3339(expires)}


def filler_body(i: int, expires: float) -> dict:
    """The issue's example request, on the i-th /24 of 10.128.0.0/9."""
    net = IPv4Network((int(FILL_POOL.network_address) + 256 * i, 24))
    return {"name": f"bench-{i:05d}", "ip_range": str(net), "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps", "latency": "50ms"},
            "security_policies": [{"protocol": "tcp", "port": 80, "action": "allow"},
                                  {"protocol": "tcp", "port": 22, "action": "deny"}],
            "expiration": rfc3339(expires)}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """REST calls on one keep-alive connection, each timed (seconds).

    uvicorn closes a connection idle for 5 s: one idle for 2 s is replaced
    before it is used, so that a write is never sent on a closing connection."""

    IDLE = 2.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.last = 0.0

    def call(self, method: str, path: str, body=None, expect: int | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self.conn is not None and pc() - self.last > self.IDLE:
                self.close()
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            t0 = pc()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt or method != "GET":   # never repeat a write
                    raise
                continue
            seconds = pc() - t0
            self.last = pc()
            out = json.loads(raw) if raw and resp.getheader("content-type", "").startswith(
                "application/json") else raw
            if expect is not None and resp.status != expect:
                raise RuntimeError(f"{method} {path}: {resp.status} {out}")
            return resp.status, out, seconds
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None



# ------------------------------------------------------------ controller driver
def drive_controller(argv: list[str]) -> int:
    """Run controller.manager.main with timers (and optionally cProfile) around the hub's work.

    argv: OUTDIR [--profile] -- HUB-CONTROLLER ARGS.  Appends one JSON line per
    event to OUTDIR/timings.jsonl:

      poll      Personas._poll: ms (wall), cpu_ms (the worker thread's CPU time),
                personas, stats_flows / stats_ms (the flow-stats exchange and its
                decoding: flows returned, ms)
      converge  Hub._converge taking 2 ms or more: ms, cpu_ms, and of that
                compile_ms (compile_fabric + personalities + personas) and the
                reconciles (reconcile_ms, switches)
      records   the hub worker reading every persona record (store list): ms, n
      teardown  Personas._teardown: ms, personas (torn down in that call)

    With --profile the hub worker thread runs under cProfile (worker.prof, written
    when it stops) and so does every REST endpoint call (rest.prof, merged).
    """
    out = Path(argv[0])
    rest = argv[argv.index("--") + 1:]
    profile = "--profile" in argv[:argv.index("--")]
    import cProfile
    import pstats

    import controller.manager as manager
    from apps import channel as channel_mod
    from controller.features.persona.runtime import Personas
    from controller.core.hub import Hub

    lock = threading.Lock()
    timings = open(out / "timings.jsonl", "a", buffering=1)

    def record(**data) -> None:
        with lock:
            timings.write(json.dumps({"at": time.time(), **data}) + "\n")

    last_stats: dict = {}
    stage: dict = {}
    orig_counters = channel_mod.OsKenChannel.flow_counters

    def flow_counters(self, table_id, cookie, cookie_mask):
        t0 = pc()
        result = orig_counters(self, table_id, cookie, cookie_mask)
        last_stats.update(n=len(result), ms=(pc() - t0) * 1000)
        return result
    channel_mod.OsKenChannel.flow_counters = flow_counters

    orig_poll = Personas._poll

    def _poll(self, now):
        last_stats.clear()
        t0, c0 = pc(), time.thread_time()
        orig_poll(self, now)
        record(what="poll", ms=(pc() - t0) * 1000, cpu_ms=(time.thread_time() - c0) * 1000,
               personas=len(self.active), stats_flows=last_stats.get("n"),
               stats_ms=last_stats.get("ms"))
    Personas._poll = _poll

    # Reading every persona record on the worker (the runtime's reload after REST
    # writes; the poll's state counts): once per write until the reload became lazy.
    from controller.store.sqlite import SQLiteStore
    orig_list = SQLiteStore.list

    def store_list(self, kind):
        t0 = pc()
        docs = orig_list(self, kind)
        if kind == "persona" and threading.current_thread().name == "hub-worker":
            record(what="records", ms=(pc() - t0) * 1000, n=len(docs))
        return docs
    SQLiteStore.list = store_list

    orig_teardown = Personas._teardown

    def _teardown(self, ids):
        t0 = pc()
        orig_teardown(self, ids)
        # one persona per call before personas were torn down together
        record(what="teardown", ms=(pc() - t0) * 1000,
               personas=len(ids) if isinstance(ids, list) else 1)
    Personas._teardown = _teardown

    # compile vs reconcile inside a converge: the first reconcile of a converge
    # starts after its compile; time the reconciles themselves.
    orig_reconcile = Hub._reconcile

    def _reconcile(self, dpid):
        if "compiled_at" not in stage:
            stage["compiled_at"] = pc()
        t0 = pc()
        orig_reconcile(self, dpid)
        stage["reconcile_ms"] = stage.get("reconcile_ms", 0.0) + (pc() - t0) * 1000
        stage["switches"] = stage.get("switches", 0) + 1
    Hub._reconcile = _reconcile

    orig_converge = Hub._converge

    def _converge(self):
        if stage.get("depth"):          # converge inside a teardown step: counted by the outer
            return orig_converge(self)
        outer = {"depth": 1}
        stage.clear()
        stage.update(outer)
        t0, c0 = pc(), time.thread_time()
        try:
            return orig_converge(self)
        finally:
            took = (pc() - t0) * 1000
            if took >= 2:
                compiled = stage.get("compiled_at")
                record(what="converge", ms=took, cpu_ms=(time.thread_time() - c0) * 1000,
                       compile_ms=None if compiled is None else (compiled - t0) * 1000,
                       reconcile_ms=stage.get("reconcile_ms", 0.0),
                       switches=stage.get("switches", 0),
                       personas=len(self.personas.active))
            stage.clear()
    Hub._converge = _converge

    rest_profiles: list = []
    if profile:
        orig_run = Hub._run

        def _run(self):
            prof = cProfile.Profile()
            prof.enable()
            try:
                orig_run(self)
            finally:
                prof.disable()
                prof.dump_stats(str(out / "worker.prof"))
        Hub._run = _run

        import fastapi.routing as routing
        orig_threadpool = routing.run_in_threadpool

        async def run_in_threadpool(func, *args, **kwargs):
            def profiled(*a, **kw):
                prof = cProfile.Profile()
                prof.enable()
                try:
                    return func(*a, **kw)
                finally:
                    prof.disable()
                    with lock:
                        rest_profiles.append(prof)
            return await orig_threadpool(profiled, *args, **kwargs)
        routing.run_in_threadpool = run_in_threadpool

    orig_manager_run = manager.run

    def run(config):
        try:
            return orig_manager_run(config)
        finally:
            if rest_profiles:
                with lock:
                    stats = pstats.Stats(rest_profiles[0])
                    for p in rest_profiles[1:]:
                        stats.add(p)
                stats.dump_stats(str(out / "rest.prof"))
            timings.close()
    manager.run = run
    return manager.main(rest)


# ------------------------------------------------------------------------ bench
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
        cmd = [str(PYTHON), str(Path(__file__).resolve()), "--controller-driver", str(self.drv)]
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


def fmt_bps(bps: float | None) -> str:
    return "failed" if bps is None else f"{bps / 1e9:.2f} Gbit/s"


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


# ------------------------------------------------------------------------ report
def report_idle(cost: dict) -> None:
    polls = cost["polls"]
    line = (f"  {cost['label']:<14} controller CPU {cost['controller_cpu'] * 100:5.1f}% of a core, "
            f"ovs-vswitchd {cost['ovs_cpu'] * 100:5.1f}%")
    if polls:
        line += (f"; {len(polls)} polls, each p50 {statistics.median(r['ms'] for r in polls):.1f} ms"
                 f" (worker CPU {statistics.median(r['cpu_ms'] for r in polls):.1f} ms; flow stats "
                 f"{statistics.median(r['stats_ms'] or 0 for r in polls):.1f} ms for "
                 f"{polls[-1]['stats_flows']} flows), max {max(r['ms'] for r in polls):.1f} ms")
    print(line)
    print(f"  {'':<14} ovs-ofctl dump-flows of the same counted flows: "
          f"{cost['ofctl_dump_flows']:,} flows in {cost['ofctl_dump_s'] * 1000:.0f} ms")


def report_converges(label: str, rows: list[dict]) -> None:
    if not rows:
        print(f"  {label}: no converge of 2 ms or more")
        return
    total = sum(r["ms"] for r in rows)
    compile_ms = sum(r["compile_ms"] or 0 for r in rows)
    rec = sum(r["reconcile_ms"] for r in rows)
    big = max(rows, key=lambda r: r["ms"])
    print(f"  {label}: {len(rows)} converges, {total / 1000:.1f} s in all "
          f"(compile {compile_ms / 1000:.1f} s, reconcile {rec / 1000:.1f} s); "
          f"p50 {statistics.median(r['ms'] for r in rows):.0f} ms, largest {big['ms']:.0f} ms "
          f"(compile {big['compile_ms'] or 0:.0f} ms, reconcile {big['reconcile_ms']:.0f} ms, "
          f"{big['personas']} personas)")


def print_profile(path: Path, title: str, top: int = 25, callees: tuple[str, ...] = ()) -> None:
    import io
    import pstats
    if not path.exists():
        print(f"  ({title}: no profile written)")
        return
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats(order).print_stats(top)
        text = buf.getvalue()
        start = text.find("   ncalls")
        print(f"\n--- {title}: top {top} by {order} ---")
        print(text[start:].rstrip())
    for name in callees:   # where the time of these functions goes (their direct callees)
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats("cumulative").print_callees(
            rf"\({name}\)$")
        print(f"\n--- {title}: callees of {name} ---")
        print(buf.getvalue().split("\n", 2)[-1].rstrip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--controller-driver"]:
        return drive_controller(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--personas", type=int, default=1000,
                    help="personas in all, the member's included (default 1000)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 50 personas, 2 runs of 3 s, 4 s idle windows")
    ap.add_argument("--runs", type=int, default=3, help="iperf3 runs per phase (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run")
    ap.add_argument("--idle", type=float, default=10.0,
                    help="quiet window for the CPU and poll figures, seconds (default 10)")
    ap.add_argument("--lifetime", type=float, default=7200.0,
                    help="personas expire this many seconds after creation (default 7200)")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                    help="the hub-controller's log level (default info, its own default)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the hub worker and the REST handlers and print the top "
                         "entries (slows the controller: compare functions, not figures)")
    ap.add_argument("--keep-personas", action="store_true",
                    help="skip the timed deletion (the lab and its store are removed anyway)")
    args = ap.parse_args(argv)
    if args.quick:
        args.personas, args.runs, args.seconds, args.idle = 50, 2, 3.0, 4.0
    if not 2 <= args.personas <= 32767:
        ap.error("--personas must be within 2..32767")

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
    n = args.personas
    try:
        print(f"ovs-vswitchd {sh('ovs-vsctl', 'get', 'open_vswitch', '.', 'ovs_version').strip()}, "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, work dir {tmp}", flush=True)
        bench.start()
        print(f"lab up: {', '.join(sorted(bench.bridges.values()))}; controller pid "
              f"{bench.ctl.proc.pid}", flush=True)

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

        # ---- report
        lat = created["latencies"]
        tenth = max(1, len(lat) // 10)
        print()
        print(f"personas on one hub: {n:,} personas (1 with a member, {n - 1:,} without: "
              f"the issue's example body on distinct /24s), gateway {gw_name}")
        print(f"creation: {len(lat):,} POSTs in {created['wall']:.1f} s = "
              f"{len(lat) / created['wall']:.1f} personas/s (one client, one at a time)")
        print(f"  POST /v1/personas      {ms(lat)}")
        print(f"    first {tenth:,}: {ms(lat[:tenth])}; last {tenth:,}: {ms(lat[-tenth:])}")
        print(f"  GET /v1/personas/{{id}}  {ms(gets)}  ({len(gets):,} calls, {n:,} stored)")
        print(f"  GET /v1/personas       {ms(lists)}  ({len(listed):,} personas in the answer)")
        print(f"sync: last POST -> every datapath holds the last persona and is in sync: "
              f"{sync_s:.1f} s (first POST -> in sync {t_synced - t_create:.1f} s)")
        report_converges("worker while creating", conv_create)
        if reads:
            print(f"  the worker read every persona record {len(reads)} times "
                  f"(runtime reloads, poll), {sum(r['ms'] for r in reads) / 1000:.1f} s in all, "
                  f"p50 {statistics.median(r['ms'] for r in reads):.1f} ms")
        print("flows installed (GET /v1/datapaths installed/desired; counted in the switch: "
              "persona flows / all flows):")
        for dpid, br in sorted(bench.bridges.items(), key=lambda kv: kv[1]):
            d = dps.get(dpid, {}).get("flows", {})
            pf, af = flows[br]
            print(f"  {br:<7} {dpid}  installed {d.get('installed', 0):>7,}  desired "
                  f"{d.get('desired', 0):>7,}  persona {pf:>7,} (1 persona: {one_flows[br]:,})  "
                  f"all {af:>7,}")
        print(f"  meters on {gw_name}: {meters:,}")
        print("usage poll and idle cost (quiet window of "
              f"{args.idle:g} s, no traffic):")
        report_idle(idle1)
        report_idle(idle_n)
        print(f"throughput, iperf3 {MEMBER_HOST} -> ext through the persona gateway "
              f"({args.runs} x {args.seconds:g} s, median):")
        base = median(tp1["persona"])
        rows = [("1 persona", tp1), (f"{n:,} personas", tpn)]
        if tp_again is not None:
            rows.append(("1 persona again", tp_again))
        for label, tp in rows:
            med, fab = median(tp["persona"]), median(tp["fabric"])
            ratio = f"  {med / base:.3f}x of 1 persona" if med and base else ""
            print(f"  {label:<16} {fmt_bps(med):>12} (runs "
                  f"{', '.join(fmt_bps(x) for x in tp['persona'])}){ratio};  "
                  f"fabric reference {FABRIC_HOST} -> ext {fmt_bps(fab)}")
        med_n = median(tpn["persona"])
        if base and med_n:
            again = median(tp_again["persona"]) if tp_again is not None else None
            after = f"; against the 1 persona after them {med_n / again:.3f}x" if again else ""
            print(f"  ratio {n:,} vs 1 persona: {med_n / base:.3f}x against the 1 persona before "
                  f"them{after} (aim >= 0.95x)")
        if deleted is not None:
            dl = deleted["latencies"]
            print(f"deletion: {len(dl):,} DELETEs in {deleted['wall']:.1f} s = "
                  f"{len(dl) / deleted['wall']:.1f}/s; DELETE {ms(dl)}; torn down and in sync "
                  f"{deleted['sync_s']:.1f} s after the last DELETE")
            if teardowns:
                sizes = [r.get("personas", 1) for r in teardowns]
                print(f"  teardowns: {len(teardowns)} calls for {sum(sizes):,} personas "
                      f"(up to {max(sizes):,} at once), p50 "
                      f"{statistics.median(r['ms'] for r in teardowns):.0f} ms per call, "
                      f"{sum(r['ms'] for r in teardowns) / 1000:.1f} s in all")
            report_converges("worker while deleting", conv_delete)
        if args.profile:
            bench.ctl.stop()   # the worker writes its profile when it stops
            print_profile(bench.drv / "worker.prof", "hub worker (cProfile)",
                          callees=("_poll", "_converge", "compile_personas", "active"))
            print_profile(bench.drv / "rest.prof", "REST endpoints (cProfile, merged)",
                          callees=("create_persona", "delete_persona"))
            keep = Path(tempfile.mkdtemp(prefix="personas-profile-"))
            for name in ("worker.prof", "rest.prof", "timings.jsonl"):
                if (bench.drv / name).exists():
                    shutil.copy(bench.drv / name, keep / name)
            print(f"\nprofiles and timings kept in {keep} (python -m pstats FILE)")
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


if __name__ == "__main__":
    sys.exit(main())
