"""`shards.py recon`: how long a leaked map of shard addresses stays true.

An attacker learns every shard address of a pool at time t (a leaked log,
say) and tries them later.  Two pools in one hub, `--recon-resources` each
(default 50), simulated with injected clocks and a seed:

* `rotating`: the issue's defaults (lifespan 5m..15m, rotation_interval 10m,
  underutilized_threshold 0.2, max_migrations_per_round 10, /28 shards);
* `static`: the same pool with rotation_interval and lifespans of 10^7 s:
  no round ever runs.

It drives the real runtime: the shard feature on a hub over a fake switch
(`shard_rig.Rig`, the controller's SQLite store in a temp file), and one real
`hub-rap` state machine per resource (`controller.rap.client.Client`, its
addresses on a fake interface) that registers, renews at T1, ACKs every
ANNOUNCE and drops what the hub RELEASEs.  Time moves in steps of `--step`
seconds (default 1); each step runs the clients' timers, then the hub's
worker until nothing is left to answer.  The fake switch counts no
connections, so a deprecated address is released at the first drain poll.

After `--warmup` minutes (default 20) an address map leaks, again every
`--spacing` minutes (`--leaks` maps, default 6).  A leaked address still
reaches its resource at t + 1, 5 and 10 minutes when the hub still
translates for it (the resource's current or a still-deprecated address) and
the resource's interface still carries it.  Printed: the share per pool
(mean over the leaks, and the range), the ratio rotating / static, the
leaked addresses now held by another resource, and the rotating pool's moves
per minute over the measured span.

`forced_round` is the rotation benchmark's in-process counterpart: the same
forced round of N moves with the hub alone (clients answering at once).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from benchmarks.shard_rig import GATEWAY, RAP_PORT, Member, Rig, pool_body
from controller.rap import protocol as rap
from controller.rap.addresses import AddressError
from controller.rap.client import Client

NEVER = 10_000_000                      # seconds: "never" for the static pool
POOLS = {
    "rotating": pool_body("rotating", "10.200.0.0/16", "198.18.0.0/24"),
    "static": pool_body("static", "10.201.0.0/16", "198.18.1.0/24",
                        lifespan={"min": NEVER, "max": NEVER}, rotation_interval=NEVER),
}
AFTER_MINUTES = (1, 5, 10)


class FakeInterface:
    """`controller.rap.addresses.Addresses` on a dict: what `ip addr` would hold."""

    def __init__(self) -> None:
        self.held: dict[IPv4Interface, tuple[int, int]] = {}
        self.source: IPv4Address | None = None

    def ipv4(self) -> list[IPv4Interface]:
        return list(self.held)

    def replace(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        self.held[address] = (valid, preferred)

    def change(self, address: IPv4Interface, valid: int, preferred: int) -> None:
        if address not in self.held:
            raise AddressError(f"{address} is not on the interface")
        self.held[address] = (valid, preferred)

    def delete(self, address: IPv4Interface) -> None:
        if self.held.pop(address, None) is None:
            raise AddressError(f"{address} is not on the interface")
        if self.source == address.ip:
            self.source = None

    def default_route(self, source: IPv4Address) -> None:
        self.source = source

    def addresses(self) -> set[str]:
        return {str(a.ip) for a in self.held}


class Resource:
    """One resource: its enrolment, its fake interface and its hub-rap state machine."""

    def __init__(self, rig: Rig, member: Member) -> None:
        self.member = member
        self.interface = FakeInterface()
        self.client = Client(member.id, rap.key_bytes(member.key), IPv4Address(GATEWAY),
                             RAP_PORT, self.interface, self._send, now=rig.clock,
                             counter=rap.Counter(rig.wall))
        self.rig = rig

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        src = str(self.interface.source) if self.interface.source else "0.0.0.0"
        self.rig.punt(self.member, self.rig.frame(self.member, data, src, to[0]))


@dataclass(frozen=True)
class Sample:
    """One leak, looked at once: per pool, (still reaching, held by another, leaked)."""
    leak: int
    minutes: int
    pools: dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class ReconResult:
    seed: int
    resources: int
    samples: tuple[Sample, ...]
    moves_per_minute: float
    rounds: dict[str, int]
    failed_moves: int
    mismatches: int             # hub and interface disagreed on a leaked address
    simulated_minutes: float
    wall_seconds: float


class Sim:
    def __init__(self, db: Path, pools: dict[str, dict], resources: int, seed: int,
                 step: float = 1.0) -> None:
        self.rig = Rig(db, pools, {pid: resources for pid in pools}, seed=seed)
        self.resources = {m.id: Resource(self.rig, m) for m in self.rig.members}
        self.step_s = step
        self.mismatches = 0
        for r in self.resources.values():
            r.client.start()
        self.settle()

    def settle(self) -> None:
        """The hub's worker, then its answers to the clients, until nothing is left."""
        for _ in range(100):
            self.rig.run()
            replies = self.rig.replies()
            if not replies:
                return
            for member, payload in replies:
                self.resources[member.id].client.receive(payload, (GATEWAY, RAP_PORT))
        raise RuntimeError("the hub and the clients did not settle in 100 exchanges")

    def advance(self, seconds: float) -> None:
        steps = max(1, round(seconds / self.step_s))
        for _ in range(steps):
            self.rig.advance(self.step_s)
            for r in self.resources.values():
                r.client.tick()
            self.settle()

    def leak(self) -> dict[str, str]:
        """Every resource's current shard address, as a leaked log would show them."""
        leases = self.rig.shard.state.leases
        return {rid: leases[rid].address for rid in self.resources if leases[rid].address}

    def reaching(self, leaked: dict[str, str], pool_id: str) -> tuple[int, int, int]:
        leases = self.rig.shard.state.leases
        held_by = {a: rid for rid, lease in leases.items() for a in
                   (lease.address, *(d.address for d in lease.deprecated)) if a}
        mine = [(rid, a) for rid, a in leaked.items()
                if self.resources[rid].member.pool_id == pool_id]
        still = other = 0
        for rid, address in mine:
            hub = held_by.get(address) == rid
            host = address in self.resources[rid].interface.addresses()
            if hub != host:
                self.mismatches += 1
            still += hub and host
            other += held_by.get(address, rid) != rid
        return still, other, len(mine)

    def sample(self, name: str, **labels: str) -> float:
        return self.rig.hub.metrics.registry.get_sample_value(name, labels) or 0.0


