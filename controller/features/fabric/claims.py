"""The fabric's claims: each subnet takes its CIDR (see controller.core.claims)."""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim

SUBNET = "subnet"


def subnet_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    """A subnet's range is the fabric's: no other feature's range may overlap it."""
    cidr = body.get("cidr")
    return [Claim.range(cidr, "body.cidr", f"is subnet {id!r}")] if cidr else []


claims.declare(SUBNET, subnet_claims, feature="fabric")
