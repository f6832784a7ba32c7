"""``personas.py --create-only``: POST /v1/personas latency with N personas stored, in-process.

No lab, no switch, no root: the real API app (``controller.api.app.create_app``)
served by uvicorn on 127.0.0.1 (``controller.api.server.ApiServer``, as the
controller serves it), over a file-backed store opened as the controller opens
it (WAL, synchronous=FULL: every create waits for its commit to reach the
disk), with the unit tests' fake hub (a create only tells the hub, which
answers at once).  N - 1 personas are POSTed one at a time on one keep-alive
connection, each timed: the lab's bodies (the issue's example on distinct
/24s of 10.128.0.0/9).  Then, ``--rounds`` times, one more is POSTed (timed:
a create with N - 1 stored, N after it) and DELETEd (not timed), so that the
p99 at N comes from that many samples, not from the last few of the fill.
The same is done again straight through ``persona.store.create`` in a second
store, to show what of a POST is the store's.  Printed: p50 / p99 / max of
the fill (all, and its last tenth) and of the rounds, and the ratio of the
rounds' p99 to the goal, 50 ms at 1,000 personas.

The hub worker of a real controller shares the GIL with the API: the lab run
(``personas.py`` without ``--create-only``) includes that; this does not.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from benchmarks.persona_common import CREATE_GOAL_MS, Api, filler_body, ms, pc, pct


@dataclass(frozen=True)
class Latencies:
    """Seconds per create: while filling up to N - 1, and at N (the rounds)."""

    label: str
    fill: list[float]
    rounds: list[float]

    def lines(self) -> str:
        tenth = self.fill[-max(1, len(self.fill) // 10):]
        rows = ((f"fill, {len(self.fill):,} creates", self.fill),
                (f"  its last {len(tenth):,}", tenth),
                (f"at N, {len(self.rounds):,} creates", self.rounds))
        return "\n".join([f"  {self.label}", *(f"    {what:<22} {ms(values)}" for what, values in rows)])


def over_http(n: int, rounds: int, db: Path) -> Latencies:
    """POSTs to the real app on uvicorn, one at a time on one connection."""
    from prometheus_client import CollectorRegistry

    import controller.registry  # noqa: F401  (every feature: its routes and claims)
    from controller.api.app import create_app
    from controller.api.context import ApiContext
    from controller.api.server import ApiServer
    from controller.store import open_store
    from tests.unit.fakes import FakeHub

    store = open_store(str(db))
    store.create("subnet", "seg1", {"cidr": "10.0.1.0/24", "gateway": "10.0.1.254"})
    server = ApiServer(create_app(ApiContext(store, FakeHub(), CollectorRegistry(), "bench")),
                       port=0)
    server.start()
    api = Api(server.port)
    expires = time.time() + 86400

    def post(i: int) -> tuple[str, float]:
        _, made, took = api.call("POST", "/v1/personas", filler_body(i, expires), expect=201)
        return made["id"], took

    try:
        fill = []
        for i in range(1, n):
            fill.append(post(i)[1])
            progress(i, n - 1, fill[-1])
        at_n = []
        for _ in range(rounds):
            id, took = post(n)
            at_n.append(took)
            api.call("DELETE", f"/v1/personas/{id}", expect=200)
    finally:
        api.close()
        server.stop()
        store.close()
    return Latencies("POST /v1/personas (HTTP)", fill, at_n)


def in_store(n: int, rounds: int, db: Path) -> Latencies:
    """The same creates straight through the persona store: what of a POST is the store's."""
    import controller.registry  # noqa: F401
    from controller.core.topology import Subnet
    from controller.features.persona import store as personas
    from controller.store import open_store

    store = open_store(str(db))
    subnets = [Subnet("seg1", IPv4Network("10.0.1.0/24"), IPv4Address("10.0.1.254"))]
    expires, now = time.time() + 86400, time.time()

    def create(i: int) -> tuple[str, float]:
        t0 = pc()
        made = personas.create(store, filler_body(i, expires), now, subnets,
                               personas.DEFAULT_NAT_POOL)
        return made.document.id, pc() - t0

    try:
        fill = [create(i)[1] for i in range(1, n)]
        at_n = []
        for _ in range(rounds):
            id, took = create(n)
            at_n.append(took)
            personas.delete(store, id)
    finally:
        store.close()
    return Latencies("persona.store.create", fill, at_n)


def progress(i: int, n: int, took: float) -> None:
    if i % max(1, n // 10) == 0:
        print(f"  created {i:,}/{n:,} (last POST {took * 1000:.1f} ms)", flush=True)


def run(n: int, rounds: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="persona-create-"))
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; creating {n - 1:,} personas over "
              f"HTTP, then {rounds} x one more (in-process app, store in {tmp}) ...", flush=True)
        http = over_http(n, rounds, tmp / "http.db")
        store = in_store(n, rounds, tmp / "store.db")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\npersona create, one at a time, N = {n:,} personas (load at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    for lat in (http, store):
        print(lat.lines())
    p99 = pct(http.rounds, 99) * 1000
    print(f"  POST p99 at {n:,} personas: {p99:.1f} ms = {p99 / CREATE_GOAL_MS:.2f}x the "
          f"{CREATE_GOAL_MS:g} ms goal ({'met' if p99 < CREATE_GOAL_MS else 'NOT met'})")
    return 0
