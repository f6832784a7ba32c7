"""The shard feature's claims: a pool takes its range and its external range."""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim

POOL = "shard-pool"


def pool_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    """Both ranges are the pool's: no subnet, persona range, NAT block or other pool
    may overlap them."""
    out = []
    for field in ("pool", "external_range"):
        if body.get(field):
            out.append(Claim.range(body[field], f"body.{field}",
                                   f"is the {field.replace('_', ' ')} of shard pool {id!r}"))
    return out


claims.declare(POOL, pool_claims, feature="shard")
