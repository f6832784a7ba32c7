"""`policy.py` parts 2 and 3: a 500-rule policy applied to N interfaces, and an approval.

**Applied.** Every member also gets the category "tgt".  A policy of R rules (default
500) for the source category "big" is written straight into the controller's store as
its version 1 (`versions.save`: there is no REST route that writes a policy): 70%
egress tcp 10000.. to subnet:ext, 20% egress udp 20000.., 10% ingress tcp 30000.. from
subnet:ext; each peer resolves to one CIDR, so each rule is one flow per member.  Then,
per run, `POST /v1/mirroring-profiles {big -> tgt, strength 100}` at t0, and the
bridge polled (every ~20 ms) until it holds every enforcement flow of the 50 targets
(`ovs-ofctl dump-aggregate` of the profile's cookie, `review_cookie("tgt")`, against
the count `enforce.enforce_flows` gives) and `GET /v1/datapaths/{id}` says in sync;
the journal's reconcile entry gives the hub's own time.  Checked once: every member
reaches ext1 tcp/10000 (rule 1) and none reaches ext1 tcp/80 (not in the policy).
Between runs the profile is deleted and its flows waited out (also timed).

**Approval.** With the profile in force, m1 tries ext1 tcp/9000+k (refused) until
its review is pending, one review per trial.  Then all N members try the same
connection over and over (a new connection every ~5 ms after each 100 ms timeout);
at t0 `POST /v1/policy-reviews/{id}/approve`; the bridge is polled until it holds the
new rule's flow for each member (`table=21,tcp,tp_dst=...`), and each member's first
answered connection is when it was enforced there.  Goal: on all N within 2 s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.persona_common import cpu_seconds, pct
from benchmarks.policy_driver import read_timings
from benchmarks.policy_learn import GraphSize, graph_size
from benchmarks.policy_rig import SUBNETS, Rig
from benchmarks.policy_traffic import Conn, Engine
from controller.features.policy import versions
from controller.features.policy.enforce import (EffectiveRule, Enforced, Infrastructure,
                                                enforce_flows, review_cookie)
from controller.features.policy.observe import Member
from controller.features.policy.rules import Peer, Rule, RuleKey, Rules
from controller.pipeline import tables
from tests.lab.harness import wait_for

SOURCE, TARGET = "big", "tgt"
EXT = Peer("subnet", "ext")
EXT_CIDR = next(s["cidr"] for s in SUBNETS if s["id"] == "ext")
APPROVAL_GOAL = 2.0
REVIEW_PORT = 9000
POLL = 0.02
STEADY = 6.0                  # seconds of nothing but the review poll
AFTER = 3.0                   # seconds after a measurement before its timings are read


def big_policy(n: int, members: list[str], now: float) -> Rules:
    """n rules (70% egress tcp, 20% egress udp, 10% ingress tcp), supports spread so the
    ranking has work to do."""
    shapes = [("egress", "tcp", 10000, 0.7), ("egress", "udp", 20000, 0.2),
              ("ingress", "tcp", 30000, 0.1)]
    counts = [int(n * share) for *_, share in shapes]
    counts[0] += n - sum(counts)
    rules: dict[str, Rule] = {}
    k = 0
    for (direction, proto, first, _), count in zip(shapes, counts):
        for j in range(count):
            key = RuleKey(direction, proto, first + j, EXT)
            used = frozenset(members[: 1 + (k * 7) % len(members)])
            rules[key.id] = Rule(key, members=used, of=len(members), first_seen=now - n + k,
                                 last_seen=now, connections=len(used))
            k += 1
    return Rules(SOURCE, 0, dict(sorted(rules.items())))


def expected_flows(rig: Rig, rules: Rules) -> int:
    """The enforcement flows of every target, as the hub compiles them (the zone index
    changes no count)."""
    effective = tuple(EffectiveRule(r.key, r.action, (EXT_CIDR,)) for r in rules.rules.values())
    total = 0
    for m in rig.members:
        member = Member(m.interface(rig.dpid), rig.dpid, m.port, m.mac, (m.ip,), tables.ARP.id,
                        None)
        total += len(enforce_flows(Enforced(member, 0, effective, "enforce",
                                            Infrastructure((m.gateway,), ()),
                                            review_cookie(TARGET))))
    return total


@dataclass(frozen=True)
class Applied:
    rest_s: float                 # the POST's answer
    flows_s: float                # every flow on the bridge (client poll)
    sync_s: float                 # ... and the datapath in sync
    hub_s: float | None           # the journal's reconcile entry (its ts - t0)
    bundle: dict | None           # that entry's data (add, delete, ms)
    converges: list[dict]         # driver: converges in the window
    contributes: list[dict]       # driver: the policy feature's contributions in it
    polls: list[dict]             # driver: the review poll's flow stats around it
    removed_s: float | None       # DELETE -> the flows gone (None: not deleted)


@dataclass(frozen=True)
class Approval:
    port: int
    rest_s: float
    flows_s: float | None         # the new rule's flow for every member, on the bridge
    hub_s: float | None
    bundle: dict | None
    opened: list[float | None]    # per member: t0 -> its first answered connection
    resolution: list[float]       # that attempt's start - the one before it
    converges: list[dict]
    contributes: list[dict]
    polls: list[dict]


def review_polls(rig: Rig, since: float) -> list[dict]:
    """The review poll's flow-stats round trips that ended after `since` (or ran across it)."""
    return read_timings(rig.ctl.driver_dir, "stats", since - 10, time.time() + 1,
                        cookie=f"{review_cookie(TARGET):x}")


