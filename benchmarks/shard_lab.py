"""`shards.py rotation`: one forced round of N resources on a real hub, under traffic.

A hub lab (tests/lab/conftest.py `start_lab`, prefix "sb", one segment with N
hosts, no spare) under the real hub-controller, restarted at `--log-level`
(default info; the harness starts it at debug).  Each host is enrolled over
REST in one pool and runs the real `hub-rap` client and a TCP server
(`tests/lab/netcheck.py whoami 80`).  `ext` holds one TCP connection to each
resource's external address, a line every 100 ms on each
(`benchmarks/shard_hold.py`, one process).  The pool rotates only when asked
(lifespans and rotation_interval of hours), with max_migrations_per_round N.
Then one `POST .../rotate {"resources": [all N]}`, its round polled
(`GET .../rotations/{id}`) until its final state, and the connections looked
at `--after` seconds later.  Needs root, Open vSwitch and Mininet.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from benchmarks.labtools import TmpFactory
from benchmarks.persona_common import REPO, cpu_seconds, pct

LAB_PREFIX = "sb"
POOL_ID = "bench"
GATEWAY = "10.0.1.254"
EXT_GATEWAY = "198.51.100.254"
HUB_RAP = REPO / ".venv" / "bin" / "hub-rap"
PYTHON = REPO / ".venv" / "bin" / "python"
NETCHECK = f"python3 {REPO}/tests/lab/netcheck.py"
HOLD = REPO / "benchmarks" / "shard_hold.py"
PATH = f"/v1/shard-pools/{POOL_ID}"


def pool_body(n: int, lease: int) -> dict:
    return {"name": POOL_ID, "pool": "10.200.0.0/16", "external_range": "203.0.113.0/24",
            "lifespan": {"min": "10h", "max": "20h"}, "rotation_interval": "10h",
            "max_migrations_per_round": max(n, 10), "rap": {"lease": f"{lease}s"},
            "quarantine": "60s"}


@dataclass(frozen=True)
class Enrolled:
    id: str
    host: str
    external_ip: str


@dataclass(frozen=True)
class LabResult:
    resources: int
    rotation: dict                  # GET .../rotations/{id} at its final state
    post_to_final: float            # seconds, as the benchmark saw it
    controller_cpu: float           # seconds of CPU during the round
    before: dict                    # shard_hold status before the round
    after: dict                     # ... `after` seconds after its final state
    after_s: float
    setup_s: float
    load: tuple[float, float, float]
    planned_at: float | None        # the round's journal entry (planned and stored)
    in_process: tuple[float, str] | None = None     # the hub alone: seconds, final state


class RotationLab:
    """The lab, its resources, and what was started on its hosts."""

    def __init__(self, tmp: Path, args) -> None:
        from mininet.log import setLogLevel
        setLogLevel("warning")
        self.tmp, self.args, self.n = tmp, args, args.resources
        self.lab = None
        self.net = None
        self.controller = None
        self.enrolled: list[Enrolled] = []
        self.hold_pid: str | None = None
        self.status = tmp / "hold.json"

    # ------------------------------------------------------------ setup
    def start(self) -> None:
        """start_lab's steps, with the controller at `--log-level` from its first start,
        and every part kept as soon as it exists (so a failure half way is cleaned up)."""
        from tests.lab.conftest import Lab
        from tests.lab.harness import Controller
        from topologies.hub import build_net, lab_subnets
        subprocess.run([str(REPO / "scripts" / "clean"), LAB_PREFIX], check=True,
                       capture_output=True)
        ctl = Controller(TmpFactory(self.tmp).mktemp(f"lab-{LAB_PREFIX}"),
                         lab_subnets(1, spares=0))
        config = yaml.safe_load(ctl.config.read_text())
        config["log_level"] = self.args.log_level
        ctl.config.write_text(yaml.safe_dump(config))
        self.controller = ctl
        ctl.start()
        self.net = build_net(segments=1, hosts=self.n, cores=1, spares=0, prefix=LAB_PREFIX,
                             controller_port=ctl.of_port)
        self.net.start()
        self.lab = Lab(self.net, ctl, LAB_PREFIX, 1, self.n, 1)
        ctl.wait_in_sync(self.lab.dpids, timeout=60)

    def api(self, method: str, path: str, body=None, expect: int | None = None):
        status, data = self.lab.controller.request(method, path, body)
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def hosts(self) -> list:
        return [self.lab.host(f"h1_{i}") for i in range(1, self.n + 1)]

    def discover(self) -> dict[str, str]:
        """Every host's interface record ({ip: interface id}): one ping to its gateway."""
        from tests.lab.harness import wait_for
        for h in self.hosts():
            h.cmd(f"ping -c 2 -i 0.5 -W 1 {GATEWAY} >/dev/null 2>&1 &")
        self.lab.host("ext").cmd(f"ping -c 2 -W 1 {EXT_GATEWAY} >/dev/null 2>&1")
        want = {h.IP() for h in self.hosts()}

        def known():
            ids = {ip: i["id"] for i in self.lab.controller.get("/v1/interfaces")
                   for ip in i["ips"]}
            return ids if want <= set(ids) else None
        return wait_for(f"{self.n} interfaces discovered", known, 60, 0.5)

    def enroll(self, interfaces: dict[str, str]) -> None:
        self.api("POST", "/v1/shard-pools", pool_body(self.n, self.args.lease), expect=201)
        for i, h in enumerate(self.hosts(), 1):
            rid = f"r{i}"
            got = self.api("POST", f"{PATH}/resources",
                           {"interface_id": interfaces[h.IP()], "id": rid}, expect=201)
            self.enrolled.append(Enrolled(rid, h.name, got["external_ip"]))
            log = self.tmp / f"rap-{rid}.log"
            self.lab.bg(h, f"bash -c 'exec {HUB_RAP} --server {GATEWAY} --port 6699 "
                           f"--resource {rid} --key {got['key']} --interface {h.intf()} "
                           f"2>>{log}'")
            self.lab.bg(h, f"{NETCHECK} whoami 80")

    def wait_leased(self) -> None:
        from tests.lab.harness import wait_for

        def leased():
            rows = self.api("GET", f"{PATH}/resources", expect=200)
            done = [r for r in rows if r["lease"]["state"] == "leased" and r["address"]
                    and not r.get("move")]
            return len(done) == self.n or None
        wait_for(f"{self.n} resources leased", leased, 60 + self.n, 1.0)

    def hold(self) -> None:
        """Start ext's connections and wait until each has been answered a few times."""
        from tests.lab.harness import wait_for
        targets = self.tmp / "targets"
        targets.write_text("".join(f"{e.id} {e.external_ip}\n" for e in self.enrolled))
        ext = self.lab.host("ext")
        ext.cmd(f"{PYTHON} {HOLD} {targets} 80 {self.status} --connect-within 30 "
                f">{self.tmp}/hold.log 2>&1 &")
        self.hold_pid = ext.cmd("echo $!").strip()

        def flowing():
            conns = self.read_status()["connections"]
            return all(c["state"] == "open" and c["answered"] >= 5 for c in conns) or None
        try:
            wait_for(f"{self.n} connections from ext answering", flowing, 60, 0.5)
        except AssertionError:
            bad = [c for c in self.read_status()["connections"] if c["state"] != "open"]
            raise RuntimeError(f"{len(bad)} connections not open: {bad[:3]}") from None

    def read_status(self) -> dict:
        return json.loads(self.status.read_text())

    # ------------------------------------------------------------ the round
    def rotate(self, setup_s: float) -> LabResult:
        time.sleep(2.0)
        before = self.read_status()
        pid = self.lab.controller.proc.pid
        cpu0 = cpu_seconds(pid)
        t0 = time.time()
        started = self.api("POST", f"{PATH}/rotate",
                           {"resources": [e.id for e in self.enrolled]}, expect=202)
        while True:
            rotation = self.api("GET", f"{PATH}/rotations/{started['id']}", expect=200)
            if rotation["state"] != "running":
                break
            if time.time() - t0 > self.args.round_timeout:
                raise RuntimeError(f"the round is still running after "
                                   f"{self.args.round_timeout:g} s: {rotation}")
            time.sleep(0.05)
        post_to_final = time.time() - t0
        cpu = cpu_seconds(pid) - cpu0
        time.sleep(self.args.after)
        return LabResult(self.n, rotation, post_to_final, cpu, before, self.read_status(),
                         self.args.after, setup_s, os.getloadavg(), self.planned_at(rotation))

    def planned_at(self, rotation: dict) -> float | None:
        """When the round was planned and stored: its journal entry, written just before
        the hub's next tick sends the ANNOUNCEs."""
        page = self.api("GET", f"/v1/events?kind=shard&subject={POOL_ID}&limit=1000", expect=200)
        return next((e["ts"] for e in page["items"] if rotation["id"] in e["message"]), None)

    # ------------------------------------------------------------ teardown
    def stop(self) -> None:
        """Everything started, by PID (stop_lab: hub-rap and whoami, Mininet, the
        controller, scripts/clean of the prefix); also after a start that failed half way."""
        from tests.lab.conftest import stop_lab
        if self.lab is not None:
            if self.hold_pid and self.hold_pid.isdigit():
                self.lab.host("ext").cmd(f"kill {self.hold_pid}")
            stop_lab(self.lab)
        else:
            try:
                if self.net is not None:
                    self.net.stop()
            finally:
                if self.controller is not None:
                    self.controller.stop()
                subprocess.run([str(REPO / "scripts" / "clean"), LAB_PREFIX],
                               capture_output=True)
        self.lab = self.net = self.controller = None


