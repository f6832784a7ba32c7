"""The shadow feature's claims (see controller.core.claims).

A shadow slot (``shadow-slot``) takes its interface: no persona, shard
resource, personality or other slot may hold it, and it may hold none of
theirs.  An appliance's production interfaces are not claimed (a personality
may run on them); the appliance's own check refuses one another feature
holds exclusively (``api.ApplianceKind.check``).
"""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim
from controller.features.shadow.document import SLOT


def slot_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    return [Claim.interface(body["interface_id"], "body.interface_id",
                            f"is shadow slot {id!r}")]


claims.declare(SLOT, slot_claims, feature="shadow")
