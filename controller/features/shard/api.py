"""Shard pools over REST: ``/v1/shard-pools``, served by the CRUD layer, with the
pool's resources (``resources_api``), shards and rotations (``rotations_api``)."""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from fastapi import APIRouter

from controller.api.crud import Change, DocumentKind, crud_router
from controller.api.problems import Problem, field_error
from controller.core.documents import slugify
from controller.features.shard import resources_api, rotations_api, services_api, stats_api
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
        "delete": "409 while resources are enrolled in it (release them first).",
    }

    def derive_id(self, document: Any) -> str:
        return slugify(document.name)

    def check(self, change: Change, document: Any) -> None:
        clashes = _other_pools_overlapping(change, document)
        if clashes:
            raise Problem(409, title="Addresses in use", detail=clashes[0][1],
                          errors=[field_error(f, r) for f, r in clashes],
                          extra={"kind": KIND})

    def check_delete(self, change: Change) -> None:
        enrolled = [d.id for d in resources_api.resources_of(change.store, change.id or "")]
        if enrolled:
            shown = ", ".join(enrolled[:5]) + (", ..." if len(enrolled) > 5 else "")
            raise Problem(409, title="Resources enrolled",
                          detail=f"shard pool {change.id!r} still has {len(enrolled)} enrolled "
                                 f"resource(s) ({shown}); release them first",
                          errors=[field_error("path.id", "has enrolled resources")],
                          extra={"kind": KIND, "resources": enrolled})


router = APIRouter()
router.include_router(crud_router(ShardPoolKind()))
router.include_router(resources_api.router)
router.include_router(rotations_api.router)
router.include_router(services_api.router)
router.include_router(stats_api.router)