def ms(values: list[float]) -> str:
    """min, p50, p99 and max of durations in seconds, as milliseconds."""
    if not values:
        return "       -        -        -        -"
    return (f"{min(values) * 1000:>8,.0f} {pct(values, 50) * 1000:>8,.0f} "
            f"{pct(values, 99) * 1000:>8,.0f} {max(values) * 1000:>8,.0f}")


@dataclass(frozen=True)
class Connections:
    """What ext's connections went through, from before the round to `after` s past it."""
    held: int
    reset: int                  # reset or closed by the peer
    stalled: int                # open, but not one answer in the window
    late: int                   # lines answered later than the holder's timeout
    answered: int               # lines answered in the window
    on_old_address: int         # the server still answers from the address it had
    max_rtt: float
    max_gap: float

    @classmethod
    def of(cls, r: LabResult) -> "Connections":
        before = {c["name"]: c for c in r.before["connections"]}
        after = {c["name"]: c for c in r.after["connections"]}
        old = {s["resource"]: s["from_address"] for s in r.rotation["steps"]}
        return cls(
            held=len(after),
            reset=sum(c["state"] in ("reset", "closed") for c in after.values()),
            stalled=sum(c["state"] == "open" and c["answered"] == before[n]["answered"]
                        for n, c in after.items()),
            late=sum(c["late"] - before[n]["late"] for n, c in after.items()),
            answered=sum(c["answered"] - before[n]["answered"] for n, c in after.items()),
            on_old_address=sum(c["local_last"] == old.get(n) for n, c in after.items()),
            max_rtt=max(c["max_rtt"] for c in after.values()),
            max_gap=max(c["max_gap"] for c in after.values()))


