"""hubctl command groups of the shard feature.

* ``shard-pool`` (create -f FILE, list, get, delete): the pool documents;
* ``shard``: a pool's resources and shards (``cli_shard``) and its rotation
  rounds (``cli_rotate``). Further verbs (``shard routes``) join the group by
  adding their adder to `SHARD_VERBS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group, fields_of, row_tables
from controller.features.shard import cli_rotate, cli_services, cli_shard, cli_stats

HEADERS = ["ID", "NAME", "POOL", "PREFIX", "EXTERNAL", "LIFESPAN", "REVISION"]


def _row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    life = f.get("lifespan") or {}
    return [doc["id"], f.get("name"), f.get("pool"), f.get("shard_prefix"),
            f.get("external_range"), f"{life.get('min')}-{life.get('max')} s", doc["revision"]]


pool_table, pools_table = row_tables(HEADERS, _row, "(no shard pools)")
POOLS = Collection("shard-pool", "/v1/shard-pools", one=pool_table, many=pools_table)

SHARD_VERBS: tuple[Callable[[Subparsers, Common], None], ...] = (
    cli_shard.add_verbs,
    cli_rotate.add_verbs,
    cli_services.add_verbs,
    cli_stats.add_verbs,
)
"""Who adds verbs to ``hubctl shard``, in help order (services and routes go here)."""


def register(sub: Subparsers, common: Common) -> None:
    add_document_group(sub, common, POOLS,
                       "pools of ephemeral shards (create, list, get, delete)")
    verbs = common.group(sub, "shard", "a shard pool's resources, shards and rotations")
    for add in SHARD_VERBS:
        add(verbs, common)
