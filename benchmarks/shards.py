"""Ephemeral shards (issue 10): rotation under traffic, the RAP server, reconnaissance cost.

Three measurements, printed (figures and ratios; nothing passes or fails):

  rotation  real stack (root, Open vSwitch, Mininet, the hub-controller): N
            resources (default 100) on one segment, each running hub-rap and a
            TCP server with one established connection from ext exchanging a
            line every 100 ms; one forced round of all N.  Time from the
            round's start until every move is realized, p50/p99 per move,
            moves done/failed, connections reset (goal 0), and the time from
            POST to the final state as the client sees it (benchmarks/shard_lab.py).
  rap       in-process, one core, no switch: leases (REGISTER -> OFFER -> ACK),
            renewals and forged messages (bad MAC) handled per second through
            the hub's packet-in path and the controller's SQLite store
            (benchmarks/shard_rap.py).
  recon     simulated, injected clock and seed: the share of a leaked map of
            shard addresses that still reaches the same resources 1, 5 and 10
            minutes later, in a rotating pool (the issue's defaults) and one
            that never rotates, in one run; the rotating pool's moves per
            minute (benchmarks/shard_sim.py).
  all       the three, then a one-line summary of each.

    sudo .venv/bin/python benchmarks/shards.py all
    sudo .venv/bin/python benchmarks/shards.py rotation [--resources 100] [--after 5]
    .venv/bin/python benchmarks/shards.py rap [--resources 100,1000] [--seconds 3]
    .venv/bin/python benchmarks/shards.py recon [--resources 50] [--seed 1]

Only `rotation` needs root; its lab's names start with "sb" (scripts/test and
scripts/clean know the prefix) and it removes what it starts, also on error
or Ctrl-C.  See benchmarks/README.md for the figures measured here.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def rotation_options(p: argparse.ArgumentParser, resources: str) -> None:
    p.add_argument(resources, dest="resources", type=int, default=100, metavar="N",
                   help="resources in the lab, one host each (1..253; default 100)")
    p.add_argument("--lease", type=int, default=60, help="RAP lease, seconds (default 60)")
    p.add_argument("--after", type=float, default=5.0,
                   help="seconds after the round's final state to look at the connections")
    p.add_argument("--round-timeout", type=float, default=180.0,
                   help="give up on the round after this many seconds")
    p.add_argument("--log-level", default="info", help="the controller's (default info)")


def rap_options(p: argparse.ArgumentParser, resources: str) -> None:
    p.add_argument(resources, dest="rap_resources", type=sizes, default=[100, 1000],
                   metavar="K[,K...]", help="resources enrolled (default 100,1000)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="timed work per kind of message, at least (default 3)")


def recon_options(p: argparse.ArgumentParser, resources: str) -> None:
    p.add_argument(resources, dest="recon_resources", type=int, default=50, metavar="N",
                   help="resources per pool (default 50)")
    p.add_argument("--warmup", type=float, default=20.0,
                   help="simulated minutes before the first leak (default 20)")
    p.add_argument("--leaks", type=int, default=6, help="leaked maps (default 6)")
    p.add_argument("--spacing", type=float, default=5.0,
                   help="simulated minutes between two leaks (default 5)")
    p.add_argument("--step", type=float, default=1.0,
                   help="simulated seconds per step (default 1)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    rotation_options(sub.add_parser("rotation", help="a forced round of N resources, real lab"),
                     "--resources")
    rap = sub.add_parser("rap", help="the RAP server's throughput on one core")
    rap_options(rap, "--resources")
    recon = sub.add_parser("recon", help="a leaked address map, rotating vs static pool")
    recon_options(recon, "--resources")
    every = sub.add_parser("all", help="rotation, rap and recon")
    rotation_options(every, "--resources")
    rap_options(every, "--rap-resources")
    recon_options(every, "--recon-resources")
    for q in (rap, recon, every):
        q.add_argument("--seed", type=int, default=1, help="the hub's seed (default 1)")
    args = p.parse_args(argv)
    if args.what in ("rotation", "all") and not 1 <= args.resources <= 253:
        p.error("--resources: 1..253 (one segment of the lab topology)")
    return args


def header() -> None:
    try:
        ovs = subprocess.run(["ovs-vsctl", "--timeout=5", "get", "open_vswitch", ".",
                              "ovs_version"], capture_output=True, text=True,
                             timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        ovs = "?"
    print(f"shards benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, python "
          f"{sys.version.split()[0]}, ovs-vswitchd {ovs}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from benchmarks import shard_lab, shard_rap, shard_sim
    header()
    lines = []
    if args.what in ("rotation", "all"):
        result = shard_lab.run(args)
        if result is not None:
            lines.append(shard_lab.summary(result))
        print(flush=True)
    if args.what in ("rap", "all"):
        lines.append(shard_rap.summary(shard_rap.run(args)))
        print(flush=True)
    if args.what in ("recon", "all"):
        lines.append(shard_sim.summary(shard_sim.run(args)))
        print(flush=True)
    print("summary:")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