def _watch(rig: Rig, t0: float, count, want: int, give_up: float = 60.0) -> float:
    while time.time() - t0 < give_up:
        if count() >= want:
            return time.time() - t0
        time.sleep(POLL)
    raise RuntimeError(f"not realized after {give_up:g} s: {count()} of {want}")


def apply_once(rig: Rig, want: int, delete_after: bool) -> Applied:
    cookie = f"cookie=0x{review_cookie(TARGET):x}/-1"
    seq = rig.last_event()
    t0 = time.time()
    profile, rest_s = rig.timed("POST", "/v1/mirroring-profiles",
                                {"source_category": SOURCE, "target_category": TARGET,
                                 "strength": 100}, expect=201)
    flows_s = _watch(rig, t0, lambda: rig.flow_count(cookie), want)
    wait_for("in sync", rig.in_sync, 60, POLL)
    sync_s = time.time() - t0
    time.sleep(AFTER)                                   # a poll running meanwhile ends
    hub = [e for e in rig.reconciles(seq) if e["data"].get("add", 0) >= want]
    converges = read_timings(rig.ctl.driver_dir, "converge", t0, time.time())
    contributes = read_timings(rig.ctl.driver_dir, "contribute", t0, time.time())
    polls = review_polls(rig, t0)
    removed = None
    if delete_after:
        t1 = time.time()
        rig.api("DELETE", f"/v1/mirroring-profiles/{profile['id']}")
        wait_for("the flows gone", lambda: rig.flow_count(cookie) == 0 and rig.in_sync(), 60,
                 POLL)
        removed = time.time() - t1
    return Applied(rest_s, flows_s, sync_s, hub[0]["ts"] - t0 if hub else None,
                   hub[0]["data"] if hub else None, converges, contributes, polls, removed)


def check_enforced(rig: Rig, engine: Engine) -> tuple[int, int]:
    """(members reaching ext1 tcp/10000, members reaching ext1 tcp/80): want (N, 0)."""
    ext1 = rig.peers["ext1"]
    engine.serve(ext1.ns, ext1.ip, [10000], "ext1")
    allowed = engine.run_plan([Conn(m.ns, ext1.ip, 10000, "ext1:10000") for m in rig.members],
                              16, 2.0)
    refused = engine.run_plan([Conn(m.ns, ext1.ip, 80, "ext1:80") for m in rig.members], 50, 1.0)
    return allowed.ok, refused.ok


def pending_reviews(rig: Rig, engine: Engine, trials: int) -> dict[int, str]:
    """One pending review per trial port, made by m1's refused attempts."""
    ext1, m1 = rig.peers["ext1"], rig.members[0]
    ports = [REVIEW_PORT + k for k in range(trials)]
    engine.serve(ext1.ns, ext1.ip, ports, "ext1")
    tally = engine.run_plan([Conn(m1.ns, ext1.ip, p, f"ext1:{p}") for p in ports], trials, 0.3)
    if tally.ok:
        raise RuntimeError(f"{tally.ok} connections outside the policy were answered")

    def found():
        rows = rig.api("GET", f"/v1/policy-reviews?category={TARGET}&state=pending")
        got = {r["port"]: r["id"] for r in rows if r["port"] in ports}
        return got if len(got) == len(ports) else None
    return wait_for(f"{trials} pending reviews", found, 30, 0.2)


