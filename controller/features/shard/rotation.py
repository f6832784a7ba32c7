"""The shard rotation engine's decisions, pure: which resources move where, in one round.

Follows the seed's algorithm (seeds/002, "Shard Rotation Engine"):

1. find the active shards below the utilization threshold;
2. select at most `max_migrations` resources to move: first every member of a
   shard past its lifespan (they must move even from a full shard), then the
   members of underutilized shards, then those an operator asked to move;
3. create new shards when the moving resources do not fit in the shards that
   may receive them, never more than `max_shards` in all;
4. give each moving resource a shard other than its own (a fresh address is
   the point), chosen with the injected seeded source;
5. shards left without members retire.

The caller (the runtime) carries a round out move by move (announce, switch
the translation, drain, release) and logs it; nothing here touches a switch
or the store.  Time (`now`) and randomness (`rng`) are passed in.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network
from typing import Iterable, Sequence

ACTIVE, DRAINING, RETIRED = "active", "draining", "retired"
DRAWS = 32              # random tries at a free shard before listing every free one


@dataclass(frozen=True)
class Limits:
    """A pool's rotation settings, in base units (seconds)."""
    pool: IPv4Network
    prefix: int = 28
    lifespan_min: float = 300.0
    lifespan_max: float = 900.0
    threshold: float = 0.2          # underutilized below this share of usable addresses
    max_migrations: int = 10        # resources moved per round, at most
    max_shards: int = 100           # shards at once (active or draining), at most


@dataclass(frozen=True)
class Shard:
    id: str
    cidr: IPv4Network
    created_at: float
    expires_at: float
    members: frozenset[str] = frozenset()     # resource ids
    state: str = ACTIVE

    @property
    def usable(self) -> int:
        return usable_addresses(self.cidr.prefixlen)

    @property
    def utilization(self) -> float:
        return len(self.members) / self.usable

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Move:
    resource: str
    from_shard: str | None          # None: the resource had no shard yet
    to_shard: str


@dataclass(frozen=True)
class Round:
    """One round's plan: new shards, moves, shards to retire, resources left waiting."""
    created: tuple[Shard, ...] = ()
    moves: tuple[Move, ...] = ()
    retired: tuple[str, ...] = ()
    waiting: tuple[str, ...] = field(default=())   # wanted to move, no room (max_shards)


def usable_addresses(prefix: int) -> int:
    """Addresses a shard can give out: all but its network and broadcast addresses."""
    return 2 ** (32 - prefix) - 2


def draw_lifespan(limits: Limits, rng: random.Random) -> float:
    return rng.uniform(limits.lifespan_min, limits.lifespan_max)


def carve(limits: Limits, taken: Iterable[IPv4Network], rng: random.Random) -> IPv4Network | None:
    """A free shard of the pool, drawn at random among the free ones (None: the pool is full).

    A few random draws first (a /16 holds 4,096 /28s, and a pool is mostly free), then,
    when those all hit taken shards, every free one is listed and one drawn."""
    used = list(taken)
    same = {u for u in used if u.prefixlen == limits.prefix}
    other = [u for u in used if u.prefixlen != limits.prefix]    # shards of an older prefix
    size = 2 ** (32 - limits.prefix)
    count = 2 ** (limits.prefix - limits.pool.prefixlen)
    base = int(limits.pool.network_address)

    def free(net: IPv4Network) -> bool:
        return net not in same and not any(net.overlaps(u) for u in other)
    for _ in range(min(DRAWS, count)):
        net = IPv4Network((base + rng.randrange(count) * size, limits.prefix))
        if free(net):
            return net
    candidates = [net for net in limits.pool.subnets(new_prefix=limits.prefix) if free(net)]
    return rng.choice(candidates) if candidates else None


