"""Shard pool documents: where the shards come from and how they rotate.

One model parses a pool (`ShardPool`); `parse_pool` is the only entry.
Range claims (the pool and the external range may not overlap subnets,
persona ranges, NAT blocks or another pool) are checked when the pool is
written, by the claims the feature declares, not here.
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from controller.core.documents import (NOT_BLANK, DocumentInvalid, DocumentModel, IPv4Cidr,
                                       NotBlank, Seconds, errors_of, fail, rule)
from controller.features.shard.rotation import Limits

KIND = "shard-pool"
UDP_CONNTRACK_TIMEOUT = 30      # seconds: Open vSwitch userspace conntrack, a UDP flow
PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                   "192.168.0.0/16"))


class Lifespan(DocumentModel):
    """How long a shard lives; each shard draws its own from [min, max]."""
    min: Seconds = 300
    max: Seconds = Field(default=900, validate_default=True,
                         json_schema_extra=rule("not shorter than min"))

    @field_validator("max")
    @classmethod
    def _ordered(cls, max: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and low > max:
            fail(f"shorter than min ({low} s)")
        return max


class RapSettings(DocumentModel):
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 6699
    lease: Seconds = 60


class ShardPool(DocumentModel):
    name: Annotated[str, Field(min_length=1, max_length=64), NotBlank] = Field(
        json_schema_extra={"pattern": NOT_BLANK})
    pool: IPv4Cidr = Field(description="Private IPv4 range the shards are carved from",
                           examples=["10.200.0.0/16"],
                           json_schema_extra=rule("private (RFC 1918); holds at least one "
                                                  "shard; overlaps no other range of the hub"))
    shard_prefix: Literal[28, 29] = Field(default=28, validate_default=True, json_schema_extra=rule(
        "the pool holds at least one shard of this size"))
    lifespan: Lifespan = Field(default_factory=Lifespan)
    rotation_interval: Seconds = 600
    underutilized_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    max_migrations_per_round: Annotated[int, Field(strict=True, ge=1, le=1000)] = 10
    max_shards: Annotated[int, Field(strict=True, ge=1, le=4096)] = 100
    external_range: IPv4Cidr = Field(description="Where the resources' stable external "
                                                 "addresses come from",
                                     json_schema_extra=rule("overlaps neither the pool nor any "
                                                            "other range of the hub"))
    rap: RapSettings = Field(default_factory=RapSettings)
    deprecated_lifetime: Seconds = Field(default=3600, description=(
        "How long a deprecated address keeps the connections it still has before it is "
        "released anyway (an address without connections is released at once)"))
    quarantine: Seconds = Field(default=120, json_schema_extra=rule(
        f"longer than the UDP conntrack timeout ({UDP_CONNTRACK_TIMEOUT} s)"))

    @field_validator("pool")
    @classmethod
    def _private(cls, pool: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not any(pool.subnet_of(p) for p in PRIVATE):
            fail(f"{pool} is not a private range (10/8, 172.16/12, 192.168/16)")
        return pool

    @field_validator("shard_prefix")
    @classmethod
    def _fits(cls, prefix: int, info: ValidationInfo) -> int:
        pool = info.data.get("pool")
        if pool is not None and pool.prefixlen > prefix:
            fail(f"the pool {pool} is smaller than one /{prefix} shard")
        return prefix

    @field_validator("external_range")
    @classmethod
    def _apart(cls, external: ipaddress.IPv4Network,
               info: ValidationInfo) -> ipaddress.IPv4Network:
        pool = info.data.get("pool")
        if pool is not None and external.overlaps(pool):
            fail(f"{external} overlaps the pool {pool}")
        return external

    @field_validator("quarantine")
    @classmethod
    def _after_conntrack(cls, quarantine: int) -> int:
        if quarantine <= UDP_CONNTRACK_TIMEOUT:
            fail(f"must be longer than the UDP conntrack timeout ({UDP_CONNTRACK_TIMEOUT} s)")
        return quarantine

    def limits(self) -> Limits:
        """What the rotation engine needs of this pool."""
        return Limits(pool=self.pool, prefix=self.shard_prefix,
                      lifespan_min=self.lifespan.min, lifespan_max=self.lifespan.max,
                      threshold=self.underutilized_threshold,
                      max_migrations=self.max_migrations_per_round, max_shards=self.max_shards)

    def stored_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_pool(doc: Any) -> ShardPool:
    """Validate one pool body; DocumentInvalid lists every bad field (``body.<path>``)."""
    if not isinstance(doc, dict):
        raise DocumentInvalid([("body", "must be an object (a mapping of fields)")], KIND)
    try:
        return ShardPool.model_validate(doc)
    except ValidationError as exc:
        raise DocumentInvalid(errors_of(exc), KIND) from None
