"""Flow programming rate: the hub's reconciler vs `ovs-ofctl --bundle add-flows`.

For each size N, the same N synthetic flows (table 50, one distinct eth_dst
each, hub cookies) are installed into an empty netdev bridge:

  baseline  `ovs-ofctl --bundle -O OpenFlow14 add-flows BR FILE`, the file
            rendered by controller/pipeline/ofctl.py;
  hub       `Reconciler.sync(flows)` over the real `OsKenChannel`, through a
            real OpenFlow 1.4 connection to the os-ken app of the hub
            (apps.hub_app.HubApp, in this process), timed from a worker thread.

Every measurement is repeated in pairs (baseline, then hub, so that both run
under the same load when other work shares the machine); the bridge is emptied
(`ovs-ofctl del-flows`) before each run and checked to hold exactly N flows
after it.  The ratio printed is baseline time / hub time, from the medians
(and, below it, the ratio of each pair).  The hub's time is broken down into
phases by timing the channel's own steps; the CPU time of ovs-vswitchd and of
the hub's worker thread is printed beside it.

Needs root and Open vSwitch (started with scripts/ovs start).  Usage:

    sudo .venv/bin/python benchmarks/flow_rate.py [--sizes 10000,100000]
                                                  [--repeat-small 7] [--repeat-large 5]
                                                  [--profile]

Everything it creates (one bridge named bn<pid>) is removed at the end, also on
error or Ctrl-C.  See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ["OSKEN_HUB_TYPE"] = "native"  # before anything imports os_ken

from controller.pipeline import cookies  # noqa: E402
from controller.pipeline.actions import Output  # noqa: E402
from controller.pipeline.cookies import Feature  # noqa: E402
from controller.pipeline.flowspec import FlowSpec, make_match  # noqa: E402
from controller.pipeline.ofctl import render_flows  # noqa: E402
from controller.reconcile.flows import Reconciler  # noqa: E402
from benchmarks.labtools import sh  # noqa: E402
from benchmarks.ofrig import OUT_PORT, Bridge, free_port, start_openflow, switch_cpu  # noqa: E402

OVS_SCRIPT = REPO / "scripts" / "ovs"
TABLE_L2 = 50
pc = time.perf_counter


# ------------------------------------------------------------------ helpers
def synthetic_flows(n: int) -> list[FlowSpec]:
    """n distinct L2 flows, as the fabric compiler writes them for hosts."""
    flows = []
    for i in range(n):
        mac = "02:%02x:%02x:%02x:%02x:%02x" % (
            (i >> 32) & 0xFF, (i >> 24) & 0xFF, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF)
        flows.append(FlowSpec(table=TABLE_L2, priority=100, match=make_match({"eth_dst": mac}),
                              actions=(Output(OUT_PORT),),
                              cookie=cookies.make(Feature.FABRIC, f"host:{mac}")))
    return flows


# ---------------------------------------------------------------- baseline
def write_flow_file(flows: list[FlowSpec], tmpdir: str) -> tuple[str, float]:
    """The ovs-ofctl file of the flows, and how long rendering it took (not timed)."""
    t = pc()
    text = render_flows(flows)
    render_s = pc() - t
    path = os.path.join(tmpdir, f"flows-{len(flows)}.txt")
    with open(path, "w") as f:
        f.write(text)
    return path, render_s


def baseline_once(bridge: Bridge, path: str) -> float:
    t = pc()
    bridge.ofctl("--bundle", "add-flows", bridge.name, path)
    return pc() - t


# --------------------------------------------------------------------- hub
PHASES = ("readback", "diff", "encode", "write", "wait", "commit")
PHASE_HELP = {
    "readback": "flow-stats readback of the (empty) switch",
    "diff": "desired vs realized diff in the reconciler",
    "encode": "FlowSpec -> BundleAdd bytes, overlapped with the switch reading",
    "write": "handing chunks to os-ken's send queue (blocks while the switch is behind)",
    "wait": "after the last add: the switch parses what is still queued, barrier reply",
    "commit": "COMMIT + barrier: the switch applies the bundle",
}


def _hub_once(channel, flows: list[FlowSpec], profile: cProfile.Profile | None) -> dict:
    """One timed sync from a fresh reconciler, on this (worker) thread."""
    channel.timing.clear()
    rec = Reconciler(channel)
    t0 = pc()
    rec.readback()
    t1 = pc()
    channel.timing.clear()
    c1 = time.thread_time()
    if profile is not None:
        result = profile.runcall(rec.sync, flows)
    else:
        result = rec.sync(flows)
    t2 = pc()
    cpu = time.thread_time() - c1
    if len(result.diff.add) != len(flows) or result.diff.delete:
        raise RuntimeError(f"unexpected diff {result.diff.summary()}")
    tm = channel.timing
    phases = {
        "readback": t1 - t0,
        "diff": (t2 - t1) - tm["apply"],
        "encode": tm["apply"] - tm["write"] - tm["wait"] - tm["commit"],
        "write": tm["write"],
        "wait": tm["wait"],
        "commit": tm["commit"],
    }
    return {"total": t2 - t0, "phases": phases, "writes": tm["writes"], "cpu": cpu}


def hub_once(channel, flows: list[FlowSpec], profile: cProfile.Profile | None) -> dict:
    """`_hub_once` on a worker thread, as the hub's worker runs it."""
    box: dict = {}

    def work():
        try:
            box["run"] = _hub_once(channel, flows, profile)
        except BaseException as exc:  # reported on the main thread
            box["error"] = exc
    worker = threading.Thread(target=work, name="bench-worker", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["run"]


def measure(bridge: Bridge, channel, flows: list[FlowSpec], repeat: int, tmpdir: str,
            profile: bool) -> dict:
    """`repeat` pairs of runs, baseline then hub, each into an emptied bridge.

    Alternating the two keeps them under the same load when other work
    shares the machine.  The switch's CPU time is taken around each run.
    """
    path, render_s = write_flow_file(flows, tmpdir)
    prof = cProfile.Profile() if profile else None
    base, runs, base_cpu = [], [], []
    for _ in range(repeat):
        bridge.clear()
        c = switch_cpu()
        base.append(baseline_once(bridge, path))
        base_cpu.append(switch_cpu() - c)
        bridge.expect(len(flows), "baseline")
        bridge.clear()
        c = switch_cpu()
        run = hub_once(channel, flows, prof)
        run["switch_cpu"] = switch_cpu() - c
        runs.append(run)
        bridge.expect(len(flows), "hub")
    out = {"base": base, "base_cpu": base_cpu, "render_s": render_s,
           "times": [r["total"] for r in runs],
           "phases": {p: statistics.median(r["phases"][p] for r in runs) for p in PHASES},
           "cpu": statistics.median(r["cpu"] for r in runs),
           "switch_cpu": statistics.median(r["switch_cpu"] for r in runs),
           "writes": runs[-1]["writes"]}
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
        out["profile"] = s.getvalue()
    return out


# -------------------------------------------------------------------- main
def fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    import apps.channel
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000",
                    help="comma-separated flow counts (default 10000,100000)")
    ap.add_argument("--repeat-small", type=int, default=7,
                    help="pairs of runs for sizes below 50000 (default 7)")
    ap.add_argument("--repeat-large", type=int, default=5,
                    help="pairs of runs for sizes of 50000 and more (default 5)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the hub's sync (worker thread) and print the top entries")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    if os.geteuid() != 0:
        print("flow_rate: needs root (creates an Open vSwitch bridge)", file=sys.stderr)
        return 2
    sh(str(OVS_SCRIPT), "start", timeout=120)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    bridge = Bridge(f"bn{os.getpid()}")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="flow_rate-") as tmpdir:
            bridge.create()
            of_port = free_port()
            hub = start_openflow(of_port)
            sh("ovs-vsctl", "set-controller", bridge.name, f"tcp:127.0.0.1:{of_port}",
               "--", "set", "controller", bridge.name, "max_backoff=1000",
               "connection_mode=out-of-band")
            try:
                channel = hub.connected.get(timeout=30)
            except queue.Empty:
                raise RuntimeError("the bridge did not connect to the os-ken app in 30s")
            channel.timeout = 900.0
            print(f"ovs-vswitchd {sh('ovs-vsctl', 'get', 'open_vswitch', '.', 'ovs_version').strip()}"
                  f", bridge {bridge.name} (netdev, OpenFlow {channel.of_version}), "
                  f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
            for n in sizes:
                repeat = args.repeat_small if n < 50_000 else args.repeat_large
                flows = synthetic_flows(n)
                results.append((n, repeat, measure(bridge, channel, flows, repeat, tmpdir,
                                                   args.profile)))
                print(f"N={n:,}: done ({repeat} pairs of runs)", flush=True)
                bridge.clear()
    except KeyboardInterrupt:
        print("flow_rate: interrupted", file=sys.stderr)
        return 130
    finally:
        sh_ok = True
        try:
            subprocess.run(["ovs-vsctl", "--if-exists", "del-controller", bridge.name],
                           capture_output=True, timeout=60)
        except Exception:
            sh_ok = False
        bridge.destroy()
        if not sh_ok:
            print(f"flow_rate: could not detach {bridge.name}", file=sys.stderr)

    print()
    print(f"{'N':>8} {'runs':>4} | {'baseline (median)':>18} {'rate':>13} | "
          f"{'hub (median)':>13} {'rate':>13} | {'hub/baseline':>12}")
    for n, repeat, r in results:
        b, h = statistics.median(r["base"]), statistics.median(r["times"])
        print(f"{n:>8,} {repeat:>4} | {b:>17.3f}s {fmt_rate(n, b)} | {h:>12.3f}s "
              f"{fmt_rate(n, h)} | {b / h:>11.2f}x")
    for n, repeat, r in results:
        h = statistics.median(r["times"])
        pairs = [b / t for b, t in zip(r["base"], r["times"])]
        print(f"\nN={n:,}  all runs: baseline "
              f"{', '.join(f'{t:.3f}' for t in r['base'])} s; hub "
              f"{', '.join(f'{t:.3f}' for t in r['times'])} s"
              f"\n  ratio of each pair: {', '.join(f'{x:.2f}' for x in pairs)} "
              f"(median {statistics.median(pairs):.2f}x)"
              f"\n  ovs-vswitchd CPU (median): baseline {statistics.median(r['base_cpu']):.3f}s,"
              f" hub {r['switch_cpu']:.3f}s; the hub's worker thread CPU: {r['cpu']:.3f}s"
              f"\n  (rendering the ofctl file, not timed: {r['render_s']:.3f}s)")
        print(f"  hub breakdown (median per phase; {r['writes']} socket writes of about "
              f"{apps.channel.SEND_CHUNK // 1024} KiB):")
        for p in PHASES:
            s = r["phases"][p]
            print(f"    {p:<10} {s:>8.3f}s {100 * s / h:>5.1f}%  {PHASE_HELP[p]}")
        if "profile" in r:
            print(r["profile"])
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # os-ken's connection threads are not daemons and have no stop hook.
    os._exit(code)
