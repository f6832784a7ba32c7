"""`policy.py` part 1: learning across N members and M connections (defaults 50 and 5,000).

Every member m1..mN is "web", db1 and db2 are "db".  Each member's share of the
connections (M/N, 100 by default), in a seeded shuffled order, 16 at a time
(`--concurrency`), real TCP (connect, a line, its answer):

    40%  egress  tcp/80    to ext1            -> egress-tcp-80-subnet-ext        N/N
    20%  egress  tcp/443   to ext2            -> egress-tcp-443-subnet-ext       N/N
    25%  egress  tcp/5432  to db1 / db2       -> egress-tcp-5432-category-db     N/N
    10%  egress  tcp/8000+(i mod 10) to ext1  -> ten rules, N/10 members each
     5%  ingress tcp/9100  from db1           -> ingress-tcp-9100-category-db    N/N

so 14 rules, from 6 records per member.  Before the session, one connection per
member (egress and ingress) warms the datapath and ARP; then the session starts, its
observation flows are waited for, the controller's packet-in counter is read, the
connections run, and the session's progress is waited for until it has counted
them all; the counter is read again (goal: no packet-in).  The observation polls
in that window are the driver's (`policy_driver`): the flow-stats round trip on the
request pool (`stats`, the session's cookie: observation flows and records) and the
worker's part (`answered`: decoding, folding in, and `progress`: consolidation and
the progress write).  The session is stopped, its version read, and the policy
graph (`graph.to_graph` of the rules) measured with tracemalloc.
"""
from __future__ import annotations

import random
import time
import tracemalloc
from dataclasses import dataclass

from benchmarks.persona_common import pct
from benchmarks.policy_driver import read_timings
from benchmarks.policy_rig import Rig
from benchmarks.policy_traffic import Conn, Engine, Tally
from controller.features.policy import graph
from controller.features.policy.observe import Member, observe_flows, record_cookie
from controller.features.policy.rules import Rules
from controller.pipeline import tables
from tests.lab.harness import wait_for

SHARES = ((0.40, "ext1", 80), (0.20, "ext2", 443), (0.25, "db", 5432), (0.10, "ext1", None),
          (0.05, "ingress", 9100))
CONCURRENCY = 16
EXPECTED_RULES = 14


@dataclass(frozen=True)
class GraphSize:
    rules: int
    nodes: int
    edges: int
    bytes: int              # allocated by to_graph and still held by the graph
    ms: float


def graph_size(rules: Rules) -> GraphSize:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        g = graph.to_graph(rules)
        took = (time.perf_counter() - t0) * 1000
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return GraphSize(len(rules.rules), g.number_of_nodes(), g.number_of_edges(), held, took)


@dataclass(frozen=True)
class LearnResult:
    members: int
    connections: int
    concurrency: int
    tally: Tally
    counted: int                      # the session's progress: connections
    counted_after: float              # seconds from the last connection to the last count
    packet_ins: dict[str, float]      # by table, during the window
    setup_packet_ins: dict[str, float]
    polls: list[dict]                 # stats events of the session's cookie
    answered: list[dict]
    progress: list[dict]
    rules: list[dict]
    short: dict[str, tuple[int, int]]   # rule id: (made, counted), where they differ
    stop_s: float                     # stop POST -> version
    graph: GraphSize


def plan(rig: Rig, total: int, seed: int = 1) -> list[Conn]:
    per = total // len(rig.members)
    out: list[Conn] = []
    for i, m in enumerate(rig.members):
        n = per + (1 if i < total - per * len(rig.members) else 0)
        counts = [int(n * share) for share, _, _ in SHARES]
        counts[0] += n - sum(counts)
        for (_, peer, port), count in zip(SHARES, counts):
            for k in range(count):
                if peer == "ingress":
                    db1 = rig.peers["db1"]
                    out.append(Conn(db1.ns, m.ip, port, f"{m.name}:{port}"))
                    continue
                name = f"db{1 + k % 2}" if peer == "db" else peer
                p = port if port is not None else 8000 + i % 10
                out.append(Conn(m.ns, rig.peers[name].ip, p, f"{name}:{p}"))
    random.Random(seed).shuffle(out)
    return out


