"""`shadows.py sampling`: the share of N connections the shadow received whole, against
the configured percentage.

For each percentage (default 10 and 50), `web` is set to it and ext opens N
(default 10,000) TCP connections to production's tcp/80, each from its own
client port (a block of N per percentage, bound explicitly: no two connections
share a 4-tuple), 4 at a time, a line and its answer each
(benchmarks/shadow_traffic.py `conns`).  Every connection must be answered by
production.  The shadow side is counted by tcpdump on the interface of the slot
the instance runs on, not by the agent: the SYNs and FINs ext's connections
carry (`tcp[tcpflags] & (tcp-syn|tcp-fin) != 0`, so the capture keeps up); a
connection is received whole when both its SYN and a FIN reached the shadow.
tcpdump's own count of packets the kernel dropped is printed (a drop there would
undercount).  Beside it, the switch's count: the instance's decide flows, one
packet per connection sampled.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.shadow_lab import SERVICE_PORT, TRAFFIC, Mode, ShadowLab
from tests.lab.shadowlab import flags_by_port, whole

PORT_FIRST = 2000           # percentage i's connections: PORT_FIRST + i * N ... (below 24000)
GOAL_PP = 1.0


@dataclass(frozen=True)
class Sampling:
    percentage: float
    connections: int
    answered: int                  # by production, with its own answer
    whole: int                     # SYN and FIN seen on the shadow's interface
    partial: int                   # seen, but not both
    switch_sampled: int            # the decide flows' count
    kernel_dropped: int | None     # tcpdump's "dropped by kernel"
    seconds: float

    @property
    def share(self) -> float:
        return self.whole / self.connections

    @property
    def error_pp(self) -> float:
        return self.share * 100 - self.percentage

    @property
    def sigma_pp(self) -> float:
        """One standard deviation of a fair binomial sample of this size, in points."""
        p = self.percentage / 100
        return math.sqrt(p * (1 - p) / self.connections) * 100


class Capture:
    """tcpdump on a Mininet host's interface, to a text file; stopped by its PID."""

    def __init__(self, lab: ShadowLab, host, path: Path, expr: str) -> None:
        self.lab, self.host, self.path, self.err = lab, host, path, path.with_suffix(".err")
        host.cmd(f"tcpdump -i {host.intf()} -nn -l -B 16384 '{expr}' > {path} "
                 f"2> {self.err} &")
        self.pid = host.cmd("echo $!").strip()
        lab.lab.background.append((host, self.pid))   # stop_lab ends it if we fail first
        from tests.lab.harness import wait_for
        wait_for("tcpdump listening", lambda: "listening" in self.err.read_text(), 10, 0.05)

    def stop(self) -> int | None:
        """Stop it (SIGINT: it prints its counts); the packets the kernel dropped."""
        from tests.lab.harness import wait_for
        self.host.cmd(f"kill -INT {self.pid}")
        wait_for("tcpdump ended", lambda: not os.path.exists(f"/proc/{self.pid}"), 10, 0.05)
        self.lab.lab.background.remove((self.host, self.pid))
        m = re.search(r"(\d+) packets? dropped by kernel", self.err.read_text())
        return int(m.group(1)) if m else None


def measure(lab: ShadowLab, tmp: Path, percentage: float, index: int, n: int,
            workers: int) -> Sampling:
    lab.set_mode(Mode(f"{percentage:g}%", percentage))
    ext, prod, shadow = lab.host("ext"), lab.host("h1_1"), lab.slot_host("web")
    first = PORT_FIRST + index * n
    path = tmp / f"bw-capture-{index}.txt"
    capture = Capture(lab, shadow, path, f"src host {ext.IP()} and tcp dst port "
                      f"{SERVICE_PORT} and tcp[tcpflags] & (tcp-syn|tcp-fin) != 0")
    c0 = lab.counters()
    t0 = time.perf_counter()
    out = ext.cmd(f"{TRAFFIC} conns {prod.IP()} {SERVICE_PORT} {first} {n} prod:{SERVICE_PORT} "
                  f"--workers {workers}")
    took = time.perf_counter() - t0
    time.sleep(1.0)                                   # the last FINs' copies
    dropped = capture.stop()
    switch = (lab.counters() - c0).sampled
    tally = json.loads(out.strip().splitlines()[-1])
    seen = {p: f for p, f in flags_by_port(path.read_text(errors="replace"), ext.IP(),
                                            SERVICE_PORT).items() if first <= int(p) < first + n}
    received = sum(whole(flags) for flags in seen.values())
    return Sampling(percentage, n, tally["ok"], received, len(seen) - received, switch, dropped,
                    took)


def run(lab: ShadowLab, tmp: Path, args) -> list[Sampling]:
    if PORT_FIRST + len(args.percentages) * args.connections > 24000:
        raise ValueError("--connections x percentages must fit client ports 2000..23999")
    print(f"sampling: {args.connections:,} connections at each of "
          f"{', '.join(f'{p:g}%' for p in args.percentages)} ...", flush=True)
    out = []
    for i, pct in enumerate(args.percentages):
        s = measure(lab, tmp, pct, i, args.connections, args.workers)
        print(f"    {pct:g}%: {s.whole:,} whole in {s.seconds:.1f} s", flush=True)
        out.append(s)
    return out


def report(results: list[Sampling]) -> None:
    print("sampling error: N client connections (ext -> h1_1 tcp/80, one source port each), "
          "counted whole (SYN and FIN) by tcpdump on the shadow's interface")
    print("  set      conns  answered    whole  partial   share   error   1 sigma  "
          "switch decided  kernel drops  conn/s")
    for s in results:
        drops = "-" if s.kernel_dropped is None else f"{s.kernel_dropped}"
        print(f"  {s.percentage:>5.1f}% {s.connections:>7,} {s.answered:>9,} {s.whole:>8,} "
              f"{s.partial:>8,} {s.share * 100:>6.2f}% {s.error_pp:>+6.2f}pp {s.sigma_pp:>6.2f}pp"
              f" {s.switch_sampled:>15,} {drops:>13} {s.connections / s.seconds:>7,.0f}")
    worst = max((abs(s.error_pp) for s in results), default=None)
    if worst is not None:
        print(f"  goal: |error| <= {GOAL_PP:g} pp: worst {worst:.2f} pp, "
              f"{'met' if worst <= GOAL_PP else 'MISSED'}")


def summary(results: list[Sampling]) -> str:
    parts = [f"{s.percentage:g}% -> {s.share * 100:.2f}% ({s.error_pp:+.2f} pp)" for s in results]
    return (f"sampling over {results[0].connections:,} connections: " + ", ".join(parts)
            + f" (goal within {GOAL_PP:g} pp)") if results else "sampling: not run"
