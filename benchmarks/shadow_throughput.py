"""`shadows.py throughput`: production TCP throughput, shadowed at p% against no mirror.

iperf3 from ext to the production host h1_1 (tcp/5201, a service of the `web`
appliance), `--streams` parallel connections for `--seconds` per run.  One
connection is sampled whole or not at all, so a run has many: at 10% of 20
streams about 2 are copied.  Each run binds its streams to fixed client ports
(`--cport`, a block of 50 per run, the same blocks on every execution), so the
switch's hash decides the same connections each time the benchmark runs; the
connections actually sampled and the bytes copied are read from the mirror's
flow counters and printed beside each figure.  Modes are interleaved: run r
measures every mode once, in an order rotated by r, so drift in the shared
machine's speed falls on every mode alike.  "no mirror" is the manifest with
`shadow_enabled: false` (its instance stopped, no mirror flow left on the
switch, checked); the other modes are the same manifest enabled at p%.

Beside the throughput, per run: ovs-vswitchd's CPU time per GB iperf3 sent
(on the userspace datapath the switch's packet work runs in its main thread,
so this is where the mirror's cost is paid) and its datapath passes per packet
(`dpif-netdev/pmd-stats-show`: a packet that goes through conntrack is
recirculated; the mirror's clone(ct(...)) adds a pass to every packet of a
hooked service, sampled or not).  Both count the whole shared ovs-vswitchd.
And the packets the lab's switch ports received per MB sent (ovs-ofctl
dump-ports of every bridge), with, of them, what the shadow sent back and its
port's guard dropped: the datapath's work, which the copies add to.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks.labtools import sh
from benchmarks.persona_common import cpu_seconds
from benchmarks.shadow_lab import IPERF_PORT, NO_MIRROR, Counters, Mode, ShadowLab

CPORT_FIRST, CPORT_BLOCK = 24000, 50      # run k binds CPORT_FIRST + k * CPORT_BLOCK ...
GOAL_RATIO, GOAL_AT = 0.9, 10.0
OVS_PID = Path("/var/run/openvswitch/ovs-vswitchd.pid")


@dataclass(frozen=True)
class Run:
    mode: Mode
    bps: float | None                # received, None: iperf3 failed
    sent_bytes: int
    retransmits: int
    ovs_cpu: float                   # seconds of ovs-vswitchd CPU during the run
    passes: float | None             # datapath passes per packet
    counters: Counters | None        # None with no mirror
    switch_packets: int              # received by the lab's switch ports
    shadow_answers: int              # what the shadow sent, dropped at its port


def datapath_passes() -> tuple[int, int]:
    """(packets received, recirculations) of the userspace datapath's threads, so far."""
    out = sh("ovs-appctl", "dpif-netdev/pmd-stats-show")
    received = sum(int(n) for n in re.findall(r"packets received: (\d+)", out))
    recirc = sum(int(n) for n in re.findall(r"packet recirculations: (\d+)", out))
    return received, recirc


def iperf(lab: ShadowLab, k: int, streams: int, seconds: float) -> dict:
    ext, prod = lab.host("ext"), lab.host("h1_1")
    out = ext.cmd(f"iperf3 -c {prod.IP()} -p {IPERF_PORT} -P {streams} -t {seconds:g} -J "
                  f"--cport {CPORT_FIRST + k * CPORT_BLOCK}")
    try:
        end = json.loads(out)["end"]
        return {"bps": end["sum_received"]["bits_per_second"],
                "sent": end["sum_sent"]["bytes"], "retr": end["sum_sent"].get("retransmits", 0)}
    except (ValueError, KeyError):
        return {"bps": None, "sent": 0, "retr": 0, "error": out[-300:]}


def measure(lab: ShadowLab, mode: Mode, k: int, streams: int, seconds: float) -> Run:
    lab.set_mode(mode)
    pid = int(OVS_PID.read_text())
    c0 = lab.counters() if mode is not NO_MIRROR else None
    s0, g0 = lab.switch_packets(), lab.guard_drops()
    p0, cpu0 = datapath_passes(), cpu_seconds(pid)
    got = iperf(lab, k, streams, seconds)
    cpu, p1 = cpu_seconds(pid) - cpu0, datapath_passes()
    switch, answers = lab.switch_packets() - s0, lab.guard_drops() - g0
    c = lab.counters() - c0 if c0 is not None else None
    received = p1[0] - p0[0]
    passes = 1 + (p1[1] - p0[1]) / received if received > 0 else None
    if got["bps"] is None:
        print(f"    iperf3 failed ({mode.name}): {got.get('error')}", flush=True)
    return Run(mode, got["bps"], got["sent"], got["retr"], cpu, passes, c, switch, answers)


def run(lab: ShadowLab, args) -> list[Run]:
    modes = [NO_MIRROR if m is None else Mode(f"{m:g}%", m) for m in args.modes]
    if args.streams >= CPORT_BLOCK:
        raise ValueError(f"--streams must be below {CPORT_BLOCK}")
    print(f"throughput: {args.runs} runs x {len(modes)} modes, iperf3 -P {args.streams} "
          f"-t {args.seconds:g} ...", flush=True)
    runs, k = [], 0
    for r in range(args.runs):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            one = measure(lab, mode, k, args.streams, args.seconds)
            k += 1
            runs.append(one)
            sampled = "" if one.counters is None else f", {one.counters.sampled} sampled"
            gbps = "failed" if one.bps is None else f"{one.bps / 1e9:.3f} Gbit/s"
            print(f"    run {r + 1} {mode.name:>9}: {gbps}{sampled}", flush=True)
    return runs