def serve(rig: Rig, engine: Engine) -> None:
    ext1, ext2 = rig.peers["ext1"], rig.peers["ext2"]
    engine.serve(ext1.ns, ext1.ip, [80, *range(8000, 8010)], "ext1")
    engine.serve(ext2.ns, ext2.ip, [443], "ext2")
    for name in ("db1", "db2"):
        engine.serve(rig.peers[name].ns, rig.peers[name].ip, [5432], name)
    for m in rig.members:
        engine.serve(m.ns, m.ip, [9100], m.name)


def observation_flows(rig: Rig) -> int:
    """How many flows the session's observation compiles (`observe_flows` of each member)."""
    cookie = record_cookie("web")
    return sum(len(observe_flows(Member(m.interface(rig.dpid), rig.dpid, m.port, m.mac,
                                        (m.ip,), tables.ARP.id, None), 0, cookie))
               for m in rig.members)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {t: after.get(t, 0) - before.get(t, 0) for t in after
            if after.get(t, 0) != before.get(t, 0)}


def counted(rig: Rig, path: str, want: int, quiet: float = 10.0) -> tuple[int, float]:
    """The session's count once it has reached `want`, or has not changed for `quiet`
    seconds; and when it last changed (wall clock)."""
    last, changed = -1, time.time()
    while True:
        got = rig.api("GET", path)["progress"]["connections"]
        if got != last:
            last, changed = got, time.time()
        if got >= want or time.time() - changed > quiet:
            return got, changed
        time.sleep(0.1)


def rule_of(rig: Rig, conn: Conn) -> str:
    """The rule id a connection of the plan makes."""
    if conn.port == 9100:
        return "ingress-tcp-9100-category-db"
    peer = "category-db" if conn.ip in (rig.peers["db1"].ip, rig.peers["db2"].ip) \
        else "subnet-ext"
    return f"egress-tcp-{conn.port}-{peer}"


def shortfall(rig: Rig, connections: list[Conn], rules: list[dict]) -> dict[str, tuple[int, int]]:
    """{rule id: (connections made, counted)} of the rules whose count is not what was made."""
    made: dict[str, int] = {}
    for c in connections:
        made[rule_of(rig, c)] = made.get(rule_of(rig, c), 0) + 1
    got = {r["id"]: r["connections"] for r in rules}
    return {rid: (n, got.get(rid, 0)) for rid, n in sorted(made.items()) if got.get(rid) != n}


def run(rig: Rig, engine: Engine, total: int, concurrency: int = CONCURRENCY) -> LearnResult:
    start_ins = rig.packet_ins()
    for m in rig.members:
        rig.api("PATCH", f"/v1/interfaces/{m.interface(rig.dpid)}", {"categories": ["web"]})
    for name in ("db1", "db2"):
        rig.api("PATCH", f"/v1/interfaces/{rig.peers[name].interface(rig.dpid)}",
                {"categories": ["db"]})
    warm = engine.run_plan([Conn(m.ns, rig.peers["ext1"].ip, 80, "ext1:80") for m in rig.members]
                           + [Conn(rig.peers["db1"].ns, m.ip, 9100, f"{m.name}:9100")
                              for m in rig.members], CONCURRENCY)
    if warm.failed:
        raise RuntimeError(f"warm-up: {warm.failed} of {warm.ok + warm.failed} connections "
                           "failed (the rig does not forward)")
    session = rig.api("POST", "/v1/learning-sessions", {"category": "web"}, expect=201)
    want = observation_flows(rig)
    cookie = f"cookie=0x{record_cookie('web'):x}/-1"
    wait_for(f"{want} observation flows", lambda: rig.flow_count(cookie) >= want
             and rig.in_sync(), 60, 0.2)
    time.sleep(1.0)
    before = rig.packet_ins()
    t0 = time.time()
    connections = plan(rig, total)
    tally = engine.run_plan(connections, concurrency)
    t_last = time.time()
    path = f"/v1/learning-sessions/{session['id']}"

    got, changed = counted(rig, path, tally.ok)
    counted_after = changed - t_last
    time.sleep(2.5)                    # one more poll, in steady state
    after = rig.packet_ins()
    t1 = time.time()
    hexcookie = f"{record_cookie('web'):x}"
    polls = read_timings(rig.ctl.driver_dir, "stats", t0, t1, cookie=hexcookie)
    answered = read_timings(rig.ctl.driver_dir, "answered", t0, t1)
    progress = read_timings(rig.ctl.driver_dir, "progress", t0, t1)
    ts = time.time()
    rig.api("POST", f"{path}/stop")
    wait_for("the session's version", lambda: rig.api("GET", path).get("policy_version"), 30,
             0.05)
    stop_s = time.time() - ts
    policy = rig.api("GET", "/v1/policies/web")
    return LearnResult(len(rig.members), total, concurrency, tally, got, counted_after, delta(after, before),
                       delta(before, start_ins), polls, answered, progress, policy["rules"],
                       shortfall(rig, connections, policy["rules"]) if not tally.failed else {},
                       stop_s, graph_size(Rules.from_json(policy)))


