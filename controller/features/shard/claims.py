"""The shard feature's claims (see controller.core.claims).

* a pool takes its range and its external range (``ipv4``);
* an enrolled resource (``shard-resource``) takes its interface (no persona
  or personality may hold it, nor another resource), its external address
  (``shard.external_ip``) and its index (``shard.index``, its conntrack zone).
"""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim
from controller.features.shard.records import RESOURCE

POOL = "shard-pool"
EXTERNAL_IP, INDEX = "shard.external_ip", "shard.index"


def pool_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    """Both ranges are the pool's: no subnet, persona range, NAT block or other pool
    may overlap them."""
    out = []
    for field in ("pool", "external_range"):
        if body.get(field):
            out.append(Claim.range(body[field], f"body.{field}",
                                   f"is the {field.replace('_', ' ')} of shard pool {id!r}"))
    return out


def resource_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    pool = body["pool_id"]
    return [Claim.interface(body["interface_id"], "body.interface_id",
                            f"is enrolled in shard pool {pool!r} as resource {id!r}"),
            Claim.unique(EXTERNAL_IP, body["external_ip"], "body.external_ip",
                         f"is the external address of shard resource {id!r}"),
            Claim.unique(INDEX, int(body["index"]), "body.index",
                         f"is the index of shard resource {id!r}")]


claims.declare(POOL, pool_claims, feature="shard")
claims.declare(RESOURCE, resource_claims, feature="shard")
