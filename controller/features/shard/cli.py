"""hubctl command group of the shard feature: ``shard-pool`` (create -f FILE, list, get, delete)."""
from __future__ import annotations

from typing import Any

from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group, fields_of, row_tables

HEADERS = ["ID", "NAME", "POOL", "PREFIX", "EXTERNAL", "LIFESPAN", "REVISION"]


def _row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    life = f.get("lifespan") or {}
    return [doc["id"], f.get("name"), f.get("pool"), f.get("shard_prefix"),
            f.get("external_range"), f"{life.get('min')}-{life.get('max')} s", doc["revision"]]


pool_table, pools_table = row_tables(HEADERS, _row, "(no shard pools)")
POOLS = Collection("shard-pool", "/v1/shard-pools", one=pool_table, many=pools_table)


def register(sub: Subparsers, common: Common) -> None:
    add_document_group(sub, common, POOLS,
                       "pools of ephemeral shards (create, list, get, delete)")
