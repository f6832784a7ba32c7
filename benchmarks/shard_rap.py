"""`shards.py rap`: the hub's RAP server on one core, in-process, no switch.

For each K (`--rap-resources`, default 100 and 1000) a `shard_rig.Rig`
enrolls K resources in one pool, the issue's example 10.200.0.0/16 in /28
shards (a real hub, the shard feature, and the controller's SQLite store in
a temp file: WAL, synchronous=FULL, a commit per write).  The messages are
what `hub-rap` sends, encoded and framed beforehand; the clock runs only
around handing each frame to `Hub.packet_in` and running the worker's queue:
the punt's dispatch, `Receiver.accept` (HMAC, counter, epoch),
`server.answer`, the lease and pool-state writes, the journal, the answer's
encoding and packet-out.  The recompile that a new lease asks for is the
worker's next step, not the message's: it is timed apart (`converge`).

* leases: REGISTER -> OFFER, then ACK of the offered address, K distinct
  resources; a fresh rig per pass (nothing leased, nothing in quarantine),
  passes until `--seconds` of timed work.  REGISTERs that had to carve a new
  shard are shown apart;
* renewals: RENEW -> OFFER of every leased resource, passes until `--seconds`;
* forged: RENEW with a wrong key (bad MAC) for enrolled ids, dropped and
  counted, no answer; passes until `--seconds`.

The process is pinned to one CPU.  Wall and CPU time are both given: the
difference is mostly the store's fsyncs.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from benchmarks.persona_common import pct
from benchmarks.shard_rig import Member, Rig, pool_body
from controller.rap import protocol as rap

POOL_ID = "bench"
POOL, EXTERNAL = "10.200.0.0/16", "198.18.0.0/20"
BAD_KEY = b"not-the-resource-key"


@dataclass(frozen=True)
class Timed:
    """Messages handed to the hub one by one: each one's wall time, and the CPU in all."""
    walls: tuple[float, ...]
    cpu: float
    puts: int           # store writes

    @property
    def wall(self) -> float:
        return sum(self.walls)

    def __add__(self, other: "Timed") -> "Timed":
        return Timed(self.walls + other.walls, self.cpu + other.cpu, self.puts + other.puts)


@dataclass(frozen=True)
class Rate:
    """One kind of work: how many were done (leases, renewals, forged messages dropped)."""
    what: str
    count: int
    work: Timed

    @property
    def per_second(self) -> float:
        return self.count / self.work.wall if self.work.wall else 0.0


@dataclass(frozen=True)
class RapResult:
    resources: int
    leases: Rate
    renewals: Rate
    forged: Rate
    carving: Timed          # the REGISTERs that carved a new shard
    placing: Timed          # the REGISTERs placed in an existing shard
    converge_ms: float      # one worker step recompiling K leased resources' flows

    @property
    def rates(self) -> tuple[Rate, ...]:
        return self.leases, self.renewals, self.forged


class Sender:
    """The resources' side, as hub-rap encodes it: growing counters, fresh nonces."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.counters = {m.id: 0 for m in rig.members}

    def frame(self, m: Member, type_: rap.Type, address: str | None, epoch: int,
              key: bytes | None = None) -> bytes:
        """One message from `m`: from its leased `address` to the gateway, or (none yet)
        from 0.0.0.0 to 255.255.255.255."""
        self.counters[m.id] += 1
        msg = rap.Message(type_, m.id, self.counters[m.id], rap.new_nonce(), epoch,
                          address=IPv4Address(address) if address else None)
        data = rap.encode(msg, key or rap.key_bytes(m.key))
        if address is None:
            return self.rig.frame(m, data, "0.0.0.0", "255.255.255.255")
        return self.rig.frame(m, data, address)


class Bench:
    """One rig, its resources' sender, and a count of the store's writes."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.sender = Sender(rig)
        self.puts = 0
        put = rig.store.put

        def counted(*args, **kwargs):
            self.puts += 1
            return put(*args, **kwargs)
        rig.store.put = counted          # the instance's, for this benchmark only

    def timed(self, frames: list[tuple[Member, bytes]]) -> Timed:
        """Punt each frame and run the worker's queue, one message at a time."""
        walls = []
        p0, c0 = self.puts, time.process_time()
        for member, frame in frames:
            w0 = time.perf_counter()
            self.rig.punt(member, frame)
            self.rig.drain()
            walls.append(time.perf_counter() - w0)
        return Timed(tuple(walls), time.process_time() - c0, self.puts - p0)

    def shards(self) -> int:
        return len(self.rig.shard.state.state(POOL_ID).shards)

    def lease_all(self) -> tuple[Rate, Timed, Timed]:
        """REGISTER -> OFFER -> ACK for every member: the rate, and the REGISTERs split
        into those that carved a new shard and the others."""
        rig = self.rig
        carving, placing = Timed((), 0.0, 0), Timed((), 0.0, 0)
        for m in rig.members:
            frame = self.sender.frame(m, rap.Type.REGISTER, None, 0)
            before = self.shards()
            one = self.timed([(m, frame)])
            if self.shards() > before:
                carving += one
            else:
                placing += one
        offers = {m.id: rap.decode(data, lambda rid, m=m: rap.key_bytes(m.key))
                  for m, data in rig.replies()}
        acks = [(m, self.sender.frame(m, rap.Type.ACK, str(offers[m.id].lease.address),
                                      offers[m.id].epoch))
                for m in rig.members if m.id in offers]
        work = carving + placing + self.timed(acks)
        done = sum(1 for lease in rig.shard.state.leases.values() if lease.state == "leased")
        return Rate("leases", done, work), carving, placing

    def renew_all(self, key: bytes | None = None) -> Timed:
        """A RENEW of its address from every leased member (with `key`: forged)."""
        state = self.rig.shard.state
        frames = [(m, self.sender.frame(m, rap.Type.RENEW, state.leases[m.id].address,
                                        state.epoch, key)) for m in self.rig.members]
        return self.timed(frames)

    def sample(self, name: str, **labels: str) -> float:
        return self.rig.hub.metrics.registry.get_sample_value(name, labels) or 0.0