def measure(args) -> ReconResult:
    tmp = Path(tempfile.mkdtemp(prefix="sb-recon-"))
    w0 = time.perf_counter()
    try:
        sim = Sim(tmp / "hub.db", POOLS, args.recon_resources, args.seed, args.step)
        leased = sum(1 for lease in sim.rig.shard.state.leases.values()
                     if lease.state == "leased")
        assert leased == len(sim.resources), f"only {leased} of {len(sim.resources)} leased"
        start = sim.rig.wall()
        sim.advance(args.warmup * 60)
        moved0 = sim.sample("hub_shard_moves_total", pool="rotating", result="moved")
        t_moves0 = sim.rig.wall()
        # (leak index, its minute offset) -> leaked map; looked at on the way
        leaks: dict[int, dict[str, str]] = {}
        due = sorted({(k * args.spacing + m, k, m) for k in range(args.leaks)
                      for m in (0, *AFTER_MINUTES)})
        now_min = 0.0
        samples = []
        for at, k, m in due:
            sim.advance((at - now_min) * 60)
            now_min = at
            if m == 0:
                leaks[k] = sim.leak()
                continue
            samples.append(Sample(k, m, {pid: sim.reaching(leaks[k], pid) for pid in POOLS}))
        minutes = (sim.rig.wall() - t_moves0) / 60
        moved = sim.sample("hub_shard_moves_total", pool="rotating", result="moved") - moved0
        rounds = {reason: int(sim.sample("hub_shard_rotation_rounds_total", pool="rotating",
                                         reason=reason))
                  for reason in ("interval", "expired", "forced")}
        failed = int(sim.sample("hub_shard_moves_total", pool="rotating", result="failed")
                     + sim.sample("hub_shard_moves_total", pool="static", result="failed"))
        static_rounds = sum(sim.sample("hub_shard_rotation_rounds_total", pool="static",
                                       reason=r) for r in ("interval", "expired", "forced"))
        assert static_rounds == 0, f"the static pool ran {static_rounds} rounds"
        simulated = (sim.rig.wall() - start) / 60
        sim.rig.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReconResult(args.seed, args.recon_resources, tuple(samples), moved / minutes,
                       rounds, failed, sim.mismatches, simulated, time.perf_counter() - w0)