def approve_once(rig: Rig, engine: Engine, port: int, review_id: str) -> Approval:
    ext1 = rig.peers["ext1"]
    conns = [Conn(m.ns, ext1.ip, port, f"ext1:{port}") for m in rig.members]
    probes = engine.until_open(conns, 0.1, 30.0)
    time.sleep(0.5)                                     # every member trying, refused
    match = f"table={tables.POLICY_EGRESS_FW.id},tcp,tp_dst={port}"
    seq = rig.last_event()
    t0 = time.time()
    _, rest_s = rig.timed("POST", f"/v1/policy-reviews/{review_id}/approve", {})
    try:
        flows_s = _watch(rig, t0, lambda: rig.flow_count(match), len(rig.members), 30)
    except RuntimeError:
        flows_s = None
    results = probes.result(60)
    time.sleep(AFTER)                                   # a poll running meanwhile ends
    hub = [e for e in rig.reconciles(seq) if e["data"].get("add", 0) >= len(rig.members)]
    converges = read_timings(rig.ctl.driver_dir, "converge", t0, time.time())
    contributes = read_timings(rig.ctl.driver_dir, "contribute", t0, time.time())
    polls = review_polls(rig, t0)
    opened = [None if r is None else r[0] - t0 for r in results]
    resolution = [r[0] - r[1] for r in results if r is not None]
    return Approval(port, rest_s, flows_s, hub[0]["ts"] - t0 if hub else None,
                    hub[0]["data"] if hub else None, opened, resolution, converges, contributes,
                    polls)


@dataclass(frozen=True)
class EnforceResult:
    members: int
    rules: int
    flows: int
    store_ms: float
    applied: list[Applied]
    reached: tuple[int, int]
    approvals: list[Approval]
    graph: GraphSize              # the policy's graph (graph.to_graph)
    refused_polls: list[dict]     # the review poll's flow-stats round trips, steady state
    steady_cpu: float             # the controller's CPU meanwhile, in cores


def run(rig: Rig, engine: Engine, n_rules: int, runs: int, trials: int) -> EnforceResult:
    for m in rig.members:
        rig.api("PATCH", f"/v1/interfaces/{m.interface(rig.dpid)}",
                {"categories": ["web", TARGET]})
    wait_for("in sync", rig.in_sync, 60, POLL)
    rules = big_policy(n_rules, [m.interface(rig.dpid) for m in rig.members], time.time())
    store = rig.store()
    try:
        t = time.perf_counter()
        versions.save(store, rules, "benchmark: a policy of many rules", time.time())
        store_ms = (time.perf_counter() - t) * 1000
    finally:
        store.close()
    want = expected_flows(rig, rules)
    applied = [apply_once(rig, want, delete_after=i < runs - 1) for i in range(runs)]
    reached = check_enforced(rig, engine)
    reviews = pending_reviews(rig, engine, trials)
    t_steady, cpu0 = time.time(), cpu_seconds(rig.ctl.proc.pid)
    time.sleep(STEADY)                                  # review polls, nothing else
    steady_cpu = (cpu_seconds(rig.ctl.proc.pid) - cpu0) / (time.time() - t_steady)
    polls = [p for p in review_polls(rig, t_steady) if p["at"] >= t_steady]
    approvals = [approve_once(rig, engine, port, rid) for port, rid in sorted(reviews.items())]
    return EnforceResult(len(rig.members), n_rules, want, store_ms, applied, reached, approvals,
                         graph_size(rules), polls, steady_cpu)


def overlap_ms(event: dict, others: list[dict]) -> float:
    """How long the events `others` ran while `event` did (each ends at "at", lasts "ms")."""
    end = event["at"]
    start = end - event["ms"] / 1000
    return sum(max(0.0, min(end, o["at"]) - max(start, o["at"] - o["ms"] / 1000))
               for o in others) * 1000


def _converge_line(converges: list[dict], contributes: list[dict], polls: list[dict]) -> str:
    """The largest converge of a window: compile (the policy feature's share of it) and
    the switch's reconcile in flow_rate's phases (apply = encode + write + wait + commit),
    and how long the review poll's flow stats ran on the request pool meanwhile."""
    big = max(converges, key=lambda c: c["ms"], default=None)
    if big is None:
        return "no converge recorded"
    sw = big["switches"][0] if big["switches"] else {}
    apply_ms, wait, commit = sw.get("apply_ms", 0), sw.get("wait_ms", 0), sw.get("commit_ms", 0)
    encode = apply_ms - sw.get("write_ms", 0) - wait - commit
    policy = max((c["ms"] for c in contributes), default=0)
    return (f"largest converge {big['ms']:,.0f} ms (worker CPU {big['cpu_ms']:,.0f}): compile "
            f"{big['compile_ms'] or 0:,.0f} (policy's contribute {policy:,.0f}), reconcile "
            f"{sw.get('ms', 0):,.0f} = diff {sw.get('ms', 0) - apply_ms:,.0f} + encode "
            f"{encode:,.0f} + write {sw.get('write_ms', 0):,.0f} + wait {wait:,.0f} + commit "
            f"{commit:,.0f} ms ({sw.get('desired', 0):,} desired); the review poll's flow "
            f"stats ran {overlap_ms(big, polls):,.0f} ms of it")


