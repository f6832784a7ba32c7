"""The shard rotation engine's decisions, with an injected clock and seed."""
from __future__ import annotations

import itertools
import random
from ipaddress import IPv4Network

from controller.features.shard.rotation import (ACTIVE, RETIRED, Limits, Shard, apply,
                                                draw_lifespan, place, plan_round,
                                                usable_addresses)

POOL = IPv4Network("10.200.0.0/16")
NOW = 10_000.0
LIMITS = Limits(pool=POOL)


def shard(n: int, members: int, expires_in: float = 600.0, prefix: int = 28,
          tag: str = "r") -> Shard:
    cidr = list(POOL.subnets(new_prefix=prefix))[n]
    return Shard(f"s{n}", cidr, NOW - 60, NOW + expires_in,
                 frozenset(f"{tag}{n}-{i}" for i in range(members)))


def ids():
    return (f"n{i}" for i in itertools.count())


def rnd(shards, seed=1, limits=LIMITS, now=NOW, force=()):
    return plan_round(limits, shards, now, random.Random(seed), ids(), force)


def test_usable_addresses_of_a_shard():
    assert usable_addresses(28) == 14 and usable_addresses(29) == 6


def test_only_shards_below_the_threshold_are_emptied():
    low, fine = shard(0, 2), shard(1, 3)            # 2/14 = 0.14 < 0.2; 3/14 = 0.21
    plan = rnd([low, fine])
    assert {m.resource for m in plan.moves} == set(low.members)
    assert all(m.from_shard == "s0" and m.to_shard != "s0" for m in plan.moves)
    assert plan.retired == ("s0",)


def test_at_most_max_migrations_move_in_one_round():
    shards = [shard(n, 1) for n in range(30)]        # 30 underutilized shards
    plan = rnd(shards)
    assert len(plan.moves) == 10
    assert len({m.resource for m in plan.moves}) == 10
    plan = rnd(shards, limits=Limits(pool=POOL, max_migrations=3))
    assert len(plan.moves) == 3


def test_members_of_an_expired_shard_move_even_from_a_full_one():
    full = shard(0, 14, expires_in=-1)
    plan = rnd([full, shard(1, 10)])
    assert {m.resource for m in plan.moves} == set(sorted(full.members)[:10])
    assert all(m.to_shard != "s0" for m in plan.moves)


def test_new_shards_are_created_when_the_movers_do_not_fit():
    plan = rnd([shard(0, 2), shard(1, 14)])          # the only other shard is full
    assert len(plan.created) == 1
    new = plan.created[0]
    assert new.cidr.prefixlen == 28 and new.cidr.subnet_of(POOL)
    assert not new.cidr.overlaps(shard(0, 0).cidr) and not new.cidr.overlaps(shard(1, 0).cidr)
    assert {m.to_shard for m in plan.moves} == {new.id}


def test_max_shards_is_never_exceeded():
    limits = Limits(pool=POOL, max_shards=2)
    plan = rnd([shard(0, 2), shard(1, 14)], limits=limits)
    assert plan.created == () and plan.moves == ()
    assert set(plan.waiting) == set(shard(0, 2).members)
    after = apply([shard(0, 2), shard(1, 14)], plan)
    assert len([s for s in after if s.state != RETIRED]) <= 2


def test_lifespans_are_drawn_within_bounds():
    rng = random.Random(7)
    limits = Limits(pool=POOL, lifespan_min=300, lifespan_max=900)
    drawn = [draw_lifespan(limits, rng) for _ in range(1000)]
    assert min(drawn) >= 300 and max(drawn) <= 900 and max(drawn) - min(drawn) > 500
    plan = rnd([shard(0, 2), shard(1, 14)], seed=3)
    new = plan.created[0]
    assert 300 <= new.expires_at - new.created_at <= 900 and new.created_at == NOW


def test_the_same_seed_gives_the_same_round_and_another_seed_may_not():
    shards = [shard(n, 1) for n in range(3)] + [shard(n, 5) for n in range(10, 14)]
    assert rnd(shards, seed=5) == rnd(shards, seed=5)
    assert len({rnd(shards, seed=s).moves for s in range(10)}) > 1


def test_a_forced_move_gives_a_resource_another_shard():
    a, b = shard(0, 5), shard(1, 5)
    plan = rnd([a, b], force=["r0-1"])
    (move,) = plan.moves
    assert move.resource == "r0-1" and move.from_shard == "s0" and move.to_shard == "s1"
    assert plan.retired == ()


def test_applying_a_round_moves_members_and_retires_emptied_shards():
    shards = [shard(0, 2), shard(1, 4)]
    after = {s.id: s for s in apply(shards, rnd(shards))}
    assert after["s0"].state == RETIRED and after["s0"].members == frozenset()
    assert after["s1"].members == shard(1, 4).members | shard(0, 2).members
    assert after["s1"].state == ACTIVE


def test_a_new_resource_joins_a_shard_with_room_or_a_new_one():
    existing, new = place(LIMITS, [shard(0, 3)], NOW, random.Random(1), ids())
    assert existing is not None and existing.id == "s0" and new is None
    existing, new = place(LIMITS, [shard(0, 14)], NOW, random.Random(1), ids())
    assert existing is None and new is not None and new.cidr.subnet_of(POOL)
    limits = Limits(pool=IPv4Network("10.200.0.0/28"))
    assert place(limits, [shard(0, 14)], NOW, random.Random(1), ids()) == (None, None)