def forced_round(resources: int, seed: int) -> tuple[float, str]:
    """The hub's own part of one forced round of `resources` moves: wall seconds from
    the query to the round's final state, in-process (fake switch, clients that answer
    at once, no `ip` commands), and that state."""
    pool = pool_body("bench", "10.200.0.0/16", "203.0.113.0/24",
                     lifespan={"min": NEVER, "max": NEVER}, rotation_interval=NEVER,
                     max_migrations_per_round=max(resources, 10))
    tmp = Path(tempfile.mkdtemp(prefix="sb-round-"))
    try:
        sim = Sim(tmp / "hub.db", {"bench": pool}, resources, seed)
        shard = sim.rig.shard
        t0 = time.perf_counter()
        started = shard.query("rotate", pool_id="bench", resources=list(sim.resources))
        sim.settle()
        while started["id"] in shard.state.rotations:      # still running
            sim.advance(0.05)           # the realization poll, the drain's first count
        took = time.perf_counter() - t0
        state = sim.rig.store.get("shard-rotation", started["id"]).body["state"]
        sim.rig.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return took, state


def shares(result: ReconResult, minutes: int, pool_id: str) -> list[float]:
    return [s.pools[pool_id][0] / s.pools[pool_id][2] for s in result.samples
            if s.minutes == minutes]


def others(result: ReconResult, minutes: int, pool_id: str) -> int:
    return sum(s.pools[pool_id][1] for s in result.samples if s.minutes == minutes)


def report(r: ReconResult, args) -> None:
    leaks = len({s.leak for s in r.samples})
    print(f"reconnaissance, simulated: seed {r.seed}, {r.resources} resources per pool, "
          f"{leaks} leaked maps (after {args.warmup:g} min, every {args.spacing:g} min), "
          f"steps of {args.step:g} s; {r.simulated_minutes:.0f} simulated minutes in "
          f"{r.wall_seconds:.0f} s")
    print(f"  {'after':>6}  {'rotating: still reach':>24}  {'static: still reach':>22}  "
          f"{'ratio':>6}  {'now another resource':>21}")
    for m in AFTER_MINUTES:
        rot, sta = shares(r, m, "rotating"), shares(r, m, "static")
        mean_r, mean_s = sum(rot) / len(rot), sum(sta) / len(sta)
        ratio = f"{mean_r / mean_s:.2f}" if mean_s else "-"
        print(f"  {m:>3} min  {mean_r:>7.1%} ({min(rot):.0%}..{max(rot):.0%})"
              f"{'':>6}  {mean_s:>7.1%} ({min(sta):.0%}..{max(sta):.0%})  {ratio:>6}  "
              f"{others(r, m, 'rotating'):>5} of {r.resources * leaks} (rotating)")
    print(f"  rotating pool: {r.moves_per_minute:.1f} moves per minute over the measured "
          f"span; rounds since the start: {r.rounds['interval']} interval, "
          f"{r.rounds['expired']} expired; failed moves {r.failed_moves}; static pool: no "
          f"round")
    if r.mismatches:
        print(f"  warning: {r.mismatches} leaked addresses the hub and the resource's "
              f"interface disagreed on")


def summary(r: ReconResult) -> str:
    rot, sta = shares(r, 10, "rotating"), shares(r, 10, "static")
    mean_r, mean_s = sum(rot) / len(rot), sum(sta) / len(sta)
    return (f"recon (seed {r.seed}): a leaked map still reaches {mean_r:.0%} of a rotating "
            f"pool after 10 min against {mean_s:.0%} without rotation "
            f"({mean_r / mean_s if mean_s else 0:.2f}x); {r.moves_per_minute:.1f} moves/min")


def run(args) -> ReconResult:
    result = measure(args)
    report(result, args)
    return result
