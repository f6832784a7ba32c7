"""The claims of a shard service (``shard-service``; see controller.core.claims).

Its external address is taken in the same space as the resources' own
(``shard.external_ip``): no resource or other service may hold it.  Its
index (``shard.service_index``) numbers its conntrack zone.
"""
from __future__ import annotations

from typing import Any

from controller.core import claims
from controller.core.claims import Claim
from controller.features.shard.claims import EXTERNAL_IP
from controller.features.shard.services import SERVICE

SERVICE_INDEX = "shard.service_index"


def service_claims(id: str, body: dict[str, Any]) -> list[Claim]:
    return [Claim.unique(EXTERNAL_IP, body["external_ip"], "body.external_ip",
                         f"is the external address of shard service {id!r}"),
            Claim.unique(SERVICE_INDEX, int(body["index"]), "body.index",
                         f"is the index of shard service {id!r}")]


claims.declare(SERVICE, service_claims, feature="shard")