def round_figures(rotation: dict) -> dict:
    steps = rotation["steps"]
    done = [s for s in steps if s["state"] == "done"]
    start = rotation["created_at"]
    return {
        "done": len(done), "failed": sum(s["state"] == "failed" for s in steps),
        "all_realized": max(s["realized_at"] for s in done) - start if done else None,
        "per_move": [s["realized_at"] - s["started_at"] for s in done],
        "start_ack": [s["acked_at"] - s["started_at"] for s in done if s["acked_at"]],
        "ack_realized": [s["realized_at"] - s["acked_at"] for s in done if s["acked_at"]],
        "new_address": sum(s["to_address"] not in (None, s["from_address"]) for s in done),
        "finished": (rotation["finished_at"] or start) - start,
    }


def report(r: LabResult) -> None:
    f = round_figures(r.rotation)
    c = Connections.of(r)
    rot = r.rotation
    print(f"forced rotation of {r.resources} resources, each with one established TCP "
          f"connection (real hub-controller, Mininet, OVS userspace); load at the end "
          f"{' '.join(f'{x:.2f}' for x in r.load)}")
    print(f"  round {rot['id']}: {rot['state']}; moves done {f['done']}, failed {f['failed']}; "
          f"{len(rot['created_shards'])} new shards, {len(rot['retired_shards'])} retired; "
          f"{f['new_address']} resources on a new address")
    total = f"{f['all_realized']:.2f} s" if f["all_realized"] is not None else "-"
    print(f"  round start -> every move realized  {total}  (round finished "
          f"{f['finished']:.2f} s after its start)")
    print(f"  POST -> final state seen by the client  {r.post_to_final:.2f} s; controller CPU "
          f"in that time {r.controller_cpu:.2f} s")
    if r.planned_at is not None:
        print(f"  round start -> planned and stored (its journal entry; the ANNOUNCEs leave at "
              f"the next tick)  {(r.planned_at - rot['created_at']) * 1000:,.0f} ms")
    print("  per move, ms                              min      p50      p99      max")
    print(f"    round start -> ACK (acked_at)    {ms(f['start_ack'])}")
    print(f"    ACK -> realized                  {ms(f['ack_realized'])}")
    print(f"    round start -> realized          {ms(f['per_move'])}")
    print(f"  connections (ext -> external address, a line every 100 ms), {r.after_s:g} s "
          f"after the final state: {c.held} held, reset {c.reset}, stalled {c.stalled}, "
          f"late answers {c.late} (goal 0); {c.answered:,} lines answered around the round; "
          f"{c.on_old_address}/{c.held} still answered from their old shard address; "
          f"longest round trip {c.max_rtt * 1000:.0f} ms, longest gap between answers "
          f"{c.max_gap * 1000:.0f} ms")
    if r.in_process is not None:
        took, state = r.in_process
        print(f"  the hub's own part: the same round in-process (shard_rig: fake switch, clients "
              f"answering at once, no ip commands) {took:.2f} s, {state}")


