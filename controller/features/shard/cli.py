"""hubctl command group of the shard feature: ``shard-pool`` (create -f FILE, list, get, delete)."""
from __future__ import annotations

from typing import Any

from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group, fields_of
from controller.cli.output import format_table, format_time

HEADERS = ["ID", "NAME", "POOL", "PREFIX", "EXTERNAL", "LIFESPAN", "REVISION"]


def _row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    life = f.get("lifespan") or {}
    return [doc["id"], f.get("name"), f.get("pool"), f.get("shard_prefix"),
            f.get("external_range"), f"{life.get('min')}-{life.get('max')} s", doc["revision"]]


def pools_table(docs: list[dict[str, Any]]) -> str:
    return format_table(HEADERS, map(_row, docs)) if docs else "(no shard pools)"


def pool_table(doc: dict[str, Any]) -> str:
    return f"{format_table(HEADERS, [_row(doc)])}\n\nupdated: {format_time(doc['updated_at'])}"


POOLS = Collection("shard-pool", "/v1/shard-pools", one=pool_table, many=pools_table)


def register(sub: Subparsers, common: Common) -> None:
    add_document_group(sub, common, POOLS,
                       "pools of ephemeral shards (create, list, get, delete)")
