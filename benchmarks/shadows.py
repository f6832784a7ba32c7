"""Shadow appliances (issue 11): production throughput under mirroring, sampling error,
time to block.

One lab, one run (root, Open vSwitch, Mininet, the real hub-controller and a real
hub-shadow-agent on each of two slots; benchmarks/shadow_lab.py), three
measurements, printed (figures and ratios against the goals; nothing passes or
fails):

  throughput  iperf3 ext -> the production host, many parallel connections per
              run, with the appliance shadowed at 0%, 10%, 50% and 100% and with
              no mirror flow at all (shadow_enabled false), interleaved; each as a
              ratio to no mirror.  Goal: >= 0.9x at 10% (benchmarks/shadow_throughput.py).
  sampling    the share of 10,000 connections the shadow received whole (SYN and
              FIN, by tcpdump on its interface) at 10% and 50%.  Goal: within
              1 pp of the percentage (benchmarks/shadow_sampling.py).
  block       from a connection carrying an IDS signature (remediation block) to
              its source's next connection refused: median and max over several
              trials, and where the time went (benchmarks/shadow_block.py).

    sudo .venv/bin/python benchmarks/shadows.py [--runs 7] [--streams 20] [--seconds 4]
         [--modes none,0,10,50,100] [--connections 10000] [--percentages 10,50]
         [--trials 10] [--skip throughput,sampling,block] [--log-level info]

The lab's names start with "bw" (scripts/test and scripts/clean know the
prefix); it removes what it starts (stop_lab: the servers, agents and captures
by PID, Mininet, the controller, `scripts/clean bw`), also on error or Ctrl-C,
and keeps its work dir only on failure.  See benchmarks/README.md for the
figures measured here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PARTS = ("throughput", "sampling", "block")


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def modes(text: str) -> list[float | None]:
    return [None if x.strip() == "none" else float(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="throughput runs per mode (default 7)")
    p.add_argument("--streams", type=int, default=20,
                   help="parallel iperf3 connections per run (default 20, below 50)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of a run (default 4)")
    p.add_argument("--modes", type=modes, default=[None, 0.0, 10.0, 50.0, 100.0],
                   help="'none' (no mirror) and percentages (default none,0,10,50,100)")
    p.add_argument("--connections", type=int, default=10000,
                   help="connections per sampled percentage (default 10000)")
    p.add_argument("--percentages", type=numbers, default=[10.0, 50.0],
                   help="percentages whose sampling is counted (default 10,50)")
    p.add_argument("--workers", type=int, default=4,
                   help="connections open at once while sampling (default 4)")
    p.add_argument("--trials", type=int, default=10, help="time-to-block trials (default 10)")
    p.add_argument("--interval", type=float, default=0.005,
                   help="seconds between two connection attempts while waiting for the "
                        "block (default 0.005)")
    p.add_argument("--skip", default="", help="parts left out, comma separated: "
                                              + ", ".join(PARTS))
    p.add_argument("--log-level", default="info",
                   help="the controller's (default info; the lab harness starts it at debug)")
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(PARTS):
        p.error(f"--skip: unknown part(s) {sorted(args.skip - set(PARTS))}")
    if None not in args.modes and "throughput" not in args.skip:
        p.error("--modes must include 'none': every ratio is to no mirror")
    return args


def header() -> None:
    from benchmarks.labtools import sh
    try:
        ovs = sh("ovs-vsctl", "--timeout=5", "get", "open_vswitch", ".", "ovs_version",
                 timeout=10).strip().strip('"')
    except (OSError, RuntimeError):
        ovs = "?"
    print(f"shadows benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, python "
          f"{sys.version.split()[0]}, ovs-vswitchd {ovs}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("shadows: needs root (Mininet, Open vSwitch)", file=sys.stderr)
        return 2
    from benchmarks import shadow_block, shadow_sampling, shadow_throughput
    from benchmarks.labtools import sh
    from benchmarks.shadow_lab import ShadowLab
    sh(str(REPO / "scripts" / "ovs"), "start", timeout=120)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    header()
    tmp = Path(tempfile.mkdtemp(prefix="bw-shadows-"))
    lab = ShadowLab(tmp, args.log_level)
    failed, results = False, {}
    try:
        t0 = time.perf_counter()
        print("starting the lab ...", flush=True)
        lab.start()
        lab.setup()
        print(f"  lab up, both shadow instances ready after {time.perf_counter() - t0:.0f} s",
              flush=True)
        if "throughput" not in args.skip:
            results["throughput"] = shadow_throughput.run(lab, args)
        if "sampling" not in args.skip:
            results["sampling"] = shadow_sampling.run(lab, tmp, args)
        if "block" not in args.skip:
            results["block"] = shadow_block.run(lab, args)
        load = os.getloadavg()
    except BaseException:
        failed = True
        if lab.lab is not None:
            print("--- controller log (tail) ---\n" + lab.lab.controller.log(), file=sys.stderr)
        raise
    finally:
        lab.stop()
        if failed:
            print(f"shadows: work dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload at the end {' '.join(f'{x:.2f}' for x in load)}")
    for line in lab.slow:
        print(f"slow REST answer: {line}")
    print()
    lines = []
    if "throughput" in results:
        lines.append(shadow_throughput.summary(shadow_throughput.report(results["throughput"],
                                                                        args)))
        print()
    if "sampling" in results:
        shadow_sampling.report(results["sampling"])
        lines.append(shadow_sampling.summary(results["sampling"]))
        print()
    if "block" in results:
        shadow_block.report(results["block"], args.interval)
        lines.append(shadow_block.summary(results["block"]))
        print()
    print("summary:")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