def summary(r: LabResult) -> str:
    f, c = round_figures(r.rotation), Connections.of(r)
    total = f"{f['all_realized']:.2f} s" if f["all_realized"] is not None else "-"
    p99 = f"{pct(f['per_move'], 99) * 1000:.0f} ms" if f["per_move"] else "-"
    return (f"rotation ({r.resources} resources): all realized in {total} (p99 per move "
            f"{p99}), {f['done']} done / {f['failed']} failed, {c.reset} connections reset, "
            f"{c.late} late answers")


def run(args) -> LabResult | None:
    """Start, measure, report; removes what it made, also on error or Ctrl-C."""
    import shutil
    import signal
    import tempfile

    from benchmarks.labtools import sh
    if os.geteuid() != 0:
        print("rotation: needs root (Mininet, Open vSwitch); skipped", file=sys.stderr)
        return None
    sh(str(REPO / "scripts" / "ovs"), "start", timeout=120)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="sb-rotation-"))
    bench = RotationLab(tmp, args)
    failed = False
    try:
        t0 = time.perf_counter()
        print(f"rotation: starting a lab of {args.resources} resources ...", flush=True)
        bench.start()
        interfaces = bench.discover()
        bench.enroll(interfaces)
        bench.wait_leased()
        bench.hold()
        setup = time.perf_counter() - t0
        print(f"  lab up, {args.resources} resources leased and {args.resources} connections "
              f"answering after {setup:.0f} s; rotating ...", flush=True)
        result = bench.rotate(setup)
    except KeyboardInterrupt:
        failed = True
        print("rotation: interrupted", file=sys.stderr)
        raise
    except Exception:
        failed = True
        raise
    finally:
        if failed and bench.controller is not None:
            print("--- controller log (tail) ---\n" + bench.controller.log(), file=sys.stderr)
        bench.stop()
        if failed:
            print(f"rotation: work dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    # The same round with the hub alone, once the lab is gone (its load with it).
    from benchmarks.shard_sim import forced_round
    result = replace(result, in_process=forced_round(args.resources, 1))
    report(result)
    return result
