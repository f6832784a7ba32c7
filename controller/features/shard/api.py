"""Shard pools over REST: ``/v1/shard-pools``, served by the CRUD layer."""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from fastapi import APIRouter

from controller.api.crud import Change, DocumentKind, crud_router
from controller.api.problems import Problem, field_error
from controller.core.documents import slugify
from controller.features.shard.document import KIND, ShardPool


def _other_pools_overlapping(change: Change, pool: ShardPool) -> list[tuple[str, str]]:
    """Pools of the same feature may not overlap either (claims only keep features apart)."""
    clashes = []
    for doc in change.store.list(KIND):
        if doc.id == change.id:
            continue
        theirs = [IPv4Network(doc.body[f]) for f in ("pool", "external_range")]
        for field in ("pool", "external_range"):
            mine = getattr(pool, field)
            if any(mine.overlaps(net) for net in theirs):
                clashes.append((f"body.{field}", f"{mine} overlaps shard pool {doc.id!r}"))
    return clashes


class ShardPoolKind(DocumentKind):
    kind = KIND
    path = "/v1/shard-pools"
    model = ShardPool
    tag = "shard pools"
    plural = "shard-pools"
    descriptions = {
        "create": "The id is the body's `id`, or made from the name. 409 when the pool or "
                  "the external range overlaps a subnet, a persona range or NAT block, or "
                  "another pool.",
    }

    def derive_id(self, document: Any) -> str:
        return slugify(document.name)

    def check(self, change: Change, document: Any) -> None:
        clashes = _other_pools_overlapping(change, document)
        if clashes:
            raise Problem(409, title="Addresses in use", detail=clashes[0][1],
                          errors=[field_error(f, r) for f, r in clashes],
                          extra={"kind": KIND})


router: APIRouter = crud_router(ShardPoolKind())