def plan_round(limits: Limits, shards: Sequence[Shard], now: float, rng: random.Random,
               new_id: "Iterable[str]", force: Iterable[str] = ()) -> Round:
    """Decide one rotation round (see the module doc); `new_id` yields ids for new shards."""
    ids = iter(new_id)
    live = [s for s in shards if s.state != RETIRED]
    active = [s for s in live if s.state == ACTIVE]
    home = {r: s.id for s in live for r in s.members}
    expired = [s for s in active if s.expired(now)]
    under = [s for s in active if not s.expired(now) and s.utilization < limits.threshold]
    moving = _select(expired, under, [r for r in force if r in home], limits.max_migrations)
    leaving = {s.id for s in expired} | {home[r] for r in moving}
    # Shards that may receive: active, not expiring, not being emptied this round.
    room = {s.id: s.usable - len(s.members) for s in active
            if not s.expired(now) and s.id not in leaving}
    receivers = {s.id: s for s in active if s.id in room}
    created: list[Shard] = []
    moves: list[Move] = []
    waiting: list[str] = []
    taken = [s.cidr for s in live]
    for resource in moving:
        candidates = [sid for sid, free in room.items() if free > 0 and sid != home[resource]]
        if not candidates:
            shard = _new_shard(limits, taken, now, rng, ids, len(live) + len(created))
            if shard is None:
                waiting.append(resource)
                continue
            created.append(shard)
            taken.append(shard.cidr)
            room[shard.id] = shard.usable
            receivers[shard.id] = shard
            candidates = [shard.id]
        target = rng.choice(sorted(candidates))
        room[target] -= 1
        moves.append(Move(resource, home[resource], target))
    moved = {m.resource for m in moves}
    retired = tuple(sorted(s.id for s in live if s.members and s.members <= moved
                           or (not s.members and s.state == ACTIVE and s.expired(now))))
    return Round(tuple(created), tuple(moves), retired, tuple(waiting))


def place(limits: Limits, shards: Sequence[Shard], now: float, rng: random.Random,
          new_id: "Iterable[str]") -> tuple[Shard | None, Shard | None]:
    """The shard a newly leased resource joins: (an existing one, or a new one to create)."""
    active = [s for s in shards if s.state == ACTIVE and not s.expired(now)
              and len(s.members) < s.usable]
    if active:
        return rng.choice(sorted(active, key=lambda s: s.id)), None
    live = [s for s in shards if s.state != RETIRED]
    return None, _new_shard(limits, [s.cidr for s in live], now, rng, iter(new_id), len(live))


def apply(shards: Sequence[Shard], rnd: Round) -> list[Shard]:
    """The shards once every move of a round is done (for tests and restarts)."""
    by_id = {s.id: s for s in [*shards, *rnd.created]}
    for move in rnd.moves:
        if move.from_shard is not None:
            src = by_id[move.from_shard]
            by_id[move.from_shard] = replace(src, members=src.members - {move.resource})
        dst = by_id[move.to_shard]
        by_id[move.to_shard] = replace(dst, members=dst.members | {move.resource})
    for sid in rnd.retired:
        by_id[sid] = replace(by_id[sid], state=RETIRED)
    return sorted(by_id.values(), key=lambda s: s.id)


def _select(expired: Sequence[Shard], under: Sequence[Shard], forced: Sequence[str],
            limit: int) -> list[str]:
    chosen: list[str] = []
    for group in ([r for s in sorted(expired, key=lambda s: s.expires_at) for r in sorted(s.members)],
                  [r for s in sorted(under, key=lambda s: (s.utilization, s.id))
                   for r in sorted(s.members)],
                  list(forced)):
        for resource in group:
            if len(chosen) == limit:
                return chosen
            if resource not in chosen:
                chosen.append(resource)
    return chosen


def _new_shard(limits: Limits, taken: list[IPv4Network], now: float, rng: random.Random,
               ids: "Iterable[str]", count: int) -> Shard | None:
    if count >= limits.max_shards:
        return None
    cidr = carve(limits, taken, rng)
    if cidr is None:
        return None
    return Shard(next(iter(ids)), cidr, now, now + draw_lifespan(limits, rng))
