"""Printing a lab run of ``benchmarks/personas.py`` (a ``persona_lab.LabRun``)."""
from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.persona_common import fmt_bps, median, ms
from benchmarks.persona_lab import FABRIC_HOST, MEMBER_HOST, Bench, LabRun


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


def report(run: LabRun, bench: Bench, args) -> None:
    """Every figure of the run, then the profiles when --profile was given."""
    print()
    print(f"personas on one hub: {run.n:,} personas (1 with a member, {run.n - 1:,} without: "
          f"the issue's example body on distinct /24s), gateway {run.gw_name}")
    report_creation(run)
    report_flows(run, bench)
    print(f"usage poll and idle cost (quiet window of {args.idle:g} s, no traffic):")
    report_idle(run.idle1)
    report_idle(run.idle_n)
    report_throughput(run, args)
    if run.deleted is not None:
        report_deletion(run)
    if args.profile:
        report_profiles(bench)


def report_creation(run: LabRun) -> None:
    lat, created = run.created["latencies"], run.created
    tenth = max(1, len(lat) // 10)
    print(f"creation: {len(lat):,} POSTs in {created['wall']:.1f} s = "
          f"{len(lat) / created['wall']:.1f} personas/s (one client, one at a time)")
    print(f"  POST /v1/personas      {ms(lat)}")
    print(f"    first {tenth:,}: {ms(lat[:tenth])}; last {tenth:,}: {ms(lat[-tenth:])}")
    print(f"  GET /v1/personas/{{id}}  {ms(run.gets)}  ({len(run.gets):,} calls, {run.n:,} stored)")
    print(f"  GET /v1/personas       {ms(run.lists)}  ({len(run.listed):,} personas in the answer)")
    print(f"sync: last POST -> every datapath holds the last persona and is in sync: "
          f"{run.sync_s:.1f} s (first POST -> in sync {run.t_synced - run.t_create:.1f} s)")
    report_converges("worker while creating", run.conv_create)
    if run.reads:
        print(f"  the worker read every persona record {len(run.reads)} times "
              f"(runtime reloads, poll), {sum(r['ms'] for r in run.reads) / 1000:.1f} s in all, "
              f"p50 {statistics.median(r['ms'] for r in run.reads):.1f} ms")


def report_flows(run: LabRun, bench: Bench) -> None:
    print("flows installed (GET /v1/datapaths installed/desired; counted in the switch: "
          "persona flows / all flows):")
    for dpid, br in sorted(bench.bridges.items(), key=lambda kv: kv[1]):
        d = run.dps.get(dpid, {}).get("flows", {})
        pf, af = run.flows[br]
        print(f"  {br:<7} {dpid}  installed {d.get('installed', 0):>7,}  desired "
              f"{d.get('desired', 0):>7,}  persona {pf:>7,} (1 persona: {run.one_flows[br]:,})  "
              f"all {af:>7,}")
    print(f"  meters on {run.gw_name}: {run.meters:,}")


def report_throughput(run: LabRun, args) -> None:
    print(f"throughput, iperf3 {MEMBER_HOST} -> ext through the persona gateway "
          f"({args.runs} x {args.seconds:g} s, median):")
    base = median(run.tp1["persona"])
    rows = [("1 persona", run.tp1), (f"{run.n:,} personas", run.tpn)]
    if run.tp_again is not None:
        rows.append(("1 persona again", run.tp_again))
    for label, tp in rows:
        med, fab = median(tp["persona"]), median(tp["fabric"])
        ratio = f"  {med / base:.3f}x of 1 persona" if med and base else ""
        print(f"  {label:<16} {fmt_bps(med):>12} (runs "
              f"{', '.join(fmt_bps(x) for x in tp['persona'])}){ratio};  "
              f"fabric reference {FABRIC_HOST} -> ext {fmt_bps(fab)}")
    med_n = median(run.tpn["persona"])
    if base and med_n:
        again = median(run.tp_again["persona"]) if run.tp_again is not None else None
        after = f"; against the 1 persona after them {med_n / again:.3f}x" if again else ""
        print(f"  ratio {run.n:,} vs 1 persona: {med_n / base:.3f}x against the 1 persona before "
              f"them{after} (aim >= 0.95x)")


def report_deletion(run: LabRun) -> None:
    deleted = run.deleted
    assert deleted is not None
    dl = deleted["latencies"]
    print(f"deletion: {len(dl):,} DELETEs in {deleted['wall']:.1f} s = "
          f"{len(dl) / deleted['wall']:.1f}/s; DELETE {ms(dl)}; torn down and in sync "
          f"{deleted['sync_s']:.1f} s after the last DELETE")
    if run.teardowns:
        sizes = [r.get("personas", 1) for r in run.teardowns]
        print(f"  teardowns: {len(run.teardowns)} calls for {sum(sizes):,} personas "
              f"(up to {max(sizes):,} at once), p50 "
              f"{statistics.median(r['ms'] for r in run.teardowns):.0f} ms per call, "
              f"{sum(r['ms'] for r in run.teardowns) / 1000:.1f} s in all")
    report_converges("worker while deleting", run.conv_delete)


def report_profiles(bench: Bench) -> None:
    bench.ctl.stop()   # the worker writes its profile when it stops
    print_profile(bench.drv / "worker.prof", "hub worker (cProfile)",
                  callees=("_poll", "_converge", "compile_personas", "active"))
    print_profile(bench.drv / "rest.prof", "REST endpoints (cProfile, merged)",
                  callees=("create", "delete"))
    keep = Path(tempfile.mkdtemp(prefix="personas-profile-"))
    for name in ("worker.prof", "rest.prof", "timings.jsonl"):
        if (bench.drv / name).exists():
            shutil.copy(bench.drv / name, keep / name)
    print(f"\nprofiles and timings kept in {keep} (python -m pstats FILE)")
