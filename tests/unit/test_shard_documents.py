"""Shard pool documents: defaults, and bad input refused naming the field."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from controller.core.documents import DocumentInvalid
from controller.features.shard.document import parse_pool

GOOD = {"name": "web", "pool": "10.200.0.0/16", "external_range": "198.51.100.64/26"}


def fields(body) -> dict[str, str]:
    with pytest.raises(DocumentInvalid) as info:
        parse_pool(body)
    return {e["field"]: e["reason"] for e in info.value.errors}


def test_the_defaults_are_the_issues():
    pool = parse_pool(GOOD)
    assert (pool.shard_prefix, pool.lifespan.min, pool.lifespan.max, pool.rotation_interval,
            pool.underutilized_threshold, pool.max_migrations_per_round, pool.max_shards,
            pool.rap.port, pool.rap.lease, pool.quarantine) == \
        (28, 300, 900, 600, 0.2, 10, 100, 6699, 60, 120)
    limits = parse_pool({**GOOD, "shard_prefix": 29, "lifespan": {"min": "1m", "max": "2m"}}).limits()
    assert (limits.pool, limits.prefix, limits.lifespan_min, limits.lifespan_max) == \
        (IPv4Network("10.200.0.0/16"), 29, 60, 120)


@pytest.mark.parametrize("change, field, reason", [
    ({"shard_prefix": 27}, "body.shard_prefix", "28"),
    ({"lifespan": {"min": "15m", "max": "5m"}}, "body.lifespan.max", "shorter than min"),
    ({"lifespan": {"min": "20m"}}, "body.lifespan.max", "shorter than min"),   # the default max
    ({"lifespan": {"min": 0}}, "body.lifespan.min", "zero"),
    ({"pool": "8.8.0.0/16"}, "body.pool", "not a private range"),
    ({"pool": "10.200.0.0/30"}, "body.shard_prefix", "smaller than one /28 shard"),
    ({"external_range": "10.200.1.0/24"}, "body.external_range", "overlaps the pool"),
    ({"quarantine": "30s"}, "body.quarantine", "longer than the UDP conntrack timeout"),
    ({"underutilized_threshold": 1.5}, "body.underutilized_threshold", "1"),
    ({"rap": {"port": 0}}, "body.rap.port", "1"),
    ({"surprise": 1}, "body.surprise", ""),
])
def test_bad_pools_are_refused_naming_the_field(change, field, reason):
    errors = fields({**GOOD, **change})
    assert field in errors and reason in errors[field], errors


def test_a_pool_needs_its_name_ranges_and_an_object():
    assert {"body.name", "body.pool", "body.external_range"} <= set(fields({}))
    assert "body" in fields([])
    assert "body.name" in fields({**GOOD, "name": "\x1f"})
