"""The hub-controller with timers around the policy feature's work, for `benchmarks/policy.py`.

``policy.py --controller-driver OUTDIR [--profile] -- HUB-CONTROLLER ARGS`` runs
``controller.manager.main`` itself after wrapping a few methods with timers
(`persona_driver.wrap`: a method that no longer exists is skipped with a note).
The switch channel is flow_rate's timed one (`ofrig._timed_channel_class`: the
same behaviour, its steps timed), counting the worker's writes and waits only.  One JSON line per event in OUTDIR/timings.jsonl:

  stats      OsKenChannel.flow_counters (on the hub's request pool): a flow-stats
             round trip and its decoding: ms, flows returned, cookie (hex)
  answered   Learning._answered (worker): one switch's records folded into the
             session: ms, cpu_ms (worker thread CPU), flows (in the answer)
  progress   Learning._progress (worker, inside `answered`): consolidation and the
             session's progress write: ms, rules
  refused    Enforcement._refused (worker): one switch's refused records: ms, flows
  decide     Enforcement.decide taking 1 ms or more: ms
  contribute PolicyFeature.contribute: ms, flows (the feature's, all switches)
  converge   Hub._converge taking 2 ms or more: ms, cpu_ms, compile_ms (until the first
             reconcile), and per switch reconcile_ms with its channel's apply (encode
             and write), wait and commit ms, added and deleted flows

With --profile the hub worker thread runs under cProfile (OUTDIR/worker.prof).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.persona_common import pc
from benchmarks.persona_driver import wrap

WORKER = "hub-worker"                # the hub's worker thread (controller.core.hub)


def drive_controller(argv: list[str]) -> int:
    out = Path(argv[0])
    rest = argv[argv.index("--") + 1:]
    profile = "--profile" in argv[:argv.index("--")]

    import apps.hub_app
    import controller.manager as manager
    from apps import channel as channel_mod
    from benchmarks.ofrig import _timed_channel_class
    from controller.core import convergence
    from controller.core.hub import Hub
    from controller.features.policy.enforcement import Enforcement
    from controller.features.policy.feature import PolicyFeature
    from controller.features.policy.learning import Learning

    class WorkerTimed(_timed_channel_class()):
        """Only the worker's writes and waits count: the request pool's flow-stats
        exchanges on the same channel (the polls) run meanwhile and are timed apart."""

        def _write(self, buf):
            if threading.current_thread().name != WORKER:
                return channel_mod.OsKenChannel._write(self, buf)
            return super()._write(buf)

        def _wait(self, waiter):
            if threading.current_thread().name != WORKER:
                return channel_mod.OsKenChannel._wait(self, waiter)
            return super()._wait(waiter)
    apps.hub_app.OsKenChannel = WorkerTimed     # same behaviour, its steps timed
    lock = threading.Lock()
    timings = open(out / "timings.jsonl", "a", buffering=1)
    stage: dict[str, Any] = {}

    def record(**data: Any) -> None:
        with lock:
            timings.write(json.dumps({"at": time.time(), **data}) + "\n")

    def stats(orig):
        def flow_counters(self, table_id, cookie, cookie_mask):
            t0 = pc()
            found = orig(self, table_id, cookie, cookie_mask)
            record(what="stats", ms=(pc() - t0) * 1000, flows=len(found), cookie=f"{cookie:x}")
            return found
        return flow_counters
    wrap(channel_mod.OsKenChannel, "flow_counters", stats)

    def answered(orig):
        def _answered(self, run, dpid, members, answer, then):
            t0, c0 = pc(), time.thread_time()
            result = orig(self, run, dpid, members, answer, then)
            flows = len(answer.result()) if answer.exception() is None else None
            record(what="answered", ms=(pc() - t0) * 1000,
                   cpu_ms=(time.thread_time() - c0) * 1000, flows=flows, seen=len(run.seen))
            return result
        return _answered
    wrap(Learning, "_answered", answered)

    def progress(orig):
        def _progress(self, run):
            t0 = pc()
            result = orig(self, run)
            record(what="progress", ms=(pc() - t0) * 1000, seen=len(run.seen))
            return result
        return _progress
    wrap(Learning, "_progress", progress)

    def refused(orig):
        def _refused(self, category, dpid, members, answer):
            t0 = pc()
            result = orig(self, category, dpid, members, answer)
            flows = len(answer.result()) if answer.exception() is None else None
            record(what="refused", ms=(pc() - t0) * 1000, flows=flows)
            return result
        return _refused
    wrap(Enforcement, "_refused", refused)

    def decide(orig):
        def _decide(self):
            t0 = pc()
            result = orig(self)
            if (pc() - t0) * 1000 >= 1:
                record(what="decide", ms=(pc() - t0) * 1000, changed=result)
            return result
        return _decide
    wrap(Enforcement, "decide", decide)

    def contribute(orig):
        def _contribute(self, view):
            t0 = pc()
            result = orig(self, view)
            record(what="contribute", ms=(pc() - t0) * 1000,
                   flows=sum(len(f) for f in result.flows.values()))
            return result
        return _contribute
    wrap(PolicyFeature, "contribute", contribute)

    def reconciling(orig):
        def _reconcile(self, dpid, state, desired_meters):
            stage.setdefault("compiled_at", pc())
            channel = state.flows.channel
            before = dict(getattr(channel, "timing", {}))
            t0 = pc()
            result = orig(self, dpid, state, desired_meters)
            after = getattr(channel, "timing", {})
            steps = {k: (after.get(k, 0) - before.get(k, 0)) * 1000
                     for k in ("apply", "wait", "commit", "write")}
            stage.setdefault("switches", []).append(
                {"dpid": f"{dpid:x}", "ms": (pc() - t0) * 1000, "desired": len(state.desired),
                 **{f"{k}_ms": round(v, 3) for k, v in steps.items()}})
            return result
        return _reconcile
    wrap(convergence.Convergence, "_reconcile", reconciling)

    def converging(orig):
        def _converge(self, *args, **kwargs):
            stage.clear()
            t0, c0 = pc(), time.thread_time()
            try:
                return orig(self, *args, **kwargs)
            finally:
                took = (pc() - t0) * 1000
                if took >= 2:
                    compiled = stage.get("compiled_at")
                    record(what="converge", ms=took, cpu_ms=(time.thread_time() - c0) * 1000,
                           compile_ms=None if compiled is None else (compiled - t0) * 1000,
                           switches=stage.get("switches", []))
                stage.clear()
        return _converge
    wrap(Hub, "_converge", converging)

    if profile:
        import cProfile

        def profiled_run(orig):
            def _run(self, *args, **kwargs):
                prof = cProfile.Profile()
                prof.enable()
                try:
                    return orig(self, *args, **kwargs)
                finally:
                    prof.disable()
                    prof.dump_stats(str(out / "worker.prof"))
            return _run
        wrap(Hub, "_run", profiled_run)

    def running(orig):
        def run(config):
            try:
                return orig(config)
            finally:
                timings.close()
        return run
    wrap(manager, "run", running)
    return manager.main(rest)


def read_timings(out: Path, what: str, since: float = 0.0, until: float = float("inf"),
                 **match: Any) -> list[dict]:
    """The events of kind `what` recorded in [since, until] (wall clock) whose fields
    equal `match`."""
    path = out / "timings.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue                       # a line being written
        if e.get("what") == what and since <= e["at"] <= until \
                and all(e.get(k) == v for k, v in match.items()):
            found.append(e)
    return found