def new_rig(tmp: Path, n: int, seed: int, run: int) -> Rig:
    pool = pool_body(POOL_ID, POOL, EXTERNAL, max_shards=4096, rap={"lease": 600})
    return Rig(tmp / f"hub-{n}-{run}.db", {POOL_ID: pool}, {POOL_ID: n}, seed=seed + run)


def recompile(rig: Rig) -> float:
    """Seconds of one worker step after a change: every feature's flows compiled, the
    fake switch's diffed and applied."""
    t0 = time.perf_counter()
    rig.hub.changed()
    rig.run()
    return time.perf_counter() - t0


def repeat(pass_, seconds: float) -> Timed:
    work = pass_()
    while work.wall < seconds:
        work += pass_()
    return work


def measure_one(tmp: Path, n: int, seconds: float, seed: int) -> RapResult:
    bench = Bench(new_rig(tmp, n, seed, 0))
    leases, carving, placing = bench.lease_all()
    run = 1
    while leases.work.wall < seconds:               # fresh rigs: K new leases a pass
        bench.rig.close()
        bench = Bench(new_rig(tmp, n, seed, run))
        rate, carved, placed = bench.lease_all()
        leases = Rate(rate.what, leases.count + rate.count, leases.work + rate.work)
        carving, placing, run = carving + carved, placing + placed, run + 1
    assert leases.count == n * run, f"only {leases.count} of {n * run} leased"
    rig = bench.rig
    rig.run()                                       # the recompile the new leases asked for
    converge_ms = statistics.median(recompile(rig) for _ in range(3)) * 1000
    rig.replies()

    before = bench.sample("hub_rap_lease_renewals_total", pool=POOL_ID)
    renewed = repeat(bench.renew_all, seconds)
    answered = len(rig.replies())
    counted = bench.sample("hub_rap_lease_renewals_total", pool=POOL_ID) - before
    assert answered == counted == len(renewed.walls), (answered, counted, len(renewed.walls))

    before = bench.sample("hub_rap_rejected_total", reason="bad_mac")
    forged = repeat(lambda: bench.renew_all(BAD_KEY), seconds)
    assert rig.replies() == [], "a forged message was answered"
    dropped = bench.sample("hub_rap_rejected_total", reason="bad_mac") - before
    rig.close()
    return RapResult(n, leases, Rate("renewals", answered, renewed),
                     Rate("forged (bad MAC)", int(dropped), forged), carving, placing,
                     converge_ms)


def pin_one_cpu() -> tuple[int, set[int]]:
    """Run on one CPU (the last one allowed); returns it and the CPUs allowed before."""
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    return cpu, allowed


def us(values: tuple[float, ...], q: float) -> str:
    return f"{pct(list(values), q) * 1e6:,.0f}" if values else "-"


def report(results: list[RapResult], cpu: int, seconds: float) -> None:
    print(f"RAP server, in-process on CPU {cpu} (pinned); store: the controller's SQLite "
          f"(WAL, synchronous=FULL) in a temp file; pool {POOL} in /28 shards; each kind at "
          f"least {seconds:g} s of timed work")
    print(f"  {'K':>5}  {'kind':<17} {'done':>7} {'msgs':>7} {'per s':>8} {'us/msg':>8} "
          f"{'p50':>7} {'p99':>8} {'cpu us':>7} {'writes':>6}")
    for res in results:
        for r in res.rates:
            w = r.work
            n = len(w.walls)
            print(f"  {res.resources:>5}  {r.what:<17} {r.count:>7,} {n:>7,} "
                  f"{r.per_second:>8,.0f} {w.wall / n * 1e6:>8,.0f} {us(w.walls, 50):>7} "
                  f"{us(w.walls, 99):>8} {w.cpu / n * 1e6:>7,.0f} {w.puts / n:>6.2f}")
        c, p = res.carving, res.placing
        print(f"  {res.resources:>5}  REGISTER: {len(c.walls)} carved a new shard, median "
              f"{us(c.walls, 50)} us ({c.wall / res.leases.work.wall:.0%} of the lease time); "
              f"{len(p.walls):,} placed in an existing one, median {us(p.walls, 50)} us")
        print(f"  {res.resources:>5}  forged dropped per s / leases per s: "
              f"{res.forged.per_second / res.leases.per_second:,.1f}x; a worker step "
              f"recompiling {res.resources:,} leased resources (median of 3): "
              f"{res.converge_ms:,.0f} ms")


def summary(results: list[RapResult]) -> str:
    return "rap: " + "; ".join(
        f"K={r.resources:,} {r.leases.per_second:,.0f} leases/s, {r.renewals.per_second:,.0f} "
        f"renewals/s, {r.forged.per_second:,.0f} forged/s dropped "
        f"({r.forged.per_second / r.leases.per_second:,.0f}x the lease rate)" for r in results)


def run(args) -> list[RapResult]:
    cpu, allowed = pin_one_cpu()
    tmp = Path(tempfile.mkdtemp(prefix="sb-rap-"))
    try:
        results = [measure_one(tmp, n, args.seconds, args.seed) for n in args.rap_resources]
    finally:
        os.sched_setaffinity(0, allowed)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, cpu, args.seconds)
    return results