def _median(values) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


@dataclass(frozen=True)
class ModeFigures:
    mode: Mode
    bps: list[float | None]
    median_bps: float | None
    ratio: float | None                  # median / the no-mirror median
    paired: float | None                 # median of run-by-run ratios to no mirror
    sampled: int
    connections: int
    copied_share: float | None
    cpu_per_gb: float | None
    cost: float | None                   # the no-mirror CPU per GB / this mode's
    passes: float | None
    retransmits: int
    busy: float | None                   # ovs-vswitchd's CPU seconds per second of a run
    packets_per_mb: float | None         # switch ports' received packets per MB sent
    answers_per_mb: float | None         # of those, the shadow's answers (guard drops)


def figures(runs: list[Run], streams: int, seconds: float) -> list[ModeFigures]:
    modes = list(dict.fromkeys(r.mode for r in runs))
    base_runs = [r for r in runs if r.mode is NO_MIRROR]
    base = _median(r.bps for r in base_runs)
    base_sent = sum(r.sent_bytes for r in base_runs)
    base_cpu = sum(r.ovs_cpu for r in base_runs) / (base_sent / 1e9) if base_sent else None
    out = []
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        med = _median(r.bps for r in mine)
        pairs = [m.bps / b.bps for m, b in zip(mine, base_runs) if m.bps and b.bps]
        copied = [r.counters for r in mine if r.counters is not None]
        sent = sum(r.sent_bytes for r in mine)
        cpu = sum(r.ovs_cpu for r in mine) / (sent / 1e9) if sent else None
        out.append(ModeFigures(
            mode, [r.bps for r in mine], med,
            med / base if med and base else None, _median(pairs) if base_runs else None,
            sum(c.sampled for c in copied), len(mine) * (streams + 1),
            sum(c.copied_bytes for c in copied) / sent if copied and sent else None,
            cpu, base_cpu / cpu if cpu and base_cpu else None,
            _median(r.passes for r in mine), sum(r.retransmits for r in mine),
            _median(r.ovs_cpu / seconds for r in mine),
            sum(r.switch_packets for r in mine) / (sent / 1e6) if sent else None,
            sum(r.shadow_answers for r in mine) / (sent / 1e6) if sent else None))
    return out


def _f(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def report(runs: list[Run], args) -> list[ModeFigures]:
    figs = figures(runs, args.streams, args.seconds)
    print(f"production TCP throughput, iperf3 ext -> h1_1 tcp/{IPERF_PORT}: {args.streams} "
          f"parallel connections x {args.seconds:g} s per run, {args.runs} runs per mode, "
          f"modes interleaved (real hub-controller, Mininet, OVS userspace)")
    print("  mode        Gbit/s p50   ratio  paired   per run Gbit/s                 "
          "sampled     copied  ovs CPU s/GB  (ratio)  ovs busy  passes/pkt  pkts/MB  answers/MB    retr")
    for f in figs:
        per_run = " ".join(_f(b and b / 1e9, ".3f", "fail") for b in f.bps)
        sampled = "-" if f.mode is NO_MIRROR else f"{f.sampled}/{f.connections}"
        print(f"  {f.mode.name:<10} {_f(f.median_bps and f.median_bps / 1e9, '10.3f')}  "
              f"{_f(f.ratio, '5.2f')}x  {_f(f.paired, '5.2f')}x  {per_run:<30} "
              f"{sampled:>8} {_pct(f.copied_share):>9}  "
              f"{_f(f.cpu_per_gb, '12.2f')}  {_f(f.cost, '6.2f')}x  {_f(f.busy, '8.2f')}  "
              f"{_f(f.passes, '10.2f')}  {_f(f.packets_per_mb, '7.0f')}  "
              f"{_f(f.answers_per_mb, '10.0f')}  "
              f"{f.retransmits:>6}")
    at = next((f for f in figs if f.mode.percentage == GOAL_AT), None)
    if at is not None and at.ratio is not None:
        verdict = "met" if at.ratio >= GOAL_RATIO else "MISSED"
        print(f"  goal: >= {GOAL_RATIO:.2f}x at {GOAL_AT:g}%: {at.ratio:.2f}x (paired "
              f"{_f(at.paired, '.2f')}x), {verdict}")
    print("  (sampled: connections the switch decided to copy, of the streams and iperf3's "
          "control connections; copied: bytes copied / bytes sent; ovs CPU: ovs-vswitchd's "
          "CPU seconds per GB sent, its ratio no mirror / this mode; ovs busy: its CPU seconds per second of a run, p50; pkts/MB: packets the lab's switch ports "
          "received per MB sent, answers/MB: of them, what the shadow sent back, dropped at "
          "its port; retr: TCP retransmits)")
    return figs


def summary(figs: list[ModeFigures]) -> str:
    parts = [f"{f.mode.name} {_f(f.ratio, '.2f')}x" for f in figs if f.mode is not NO_MIRROR]
    base = next((f for f in figs if f.mode is NO_MIRROR), None)
    head = f"no mirror {_f(base and base.median_bps and base.median_bps / 1e9, '.3f')} Gbit/s"
    return f"throughput: {head}; " + ", ".join(parts) + f" (goal >= {GOAL_RATIO}x at 10%)"