def report(r: EnforceResult) -> None:
    print(f"a {r.rules}-rule policy applied to {r.members} interfaces: {r.flows:,} enforcement "
          f"flows on one switch (policy written to the store in {r.store_ms:.0f} ms)")
    g = r.graph
    print(f"  its graph (graph.to_graph, tracemalloc): {g.nodes} nodes, {g.edges} edges, "
          f"{g.bytes / 1024:,.0f} KiB ({g.bytes / max(g.rules, 1):,.0f} B a rule), built in "
          f"{g.ms:.0f} ms")
    print("  run   POST ms   hub: bundle in (journal)   flows on the bridge   in sync   "
          "bundle add/ms        removed")
    for i, a in enumerate(r.applied, 1):
        hub = f"{a.hub_s:6.2f} s" if a.hub_s is not None else "     -  "
        bundle = f"{a.bundle['add']:,}/{a.bundle['ms']:,.0f}" if a.bundle else "-"
        removed = f"{a.removed_s:.2f} s" if a.removed_s is not None else "(kept)"
        print(f"  {i:>3} {a.rest_s * 1000:9.1f}   {hub:>24}   {a.flows_s:17.2f} s "
              f"{a.sync_s:7.2f} s   {bundle:>16}   {removed:>8}")
    for i, a in enumerate(r.applied, 1):
        print(f"    run {i}: {_converge_line(a.converges, a.contributes, a.polls)}")
    print(f"  enforced: {r.reached[0]}/{r.members} members reach ext1 tcp/10000 (a rule), "
          f"{r.reached[1]}/{r.members} reach ext1 tcp/80 (not a rule: default deny)")
    if r.refused_polls:
        print(f"  review poll in steady state (every 2 s, flow stats of the profile's cookie): "
              f"{max(p['flows'] for p in r.refused_polls):,} flows a poll, round trip p50 "
              f"{pct([p['ms'] for p in r.refused_polls], 50):,.0f} ms; the controller's CPU "
              f"meanwhile {r.steady_cpu * 100:.0f}% of a core")
    print(f"approval of a review until enforced on all {r.members} (goal "
          f"{APPROVAL_GOAL:g} s), one trial a port:")
    print("  port   POST ms   hub: bundle in   bundle add/del/ms   flows on the bridge   "
          "first answered p50 / last      ratio   resolution")
    for a in r.approvals:
        got = [o for o in a.opened if o is not None]
        last = max(got) if len(got) == len(a.opened) else None
        hub = f"{a.hub_s:.2f} s" if a.hub_s is not None else "-"
        flows = f"{a.flows_s:.2f} s" if a.flows_s is not None else "-"
        lasts = f"{last:.2f} s" if last is not None else f"{len(a.opened) - len(got)} never"
        ratio = f"{last / APPROVAL_GOAL:.2f}x" if last is not None else "-"
        res = f"{pct(a.resolution, 50) * 1000:.0f} ms" if a.resolution else "-"
        p50 = f"{pct(got, 50):.2f}" if got else "-"
        bundle = (f"{a.bundle['add']:,}/{a.bundle['delete']:,}/{a.bundle['ms']:,.0f}"
                  if a.bundle else "-")
        print(f"  {a.port:>5} {a.rest_s * 1000:8.1f}   {hub:>14}   {bundle:>17}   {flows:>19}   "
              f"{p50:>8} / {lasts:<8}   {ratio:>6}   {res:>9}")
    for a in r.approvals:
        print(f"    {a.port}: {_converge_line(a.converges, a.contributes, a.polls)}")


def summary(r: EnforceResult) -> str:
    flows = [a.flows_s for a in r.applied]
    lasts = [max(o for o in a.opened if o is not None) for a in r.approvals
             if all(o is not None for o in a.opened)]
    return (f"{r.rules} rules on {r.members} interfaces: realized in p50 {pct(flows, 50):.2f} s "
            f"(max {max(flows):.2f} s); approval enforced on all {r.members}: "
            + (f"p50 {pct(lasts, 50):.2f} s, max {max(lasts):.2f} s (goal {APPROVAL_GOAL:g} s, "
               f"{max(lasts) / APPROVAL_GOAL:.2f}x)" if lasts else "not on all"))
