"""Policy learning and mirroring (issue 12): learning at scale, a large policy applied, an approval.

Three measurements on one rig (benchmarks/policy_rig.py: one netdev bridge, N member
namespaces and four peers on veth pairs, the real hub-controller with timers,
benchmarks/policy_driver.py), printed with their goals and ratios (nothing passes
or fails):

  learning  N members (default 50) open M real TCP connections (default 5,000)
            while "web" is learned: packet-ins in steady state (goal 0), the cost
            of one observation poll (the flow-stats round trip of the session's
            cookie, and the worker's part: records folded in, consolidation and
            the progress write), and the memory of the policy graph
            (benchmarks/policy_learn.py).
  enforce   a policy of R rules (default 500) written to the store, a profile
            mirroring it to the N members: time until every flow is on the switch
            and it is in sync; then the approval of a pending review until each of
            the N members has its first connection answered (goal 2 s)
            (benchmarks/policy_enforce.py).

    sudo .venv/bin/python benchmarks/policy.py [--members 50] [--connections 5000]
         [--concurrency 16] [--rules 500] [--runs 3] [--trials 5]
         [--skip learning,enforce] [--log-level info] [--profile]

Needs root and Open vSwitch (no Mininet).  Every name starts with "bpq"
(scripts/clean bp); the bridge, the namespaces and the controller (by PID) are
removed at the end, also on error or Ctrl-C, and the work dir is kept only on
failure.  See benchmarks/README.md for figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=50, help="member namespaces (1..200)")
    p.add_argument("--connections", type=int, default=5000,
                   help="TCP connections while learning (default 5,000)")
    p.add_argument("--rules", type=int, default=500, help="rules of the mirrored policy")
    p.add_argument("--runs", type=int, default=3, help="times the profile is applied")
    p.add_argument("--trials", type=int, default=5, help="approvals measured")
    p.add_argument("--concurrency", type=int, default=16,
                   help="connections in flight while learning (default 16)")
    p.add_argument("--skip", default="", help="comma list of parts not run: learning, enforce")
    p.add_argument("--log-level", default="info", help="the controller's (default info)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the hub worker (worker.prof in the kept work dir)")
    args = p.parse_args(argv)
    if not 1 <= args.members <= 200:
        p.error("--members: 1..200 (one /24 with the gateway)")
    return args


def header() -> None:
    try:
        ovs = subprocess.run(["ovs-vsctl", "--timeout=5", "get", "open_vswitch", ".",
                              "ovs_version"], capture_output=True, text=True,
                             timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        ovs = "?"
    print(f"policy benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, python "
          f"{sys.version.split()[0]}, ovs-vswitchd {ovs}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--controller-driver"]:
        from benchmarks.policy_driver import drive_controller
        return drive_controller(argv[1:])
    args = parse(argv)
    if os.geteuid() != 0:
        print("policy: needs root (Open vSwitch, network namespaces)", file=sys.stderr)
        return 1
    from benchmarks import policy_enforce, policy_learn
    from benchmarks.policy_rig import Rig
    from benchmarks.policy_traffic import Engine

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    header()
    tmp = Path(tempfile.mkdtemp(prefix="bpq-policy-"))
    rig = Rig(tmp, args.members, args.log_level, args.profile)
    engine = None
    lines, failed = [], True
    try:
        t0 = time.perf_counter()
        rig.open()
        engine = Engine()
        policy_learn.serve(rig, engine)
        print(f"rig up: {args.members} members and 4 peers on {rig.bridge}, the controller "
              f"in sync, after {time.perf_counter() - t0:.0f} s", flush=True)
        if "learning" not in args.skip.split(","):
            learned = policy_learn.run(rig, engine, args.connections, args.concurrency)
            policy_learn.report(learned)
            lines.append(policy_learn.summary(learned))
            print(flush=True)
        if "enforce" not in args.skip.split(","):
            enforced = policy_enforce.run(rig, engine, args.rules, args.runs, args.trials)
            policy_enforce.report(enforced)
            lines.append(policy_enforce.summary(enforced))
        failed = False
    finally:
        load = os.getloadavg()
        if failed:
            print("--- controller log (tail) ---\n" + rig.ctl.log(), file=sys.stderr)
        if engine is not None:
            engine.close()
        rig.close()
        if failed or args.profile:
            print(f"policy: work dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nsummary (load at the end {' '.join(f'{x:.2f}' for x in load)}):")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
