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
driver (`--controller-driver`, benchmarks/persona_driver.py): it is the real
hub-controller (controller.manager.main), with timers around the persona poll,
each converge, each teardown and the worker's reads of every persona record,
written to timings.jsonl (and, with `--profile`, cProfile of the hub worker and
of the REST handlers).  The benchmark also reads the CPU time of the controller
and of ovs-vswitchd over a quiet window (/proc/PID/stat).

Measurements, not tests: figures and ratios are printed, nothing passes or fails.
Needs root, Open vSwitch (scripts/ovs start is called) and Mininet.

    sudo .venv/bin/python benchmarks/personas.py [--personas 1000] [--quick]
        [--runs 3] [--seconds 5] [--idle 10] [--log-level info] [--profile]
        [--keep-personas]
    .venv/bin/python benchmarks/personas.py --create-only [--personas 1000] [--rounds 500]

`--quick` is a smoke test: 50 personas, 2 runs of 3 s, a 4 s idle window.
It removes what it creates (the personas, the lab through stop_lab, iperf3 by
PID), also on error or Ctrl-C.  `--create-only` needs neither root nor a lab:
POST latency against the in-process API and a file-backed store, printed with
its ratio to the 50 ms goal (benchmarks/persona_create.py).  See
benchmarks/README.md.

Modules: persona_common (bodies, the REST client, percentiles), persona_lab
(the lab and the phases), persona_report (the printout), persona_driver (the
timed controller), persona_create (`--create-only`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--personas", type=int, default=1000,
                    help="personas in all, the member's included (default 1000)")
    ap.add_argument("--create-only", action="store_true",
                    help="only POST latency, against the in-process API and store (no lab, no root)")
    ap.add_argument("--rounds", type=int, default=500,
                    help="--create-only: creates timed at N personas (default 500)")
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
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--controller-driver"]:
        from benchmarks.persona_driver import drive_controller
        return drive_controller(argv[1:])
    args = parse(argv)
    if args.create_only:
        from benchmarks.persona_create import run as create_only
        return create_only(args.personas, args.rounds)
    from benchmarks.persona_lab import run as lab
    return lab(args)


if __name__ == "__main__":
    sys.exit(main())
