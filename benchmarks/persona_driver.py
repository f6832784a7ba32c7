"""The hub-controller with timers around its work, for ``benchmarks/personas.py``.

``personas.py --controller-driver OUTDIR [--profile] -- HUB-CONTROLLER ARGS`` runs
``controller.manager.main`` itself, after wrapping a few of the hub's methods
with timers.  Each wrapped method that no longer exists (the hub's insides
move) is skipped with a note on stderr: the run goes on, without that figure.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.persona_common import pc


def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> bool:
    """Replace ``owner.name`` with ``make(original)``; False when there is none."""
    original = getattr(owner, name, None)
    if original is None:
        print(f"persona driver: {getattr(owner, '__name__', owner)}.{name} not found; not timed",
              file=sys.stderr)
        return False
    setattr(owner, name, make(original))
    return True


def drive_controller(argv: list[str]) -> int:
    """Run controller.manager.main with timers (and optionally cProfile) around the hub's work.

    argv: OUTDIR [--profile] -- HUB-CONTROLLER ARGS.  Appends one JSON line per
    event to OUTDIR/timings.jsonl:

      poll      the persona usage poll: ms (wall), cpu_ms (the worker thread's CPU
                time), personas, stats_flows / stats_ms (the flow-stats exchange
                and its decoding: flows returned, ms)
      converge  Hub._converge taking 2 ms or more: ms, cpu_ms, and of that
                compile_ms (the features' contributions) and the reconciles
                (reconcile_ms, switches)
      records   the hub worker reading every persona record (store list): ms, n
      teardown  the persona teardown: ms, personas (torn down in that call)

    With --profile the hub worker thread runs under cProfile (worker.prof, written
    when it stops) and so does every REST endpoint call (rest.prof, merged).
    """
    out = Path(argv[0])
    rest = argv[argv.index("--") + 1:]
    profile = "--profile" in argv[:argv.index("--")]
    import cProfile
    import pstats

    import controller.manager as manager
    from apps import channel as channel_mod
    from controller.core import convergence
    from controller.core.hub import Hub
    from controller.features.persona.runtime import Personas
    from controller.store.sqlite import SQLiteStore

    lock = threading.Lock()
    timings = open(out / "timings.jsonl", "a", buffering=1)

    def record(**data: Any) -> None:
        with lock:
            timings.write(json.dumps({"at": time.time(), **data}) + "\n")

    last_stats: dict = {}
    stage: dict = {}

    def counters(orig):
        def flow_counters(self, *args, **kwargs):
            t0 = pc()
            result = orig(self, *args, **kwargs)
            last_stats.update(n=len(result), ms=(pc() - t0) * 1000)
            return result
        return flow_counters
    wrap(channel_mod.OsKenChannel, "flow_counters", counters)

    # The worker's part of a usage poll: the answer folded in (the request and its
    # decoding run on the hub's request pool, timed by flow_counters above).
    def poll(orig):
        def _counted(self, *args, **kwargs):
            last_stats.clear()
            t0, c0 = pc(), time.thread_time()
            orig(self, *args, **kwargs)
            record(what="poll", ms=(pc() - t0) * 1000, cpu_ms=(time.thread_time() - c0) * 1000,
                   personas=len(getattr(self, "active", ())), stats_flows=last_stats.get("n"),
                   stats_ms=last_stats.get("ms"))
        return _counted
    wrap(Personas, "_counted", poll)

    # Reading every persona record on the worker (the runtime's reloads, the poll's counts).
    def listing(orig):
        def store_list(self, kind):
            t0 = pc()
            docs = orig(self, kind)
            if kind == "persona" and threading.current_thread().name == "hub-worker":
                record(what="records", ms=(pc() - t0) * 1000, n=len(docs))
            return docs
        return store_list
    wrap(SQLiteStore, "list", listing)

    # A teardown batch's end: its three stages took `ms` since the batch began.
    def teardown(orig):
        def _torn_down(self, batch, *args, **kwargs):
            result = orig(self, batch, *args, **kwargs)
            record(what="teardown", ms=(self.ctx.clock() - batch.started) * 1000,
                   personas=len(batch.ids))
            return result
        return _torn_down
    wrap(Personas, "_torn_down", teardown)

    # compile vs reconcile inside a converge: the first reconcile of a converge
    # starts after its compile; time the reconciles themselves.
    def reconciling(orig):
        def _reconcile(self, *args, **kwargs):
            stage.setdefault("compiled_at", pc())
            t0 = pc()
            result = orig(self, *args, **kwargs)
            stage["reconcile_ms"] = stage.get("reconcile_ms", 0.0) + (pc() - t0) * 1000
            stage["switches"] = stage.get("switches", 0) + 1
            return result
        return _reconcile
    wrap(convergence.Convergence, "_reconcile", reconciling)

    def converging(orig):
        def _converge(self, *args, **kwargs):
            if stage.get("depth"):          # a converge inside a teardown step: the outer counts
                return orig(self, *args, **kwargs)
            stage.clear()
            stage["depth"] = 1
            t0, c0 = pc(), time.thread_time()
            try:
                return orig(self, *args, **kwargs)
            finally:
                took = (pc() - t0) * 1000
                if took >= 2:
                    compiled = stage.get("compiled_at")
                    personas = getattr(getattr(self, "personas", None), "active", ())
                    record(what="converge", ms=took, cpu_ms=(time.thread_time() - c0) * 1000,
                           compile_ms=None if compiled is None else (compiled - t0) * 1000,
                           reconcile_ms=stage.get("reconcile_ms", 0.0),
                           switches=stage.get("switches", 0), personas=len(personas))
                stage.clear()
        return _converge
    wrap(Hub, "_converge", converging)

    rest_profiles: list = []
    if profile:
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

        import fastapi.routing as routing

        def threadpool(orig):
            async def run_in_threadpool(func, *args, **kwargs):
                def profiled(*a, **kw):
                    prof = cProfile.Profile()
                    prof.enable()
                    try:
                        return func(*a, **kw)
                    finally:
                        prof.disable()
                        with lock:
                            rest_profiles.append(prof)
                return await orig(profiled, *args, **kwargs)
            return run_in_threadpool
        wrap(routing, "run_in_threadpool", threadpool)

    def running(orig):
        def run(config):
            try:
                return orig(config)
            finally:
                if rest_profiles:
                    with lock:
                        stats = pstats.Stats(rest_profiles[0])
                        for p in rest_profiles[1:]:
                            stats.add(p)
                    stats.dump_stats(str(out / "rest.prof"))
                timings.close()
        return run
    wrap(manager, "run", running)
    return manager.main(rest)