def spread(values: list[float], unit: str = "ms") -> str:
    if not values:
        return "-"
    return (f"p50 {pct(values, 50):,.1f} {unit}, max {max(values):,.1f} {unit} "
            f"({len(values)} of them)")


def report(r: LearnResult) -> None:
    t = r.tally
    print(f"learning: {r.members} members, {r.connections:,} connections (real TCP, "
          f"{r.concurrency} at a time)")
    print(f"  connections: {t.ok:,} answered, {t.failed} failed, in {t.seconds:.1f} s "
          f"({t.ok / t.seconds:,.0f}/s); the session counted {r.counted:,} "
          f"({r.counted_after:.1f} s after the last one)")
    if r.short:
        print("    counted differently from what was made (rule: made -> counted): "
              + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in r.short.items()))
    ins = sum(r.packet_ins.values())
    by = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.packet_ins.items())) or "none"
    print(f"  packet-ins while learning (steady state, goal 0): {ins:.0f} ({by}); during "
          f"setup and warm-up: {sum(r.setup_packet_ins.values()):.0f}")
    flows = [p["flows"] for p in r.polls]
    print(f"  observation poll, every 2 s, {len(r.polls)} in the window:")
    print(f"    flow-stats round trip (request pool, one switch, the session's cookie: "
          f"{max(flows) if flows else 0:,} flows incl. records): "
          f"{spread([p['ms'] for p in r.polls])}")
    print(f"    worker: records folded in (Learning._answered): "
          f"{spread([a['ms'] for a in r.answered])}; its CPU "
          f"{spread([a['cpu_ms'] for a in r.answered])}")
    print(f"      of which consolidation + progress write (Learning._progress): "
          f"{spread([p['ms'] for p in r.progress])}")
    seen = max((a["seen"] for a in r.answered), default=0)
    print(f"    records held by the session: {seen}")
    supports = sorted({x["support"] for x in r.rules})
    print(f"  stopped: version in {r.stop_s * 1000:,.0f} ms; {len(r.rules)} rules (expected "
          f"{EXPECTED_RULES}), supports {', '.join(supports)}; ports "
          f"{sorted({x['port'] for x in r.rules})}")
    g = r.graph
    print(f"  policy graph (graph.to_graph, tracemalloc): {g.rules} rules -> {g.nodes} nodes, "
          f"{g.edges} edges, {g.bytes / 1024:,.1f} KiB ({g.bytes / max(g.rules, 1):,.0f} B a "
          f"rule), built in {g.ms:.1f} ms")


def summary(r: LearnResult) -> str:
    return (f"learning ({r.members} members, {r.connections:,} connections): "
            f"{sum(r.packet_ins.values()):.0f} packet-ins (goal 0); poll round trip p50 "
            f"{pct([p['ms'] for p in r.polls], 50) if r.polls else float('nan'):.1f} ms, "
            f"worker p50 {pct([a['ms'] for a in r.answered], 50) if r.answered else float('nan'):.1f}"
            f" ms; graph {r.graph.bytes / 1024:,.1f} KiB for {r.graph.rules} rules")
